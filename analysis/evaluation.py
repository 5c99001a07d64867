"""Scoring personas against humans, on the whole sample and per demographic subgroup.

:func:`evaluate` is the entry point scenarios call once the personas have
answered: it pairs every human with a persona (a :class:`~analysis.matching.MatchResult`,
an index array, or row ``h`` = human ``h`` for per-human baselines such as QA /
Bio / Portray) and computes, for the whole sample and for each subgroup of the
requested traits, the metrics of :mod:`analysis.distributions` and
:mod:`analysis.correlations` next to the human lower bound of
:mod:`analysis.lower_bound`.  The parts: :mod:`analysis.persona_answers` (the
input), :mod:`analysis.scoring`, :mod:`analysis.subgroups`,
:mod:`analysis.evaluation_results` (the output).

Choices (following the Anthology paper unless noted):

* **WD** per question compares the humans' survey-weighted answer distribution
  with the distribution over the matched personas.  The persona distribution is
  the average of the matched personas' option distributions, each weighted by
  its human's survey weight, so both sides estimate the same weighted
  population; a persona matched to several humans (greedy) counts once per
  human.  Every matched persona counts, also where its human skipped the
  question (the persona stands in for an eligible respondent).  With sampled
  answers only, their weighted histogram is used.
* **Frobenius / alpha** use individual answers, like the paper: each matched
  persona's sampled answer, mapped to the question's ordinal positions; the
  persona rows carry their human's survey weight.  If only option
  distributions are given, one answer per persona and question is drawn from
  them (seeded) -- the paper samples one answer at temperature 1.
* **CIs**: percentile bootstrap over humans, each resampled with its matched
  persona (``n_boot`` replicates).
* **Subgroups**: humans whose trait is in the group, with their matched
  personas, scored the same way, with the subgroup's own split-half lower
  bound.  Groups smaller than ``min_group_size`` (20) are skipped, with a note.
* **Scope**: every evaluation carries, in words, the human data it used --
  filters, weights, sample, subgroup threshold -- and the study's warnings, for
  the report header (:attr:`Evaluation.scope`).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from analysis.evaluation_results import Evaluation, GroupResult
from analysis.lower_bound import LowerBound, human_lower_bound
from analysis.matching import MatchResult
from analysis.persona_answers import PersonaAnswers, check_answers, draw_answers
from analysis.scoring import aggregate_distributions, align_rows, bootstrap_scores, question_rows, scale_alpha, score, undefined_notes
from analysis.subgroups import persona_group_codes, resolve_groups


def evaluate(
    study,
    persona_answers,
    pairs: MatchResult | np.ndarray | Sequence[int] | None = None,
    *,
    condition: str = "personas",
    matching: str | None = None,
    subgroups: Sequence[str] | Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    lower_bound: LowerBound | None | bool = True,
    n_splits: int = 100,
    n_boot: int = 1000,
    seed: int = 0,
    normalize: bool = True,
    min_group_size: int = 20,
    persona_demographics: Mapping[str, np.ndarray] | None = None,
) -> Evaluation:
    """Score one persona condition against a loaded :class:`~analysis.studies.HumanStudy`.

    ``persona_answers``: :class:`PersonaAnswers`, ``[V, Q, K]`` option
    distributions, or ``[V, Q]`` sampled option indices (questions in
    ``study.questions`` order).  ``pairs``: a :class:`MatchResult`, an ``[H]``
    array of persona rows per human, or ``None`` when row ``h`` belongs to human
    ``h`` (per-human baselines).  ``subgroups``: trait names (one group per
    option), or ``{trait: {group label: [option labels]}}`` to merge options
    (e.g. ``{"age": {"18-49": ["18-29", "30-49"], ...}}``); default: race, age
    and party when the study has them; ``[]`` for none.  ``lower_bound``:
    ``True`` computes it (``n_splits`` splits), a :class:`LowerBound` reuses one
    (it is the same for every condition of a study), ``False``/``None`` skips.
    ``n_boot=0`` skips the bootstrap CIs.  ``normalize``: WD on [0, 1]
    positions (default) or raw positions.

    For aggregate (count-only) human data only WD is defined: personas are
    compared as a whole (equal weights), and per subgroup when
    ``persona_demographics`` (trait -> ``[V]`` option index) is given.
    """
    answers = check_answers(study, PersonaAnswers.coerce(persona_answers))
    rng = np.random.default_rng(seed)
    if answers.sampled is None:
        answers = PersonaAnswers(probs=answers.probs, sampled=draw_answers(answers.probs, rng))
        drew = ("persona sampled answers drawn from their option distributions (seeded)",)
    else:
        drew = ()
    match_stats = None
    if isinstance(pairs, MatchResult):
        matching = matching or pairs.method
        match_stats = pairs.stats

    if not study.is_individual:
        lb = lower_bound if isinstance(lower_bound, LowerBound) else None
        if lower_bound is True and study.counts_kind == "counts":
            lb = human_lower_bound(study, n_splits=n_splits, seed=seed, normalize=normalize)
        ev = _evaluate_aggregate(study, answers, condition, matching, subgroups, normalize, persona_demographics, lb)
        return replace(ev, scope=_scope(study, subgroups if persona_demographics is not None else [], None), warnings=tuple(study.warnings))

    if pairs is None:
        if answers.n_rows != study.n:
            raise ValueError(f"without pairs, persona row h must be human h: got {answers.n_rows} persona rows for {study.n} humans")
        rows = np.arange(study.n)
    else:
        rows = np.asarray(pairs.persona_index if isinstance(pairs, MatchResult) else pairs, dtype=np.int64)
        if rows.shape != (study.n,):
            raise ValueError(f"pairs must give one persona row per human ({study.n}), got shape {rows.shape}")
        if (rows < 0).any() or (rows >= answers.n_rows).any():
            raise ValueError(f"pairs refer to persona rows outside 0..{answers.n_rows - 1}")

    aligned = align_rows(study, answers, rows)
    scored = score(study, aligned, normalize)
    ci = bootstrap_scores(study, aligned, scored, normalize, n_boot, seed) if n_boot > 0 else {}

    if lower_bound is True:
        lb = human_lower_bound(study, n_splits=n_splits, seed=seed, normalize=normalize)
    elif isinstance(lower_bound, LowerBound):
        if lower_bound.normalize != normalize:
            raise ValueError("the given lower bound uses a different WD scale (normalize) than this evaluation")
        lb = lower_bound
    else:
        lb = None

    groups, notes = [], list(drew)
    for trait, label, options in resolve_groups(study, subgroups):
        mask = study.group_mask(trait, options)
        n = int(mask.sum())
        if n < min_group_size:
            notes.append(f"subgroup {trait}={label} skipped: {n} humans < min_group_size {min_group_size}")
            continue
        part = study.subset(mask)
        part_aligned = aligned.rows(np.flatnonzero(mask))
        g = score(part, part_aligned, normalize)
        g_lb = human_lower_bound(part, n_splits=n_splits, seed=seed, normalize=normalize) if lb is not None else None
        groups.append(
            GroupResult(
                trait, label, n, float(g["wd"]), g["fro"], g["alpha_human"], g["alpha_persona"], g_lb, question_rows(part, part_aligned, g)
            )
        )

    return Evaluation(
        study=study.name,
        condition=condition,
        matching=matching,
        normalize=normalize,
        n_humans=study.n,
        n_personas=int(np.unique(rows).size),
        questions=question_rows(study, aligned, scored),
        wd=float(scored["wd"]),
        fro=scored["fro"],
        alpha_human=scored["alpha_human"],
        alpha_persona=scored["alpha_persona"],
        corr_human=scored["corr_human"],
        corr_persona=scored["corr_persona"],
        ci=ci,
        lower_bound=lb,
        subgroups=groups,
        match_stats=match_stats,
        notes=tuple(notes) + undefined_notes(study, scored),
        scale_alpha=scale_alpha(study, aligned),
        weighted=study.weight_column is not None,
        scope=_scope(study, subgroups, min_group_size),
        warnings=tuple(study.warnings),
    )


def _scope(study, subgroups, min_group_size: int | None) -> tuple[str, ...]:
    """The human data an evaluation used, in words: source, filters, weights, sample, subgroups."""
    lines = [f"human data: {study.source or study.name}" + (f" ({study.label})" if study.label and study.label != study.source else "")]
    lines.append("filters: " + ("; ".join(study.filters) if study.filters else "none"))
    if study.is_individual:
        lines.append(f"weights: survey-weight column '{study.weight_column}'" if study.weight_column else "weights: none (each respondent counts once)")
        loaded = study.n_loaded if study.n_loaded >= 0 else study.n
        if study.sample_note:
            lines.append(f"respondents: {study.n}, {study.sample_note}")
        elif loaded != study.n:
            lines.append(f"respondents: {study.n} of the {loaded} left after filters (the scenario's selection)")
        else:
            lines.append(f"respondents: all {study.n} left after filters")
    else:
        lines.append(f"respondents: published {study.counts_kind or 'counts'} (no individual respondents; no weights or sample apply)")
    try:
        traits = sorted({t for t, _, _ in resolve_groups(study, subgroups)}, key=str)
    except KeyError:
        traits = []
    if not traits:
        lines.append("subgroups: none")
    elif study.is_individual:
        lines.append(f"subgroups: {', '.join(traits)}; groups with fewer than {min_group_size} respondents are skipped (min_group_size)")
    else:
        lines.append(f"subgroups: {', '.join(traits)}; groups without rows in the table or without personas are skipped")
    return tuple(lines)


def _evaluate_aggregate(study, answers, condition, matching, subgroups, normalize, persona_demographics, lb) -> Evaluation:
    all_rows = np.arange(answers.n_rows)
    wd, questions = aggregate_distributions(study, answers, all_rows, normalize)
    kind = {"counts": "answer counts", "weighted": "weighted answer counts", "shares": "answer shares"}.get(study.counts_kind, "answer counts")
    notes = [
        f"aggregate human data ({kind}): only WD is defined; the persona side is the mean distribution of all "
        "personas (equal weights, no matching); Frobenius and alpha need individual answers"
    ]
    if lb is not None:
        notes.append(f"human lower bound: WD only, splitting each question's counts at random ({lb.n_splits} hypergeometric splits)")
    elif study.counts_kind != "counts":
        notes.append("no human lower bound: splitting needs whole (unweighted) counts")
    groups = []
    if persona_demographics is not None:
        for trait, label, options in resolve_groups(study, subgroups):
            codes = persona_group_codes(study, persona_demographics, trait)
            rows = np.flatnonzero(np.isin(codes, study.option_codes(trait, options)))
            try:
                part = study.subgroup(trait, options)
            except KeyError as e:
                notes.append(f"subgroup {trait}={label} skipped: {e}")
                continue
            if rows.size == 0:
                notes.append(f"subgroup {trait}={label} skipped: no persona in the group")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                g_wd, g_questions = aggregate_distributions(part, answers, rows, normalize)
            groups.append(GroupResult(trait, label, part.n_respondents, g_wd, float("nan"), float("nan"), float("nan"), None, g_questions))
    nan = float("nan")
    return Evaluation(
        study=study.name,
        condition=condition,
        matching=matching,
        normalize=normalize,
        n_humans=study.n_respondents,
        n_personas=answers.n_rows,
        questions=questions,
        wd=wd,
        fro=nan,
        alpha_human=nan,
        alpha_persona=nan,
        corr_human=None,
        corr_persona=None,
        ci={},
        lower_bound=lb,
        subgroups=groups,
        notes=tuple(notes),
        human_data="aggregate",
    )
