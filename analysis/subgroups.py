"""Scoring personas against humans, on the whole sample and per demographic subgroup.

:func:`evaluate` is the entry point scenarios call once the personas have
answered: it pairs every human with a persona (a :class:`~analysis.matching.MatchResult`,
an index array, or row ``h`` = human ``h`` for per-human baselines such as QA /
Bio / Portray) and computes, for the whole sample and for each subgroup of the
requested traits, the metrics of :mod:`analysis.metrics` next to the human
lower bound of :mod:`analysis.lower_bound`.

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
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.lower_bound import LowerBound, human_lower_bound
from analysis.matching import MatchResult, WeightStats
from analysis.metrics import (
    ConfidenceInterval,
    ItemProducts,
    OptionIndicators,
    frobenius_distance,
    option_positions,
    pairwise_moments,
    wasserstein,
    wasserstein_many,
    weighted_distributions,
)
from analysis.studies import UnknownName

DEFAULT_SUBGROUP_TRAITS = ("race", "age", "party")


@dataclass
class PersonaAnswers:
    """What the personas answered, one row per persona, questions in the study's order.

    ``probs``: ``[N, Q, K_max]`` option distributions (question ``q`` uses its
    first ``K_q`` entries; a row without mass means no answer).
    ``sampled``: ``[N, Q]`` option index of one sampled answer, ``-1`` = none.
    Give either or both.
    """

    probs: np.ndarray | None = None
    sampled: np.ndarray | None = None

    @classmethod
    def coerce(cls, answers) -> PersonaAnswers:
        """Accept a :class:`PersonaAnswers`, a ``[N, Q, K]`` distribution array or a ``[N, Q]`` index array."""
        if isinstance(answers, PersonaAnswers):
            return answers
        a = np.asarray(answers)
        if a.ndim == 3:
            return cls(probs=a.astype(float))
        if a.ndim == 2:
            return cls(sampled=np.where(np.isfinite(a.astype(float)), a, -1).astype(np.int64))
        raise ValueError(
            f"persona answers must be [personas, questions, options] distributions or [personas, questions] indices, got shape {a.shape}"
        )

    @property
    def n_rows(self) -> int:
        return (self.probs if self.probs is not None else self.sampled).shape[0]


@dataclass(frozen=True)
class QuestionResult:
    id: str
    text: str
    options: tuple[str, ...]
    wd: float
    human_dist: np.ndarray
    persona_dist: np.ndarray
    n_humans: int  # humans who answered


@dataclass(frozen=True)
class GroupResult:
    """Metrics for one subgroup of humans (``trait`` = ``group``) and their matched personas."""

    trait: str
    group: str
    n_humans: int
    wd: float
    fro: float
    alpha_human: float
    alpha_persona: float
    lower_bound: LowerBound | None
    questions: list[QuestionResult] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate` computes for one persona condition."""

    study: str
    condition: str
    matching: str | None
    normalize: bool
    n_humans: int
    n_personas: int  # distinct personas used
    questions: list[QuestionResult]
    wd: float
    fro: float
    alpha_human: float
    alpha_persona: float
    corr_human: np.ndarray | None
    corr_persona: np.ndarray | None
    ci: dict[str, ConfidenceInterval]
    lower_bound: LowerBound | None
    subgroups: list[GroupResult]
    match_stats: WeightStats | None = None
    notes: tuple[str, ...] = ()
    # Per scale of the study (``scales:``): name -> (human alpha, persona alpha).
    scale_alpha: dict[str, tuple[float, float]] = field(default_factory=dict)
    human_data: str = "respondents"  # or "aggregate" (published counts: WD only)
    weighted: bool = False  # the humans carry survey weights
    # What was applied to the human data, one line each (the report header), and the
    # study's warnings (repeated in the report, never only on the console).
    scope: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.condition} ({self.matching})" if self.matching else self.condition

    def summary(self) -> dict[str, float | str | None]:
        """The headline numbers as a flat dict (for logs and tables)."""
        out: dict[str, float | str | None] = {
            "study": self.study,
            "condition": self.condition,
            "matching": self.matching,
            "n_humans": self.n_humans,
            "wd": self.wd,
            "fro": self.fro,
            "alpha_human": self.alpha_human,
            "alpha_persona": self.alpha_persona,
        }
        for k, ci in self.ci.items():
            out[f"{k}_low"], out[f"{k}_high"] = ci.low, ci.high
        if self.lower_bound is not None:
            out.update(lb_wd=self.lower_bound.wd, lb_fro=self.lower_bound.fro, lb_alpha=self.lower_bound.alpha)
        return out


# ---------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------


def _check_answers(study, answers: PersonaAnswers) -> PersonaAnswers:
    """Validate shapes against the study and renormalise each question's option distribution."""
    nq = len(study.questions)
    probs, sampled = answers.probs, answers.sampled
    if probs is None and sampled is None:
        raise ValueError("persona answers: give option distributions (probs) or sampled answers")
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        kmax = max(q.n_options for q in study.questions)
        if probs.ndim != 3 or probs.shape[1] != nq or probs.shape[2] < kmax:
            raise ValueError(f"persona probs must have shape [personas, {nq} questions, >= {kmax} options], got {probs.shape}")
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise ValueError("persona probs must be finite and >= 0")
        clean = np.zeros_like(probs)
        for j, q in enumerate(study.questions):
            extra = probs[:, j, q.n_options :].sum(axis=1)
            if (extra > 1e-6).any():
                raise ValueError(f"persona probs: question '{q.id}' has {q.n_options} options but mass beyond them")
            block = probs[:, j, : q.n_options]
            total = block.sum(axis=1, keepdims=True)
            clean[:, j, : q.n_options] = np.divide(block, total, out=np.zeros_like(block), where=total > 0)
        probs = clean
    if sampled is not None:
        sampled = np.asarray(sampled, dtype=np.int64)
        if sampled.ndim != 2 or sampled.shape[1] != nq:
            raise ValueError(f"persona sampled answers must have shape [personas, {nq} questions], got {sampled.shape}")
        if probs is not None and sampled.shape[0] != probs.shape[0]:
            raise ValueError(f"persona probs have {probs.shape[0]} rows but sampled answers {sampled.shape[0]}")
        for j, q in enumerate(study.questions):
            if (sampled[:, j] >= q.n_options).any() or (sampled[:, j] < -1).any():
                raise ValueError(f"persona sampled answers: question '{q.id}' has an index outside -1..{q.n_options - 1}")
    return PersonaAnswers(probs=probs, sampled=sampled)


def _draw_answers(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sampled option per persona and question (inverse CDF); -1 where there is no mass."""
    cdf = np.cumsum(probs, axis=2)
    u = rng.random(probs.shape[:2])[..., None] * cdf[..., -1:]
    drawn = np.minimum((cdf <= u).sum(axis=2), probs.shape[2] - 1)
    return np.where(cdf[..., -1] > 0, drawn, -1)


def _positions(study, normalize: bool) -> list[np.ndarray]:
    return [option_positions(q.n_options, q.positions, normalize=normalize) for q in study.questions]


def _index_to_positions(idx: np.ndarray, positions: list[np.ndarray]) -> np.ndarray:
    out = np.full(idx.shape, np.nan)
    for j, x in enumerate(positions):
        col = idx[:, j]
        ok = np.isfinite(col) & (col >= 0)
        out[ok, j] = x[col[ok].astype(np.int64)]
    return out


@dataclass
class _Aligned:
    """Humans and their matched personas, row for row, prepared for repeated scoring.

    Answers are kept as :class:`~analysis.metrics.OptionIndicators` (for the
    distributions) and :class:`~analysis.metrics.ItemProducts` (for
    correlations and alpha): built once, then every subgroup is a row
    selection and every bootstrap replicate a vector of frequency counts.
    """

    human: OptionIndicators | None
    human_items: ItemProducts | None
    weights: np.ndarray  # [H]
    persona_probs: np.ndarray | None  # [H, Q, K_max]
    persona: OptionIndicators  # sampled answers
    persona_items: ItemProducts | None

    def rows(self, idx: np.ndarray) -> _Aligned:
        return _Aligned(
            None if self.human is None else self.human.take(idx),
            None if self.human_items is None else self.human_items.take(idx),
            self.weights[idx],
            None if self.persona_probs is None else self.persona_probs[idx],
            self.persona.take(idx),
            None if self.persona_items is None else self.persona_items.take(idx),
        )

    def answered(self) -> np.ndarray:
        """Humans who answered each question."""
        ind = self.human
        return ind.onehot.reshape(len(ind), ind.n_options.size, ind.kmax).sum(axis=(0, 2)).astype(int)


def _align(study, answers: PersonaAnswers, rows: np.ndarray, individual: bool = True) -> _Aligned:
    """Persona rows ``rows[h]`` aligned with human ``h`` (or, for aggregate data, just those personas)."""
    n_options = [q.n_options for q in study.questions]
    p_idx = answers.sampled[rows].astype(float)
    p_idx[p_idx < 0] = np.nan
    return _Aligned(
        human=OptionIndicators(study.answer_matrix(), n_options) if individual else None,
        human_items=ItemProducts(study.position_matrix()) if individual else None,
        weights=study.weights if individual else np.ones(rows.size),
        persona_probs=None if answers.probs is None else answers.probs[rows],
        persona=OptionIndicators(p_idx, n_options),
        persona_items=ItemProducts(_index_to_positions(p_idx, _positions(study, normalize=False))) if individual else None,
    )


def _persona_distributions(al: _Aligned, counts: np.ndarray | None = None) -> np.ndarray:
    """``[..., Q, K_max]``: survey-weighted mean of the matched personas' option distributions."""
    if al.persona_probs is None:
        return weighted_distributions(al.persona, weights=al.weights, counts=counts)
    h, nq, kmax = al.persona_probs.shape
    fw = al.weights if counts is None else counts * al.weights
    has = (al.persona_probs.sum(axis=2) > 0).astype(float)  # [H, Q]: the persona answered
    total = fw @ has  # [..., Q]
    mixed = (fw @ al.persona_probs.reshape(h, nq * kmax)).reshape(*total.shape, kmax)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[..., None] > 0, mixed / total[..., None], np.nan)


def _score(study, al: _Aligned, normalize: bool, counts: np.ndarray | None = None) -> dict:
    """WD per question, correlations and the headline metrics for aligned humans/personas.

    With ``counts`` (``[B, H]`` frequency counts, e.g. bootstrap resamples)
    every entry gets a leading batch dimension.
    """
    qs = study.questions
    n_options = [q.n_options for q in qs]
    human = weighted_distributions(al.human, weights=al.weights, counts=counts)
    persona = _persona_distributions(al, counts)
    wds = wasserstein_many(human, persona, [q.positions for q in qs], n_options, normalize=normalize)
    mh = pairwise_moments(al.human_items, al.weights, counts)
    mp = pairwise_moments(al.persona_items, al.weights, counts)
    corr_h, corr_p = mh.corr(), mp.corr()
    scales = study.scale_columns() or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN mean, on purpose
        wd = np.nanmean(wds, axis=-1)
    return {
        "wd": wd,
        "fro": frobenius_distance(corr_h, corr_p),
        "alpha_human": mh.alpha(scales),
        "alpha_persona": mp.alpha(scales),
        "per_question": wds,
        "human_dist": human,
        "persona_dist": persona,
        "corr_human": corr_h,
        "corr_persona": corr_p,
    }


def _question_rows(study, al: _Aligned, scored: dict) -> list[QuestionResult]:
    answered = al.answered()
    rows = []
    for j, q in enumerate(study.questions):
        k = q.n_options
        wd, human, persona = float(scored["per_question"][j]), scored["human_dist"][j, :k], scored["persona_dist"][j, :k]
        rows.append(QuestionResult(q.id, q.text, q.options, wd, human, persona, int(answered[j])))
    return rows


HEADLINE = ("wd", "fro", "alpha_human", "alpha_persona")


def _bootstrap(
    study, al: _Aligned, point: dict, normalize: bool, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, ConfidenceInterval]:
    """Percentile CIs of the headline metrics, resampling humans with their matched personas.

    Resample ``b`` draws the same row indices as :func:`analysis.metrics.bootstrap_cis`
    with this seed (``rng.integers(0, H, H)`` per replicate); as frequency counts
    the replicates are scored in batches.
    """
    n = al.weights.size
    rng = np.random.default_rng(seed)
    block = max(1, int(4e6 // n))  # replicates per batch: bounds the [replicates, H] count matrix
    values = {k: [] for k in HEADLINE}
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        counts = np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(size)]).astype(float)
        scored = _score(study, al, normalize, counts)
        for k in HEADLINE:
            values[k].append(np.asarray(scored[k], dtype=float))
    tail = (1.0 - level) / 2.0 * 100.0
    out = {}
    for k in HEADLINE:
        v = np.concatenate(values[k])
        v = v[np.isfinite(v)]
        low, high = np.percentile(v, [tail, 100.0 - tail]) if v.size else (np.nan, np.nan)
        out[k] = ConfidenceInterval(float(point[k]), float(low), float(high), level, n_boot)
    return out


def resolve_groups(study, subgroups) -> list[tuple[str, str, list[str]]]:
    """(trait, group label, option labels) for each requested subgroup."""
    if subgroups is None:
        subgroups = [t for t in DEFAULT_SUBGROUP_TRAITS if any(x.name == t for x in study.traits)]
    if isinstance(subgroups, str):
        subgroups = [subgroups]
    out = []
    items = subgroups.items() if isinstance(subgroups, Mapping) else ((t, None) for t in subgroups)
    for trait, groups in items:
        t = study.trait(trait)
        if groups is None:
            out += [(trait, o, [o]) for o in t.options]
        else:
            for label, options in groups.items():
                opts = [options] if isinstance(options, str) else list(options)
                bad = [o for o in opts if o not in t.options]
                if bad:
                    raise UnknownName(f"subgroup '{label}': trait '{trait}' has no option {bad[0]!r} (options: {list(t.options)})")
                out.append((trait, label, opts))
    return out


def _aggregate_distributions(study_part, answers: PersonaAnswers, rows: np.ndarray, normalize: bool):
    """WD rows for aggregate (count-only) human data against the personas ``rows`` (equal weights)."""
    persona = _persona_distributions(_align(study_part, answers, rows, individual=False))
    questions, wds = [], []
    for j, q in enumerate(study_part.questions):
        h = study_part.distribution(q.id)
        v = persona[j, : q.n_options]
        d = wasserstein(h, v, q.positions, normalize=normalize)
        wds.append(d)
        questions.append(QuestionResult(q.id, q.text, q.options, d, h, v, study_part.answered(q.id)))
    finite = [x for x in wds if np.isfinite(x)]
    return (float(np.mean(finite)) if finite else float("nan")), questions


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


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
    answers = _check_answers(study, PersonaAnswers.coerce(persona_answers))
    rng = np.random.default_rng(seed)
    if answers.sampled is None:
        answers = PersonaAnswers(probs=answers.probs, sampled=_draw_answers(answers.probs, rng))
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

    aligned = _align(study, answers, rows)
    scored = _score(study, aligned, normalize)
    ci = _bootstrap(study, aligned, scored, normalize, n_boot, seed) if n_boot > 0 else {}

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
        g = _score(part, part_aligned, normalize)
        g_lb = human_lower_bound(part, n_splits=n_splits, seed=seed, normalize=normalize) if lb is not None else None
        groups.append(
            GroupResult(
                trait, label, n, float(g["wd"]), g["fro"], g["alpha_human"], g["alpha_persona"], g_lb, _question_rows(part, part_aligned, g)
            )
        )

    return Evaluation(
        study=study.name,
        condition=condition,
        matching=matching,
        normalize=normalize,
        n_humans=study.n,
        n_personas=int(np.unique(rows).size),
        questions=_question_rows(study, aligned, scored),
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
        notes=tuple(notes) + _undefined_notes(study, scored),
        scale_alpha=_scale_alpha(study, aligned),
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


def _scale_alpha(study, al: _Aligned) -> dict[str, tuple[float, float]]:
    scales = [s for s in study.scales if all(i in study.question_ids for i in s.items)]
    if not scales:
        return {}
    cols = study.scale_columns()
    human = pairwise_moments(al.human_items, al.weights).scale_alphas(cols)
    persona = pairwise_moments(al.persona_items, al.weights).scale_alphas(cols)
    return {s.name: (float(h), float(p)) for s, h, p in zip(scales, human, persona, strict=True)}


def _undefined_notes(study, scored: dict) -> tuple[str, ...]:
    """Say why the Frobenius distance is undefined, when it is (never a silent 0 or blank)."""
    if np.isfinite(scored["fro"]):
        return ()
    if len(study.questions) < 2:
        return ("Frobenius undefined: one question (it compares the correlations between questions)",)
    out = []
    for side, corr in (("humans", scored["corr_human"]), ("personas", scored["corr_persona"])):
        bad = [q.id for j, q in enumerate(study.questions) if not np.isfinite(corr[j, j])]
        if bad:
            out.append(f"Frobenius undefined: the {side} gave no varied answers to {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    return tuple(out) or ("Frobenius undefined: some question pairs have fewer than two respondents in common",)


def _persona_group_codes(study, persona_demographics: Mapping[str, np.ndarray], trait: str) -> np.ndarray:
    """``[V]`` option index of ``trait`` per persona (crossed traits: mixed radix), -1 if unknown."""
    parts = trait.split(" x ")
    missing = [p for p in parts if p not in persona_demographics]
    if missing:
        raise UnknownName(f"persona demographics: no trait '{missing[0]}' (have: {', '.join(persona_demographics)})")
    code, bad = 0, False
    for p in parts:
        c = np.asarray(persona_demographics[p], dtype=np.int64)
        bad = bad | (c < 0)
        code = code * study.trait(p).n_options + np.maximum(c, 0)
    return np.where(bad, -1, code)


def _evaluate_aggregate(study, answers, condition, matching, subgroups, normalize, persona_demographics, lb) -> Evaluation:
    all_rows = np.arange(answers.n_rows)
    wd, questions = _aggregate_distributions(study, answers, all_rows, normalize)
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
            codes = _persona_group_codes(study, persona_demographics, trait)
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
                g_wd, g_questions = _aggregate_distributions(part, answers, rows, normalize)
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
