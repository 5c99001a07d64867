"""Scoring humans against their matched personas, row for row: answer
distributions, WD per question, correlations, Frobenius, alpha (whole sample
and per scale) and their bootstrap CIs -- the choices are listed in
:mod:`analysis.evaluation`, which calls these.

Humans and personas are aligned once (:class:`Aligned`); a subgroup is then a
row selection and a bootstrap replicate a vector of frequency counts.
Aggregate (count-only) human data get WD rows only (:func:`aggregate_distributions`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from analysis.bootstrap import ConfidenceInterval
from analysis.correlations import ItemProducts, frobenius_distance, pairwise_moments
from analysis.distributions import OptionIndicators, option_positions, wasserstein, wasserstein_many, weighted_distributions
from analysis.evaluation_results import QuestionResult
from analysis.persona_answers import PersonaAnswers


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
class Aligned:
    """Humans and their matched personas, row for row, prepared for repeated scoring.

    Answers are kept as :class:`~analysis.distributions.OptionIndicators` (for the
    distributions) and :class:`~analysis.correlations.ItemProducts` (for
    correlations and alpha): built once, then every subgroup is a row
    selection and every bootstrap replicate a vector of frequency counts.
    """

    human: OptionIndicators | None
    human_items: ItemProducts | None
    weights: np.ndarray  # [H]
    persona_probs: np.ndarray | None  # [H, Q, K_max]
    persona: OptionIndicators  # sampled answers
    persona_items: ItemProducts | None

    def rows(self, idx: np.ndarray) -> Aligned:
        return Aligned(
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


def align_rows(study, answers: PersonaAnswers, rows: np.ndarray, individual: bool = True) -> Aligned:
    """Persona rows ``rows[h]`` aligned with human ``h`` (or, for aggregate data, just those personas)."""
    n_options = [q.n_options for q in study.questions]
    p_idx = answers.sampled[rows].astype(float)
    p_idx[p_idx < 0] = np.nan
    return Aligned(
        human=OptionIndicators(study.answer_matrix(), n_options) if individual else None,
        human_items=ItemProducts(study.position_matrix()) if individual else None,
        weights=study.weights if individual else np.ones(rows.size),
        persona_probs=None if answers.probs is None else answers.probs[rows],
        persona=OptionIndicators(p_idx, n_options),
        persona_items=ItemProducts(_index_to_positions(p_idx, _positions(study, normalize=False))) if individual else None,
    )


def _persona_distributions(al: Aligned, counts: np.ndarray | None = None) -> np.ndarray:
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


def score(study, al: Aligned, normalize: bool, counts: np.ndarray | None = None) -> dict:
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


def question_rows(study, al: Aligned, scored: dict) -> list[QuestionResult]:
    answered = al.answered()
    rows = []
    for j, q in enumerate(study.questions):
        k = q.n_options
        wd, human, persona = float(scored["per_question"][j]), scored["human_dist"][j, :k], scored["persona_dist"][j, :k]
        rows.append(QuestionResult(q.id, q.text, q.options, wd, human, persona, int(answered[j])))
    return rows


HEADLINE = ("wd", "fro", "alpha_human", "alpha_persona")


def bootstrap_scores(
    study, al: Aligned, point: dict, normalize: bool, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, ConfidenceInterval]:
    """Percentile CIs of the headline metrics, resampling humans with their matched personas.

    Resample ``b`` draws the same row indices as :func:`analysis.bootstrap.bootstrap_cis`
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
        scored = score(study, al, normalize, counts)
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


def aggregate_distributions(study_part, answers: PersonaAnswers, rows: np.ndarray, normalize: bool):
    """WD rows for aggregate (count-only) human data against the personas ``rows`` (equal weights)."""
    persona = _persona_distributions(align_rows(study_part, answers, rows, individual=False))
    questions, wds = [], []
    for j, q in enumerate(study_part.questions):
        h = study_part.distribution(q.id)
        v = persona[j, : q.n_options]
        d = wasserstein(h, v, q.positions, normalize=normalize)
        wds.append(d)
        questions.append(QuestionResult(q.id, q.text, q.options, d, h, v, study_part.answered(q.id)))
    finite = [x for x in wds if np.isfinite(x)]
    return (float(np.mean(finite)) if finite else float("nan")), questions


def scale_alpha(study, al: Aligned) -> dict[str, tuple[float, float]]:
    scales = [s for s in study.scales if all(i in study.question_ids for i in s.items)]
    if not scales:
        return {}
    cols = study.scale_columns()
    human = pairwise_moments(al.human_items, al.weights).scale_alphas(cols)
    persona = pairwise_moments(al.persona_items, al.weights).scale_alphas(cols)
    return {s.name: (float(h), float(p)) for s, h, p in zip(scales, human, persona, strict=True)}


def undefined_notes(study, scored: dict) -> tuple[str, ...]:
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
