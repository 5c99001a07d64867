"""The human lower bound: how far two random halves of the same human sample are apart.

Anthology (Moon et al. 2024) reports, next to each persona method, the value
a perfect simulator could hope for: split the human respondents at random into
two halves, compute each metric between the halves, and average over splits
(SPEC section 4; the paper's ATP values are
:data:`PAPER_ATP_LOWER_BOUNDS`).

* WD: per question, W1 between the two halves' survey-weighted answer
  distributions, averaged over questions, then over splits.
* Frobenius: between the two halves' weighted correlation matrices.
* alpha is not a distance between halves: the "lower bound" row reports the
  Cronbach's alpha of a random half (mean over both halves and all splits),
  i.e. the alpha a perfect simulator of half the sample would show.

Each split shuffles the respondents and cuts at ``N // 2`` (first half smaller
when N is odd), like the Anthology code.

Aggregate data (whole answer counts, no individual answers): each question's
``N_q`` answers are split at random, ``floor(N_q / 2)`` of them drawn without
replacement -- the first half's counts are multivariate hypergeometric
``H(c_q, floor(N_q / 2))``, the second half the rest -- which is exactly the
split-half of the respondents who answered that question.  Only WD is defined
(Frobenius and alpha need individual answers: NaN).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.correlations import ItemProducts, frobenius_distance, pairwise_moments
from analysis.distributions import OptionIndicators, wasserstein_many, weighted_distributions
from analysis.studies import StudyError

#: Human lower bounds (split-half) for Pew ATP waves, Anthology main table:
#: WD (normalisation as in the Anthology code, positions 1..K), Frobenius, alpha.
PAPER_ATP_LOWER_BOUNDS: dict[str, dict[str, float]] = {
    "W34": {"wd": 0.057, "fro": 0.418, "alpha": 0.784},
    "W92": {"wd": 0.091, "fro": 0.411, "alpha": 0.641},
    "W99": {"wd": 0.081, "fro": 0.327, "alpha": 0.830},
}


@dataclass(frozen=True)
class LowerBound:
    """Split-half metrics: mean and standard deviation over ``n_splits`` random splits."""

    wd: float
    wd_sd: float
    fro: float
    fro_sd: float
    alpha: float
    alpha_sd: float
    n_splits: int
    n_humans: int
    seed: int
    normalize: bool
    per_question_wd: dict[str, float] = field(default_factory=dict)


_CACHE: dict[str, LowerBound] = {}
_CACHE_SIZE = 256


def _content_key(study, n_splits: int, seed: int, normalize: bool) -> str:
    """Hash of everything the lower bound depends on (answers, weights, positions, settings)."""
    h = hashlib.sha256()
    if study.aggregate is not None:
        h.update(study.aggregate.to_csv(index=False).encode())
    h.update(np.ascontiguousarray(study.answer_matrix()).tobytes())
    h.update(np.ascontiguousarray(study.weights, dtype=float).tobytes())
    for q in study.questions:
        h.update(repr((q.id, q.n_options, q.positions)).encode())
    h.update(repr((n_splits, seed, normalize)).encode())
    return h.hexdigest()


def human_lower_bound(study, n_splits: int = 100, seed: int = 0, *, normalize: bool = True) -> LowerBound:
    """Split-half lower bound of a loaded :class:`analysis.studies.HumanStudy`.

    ``normalize`` controls the WD scale (positions rescaled to [0, 1], default)
    and must match the scale of the persona WD it is compared with.  Results
    are memoised by content (answers, weights, positions, settings): every
    persona condition of a study shares its lower bounds, whole-sample and
    per subgroup, so they are computed once per process.
    """
    key = _content_key(study, n_splits, seed, normalize)
    if key in _CACHE:
        return _CACHE[key]
    result = _compute(study, n_splits, seed, normalize)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = result
    return result


def _compute_counts(study, n_splits: int, seed: int, normalize: bool) -> LowerBound:
    """The WD lower bound from whole answer counts (hypergeometric split of each question's answers)."""
    if study.counts_kind != "counts":
        raise StudyError(f"{study.name}: the count-based lower bound needs whole (unweighted) answer counts, not {study.counts_kind}")
    questions = study.questions
    kmax = max(q.n_options for q in questions)
    rng = np.random.default_rng(seed)
    pa = np.zeros((n_splits, len(questions), kmax))
    pb = np.zeros_like(pa)
    for j, q in enumerate(questions):
        agg = study.aggregate
        rows = agg[(agg["trait"] == "") & (agg["question"] == q.id)]
        c = np.bincount(rows["option"].to_numpy(np.int64), weights=rows["count"].to_numpy(float), minlength=q.n_options)
        c = np.round(c).astype(np.int64)
        if c.sum() < 4:
            pa[:, j, : q.n_options] = np.nan
            continue
        a = rng.multivariate_hypergeometric(c, int(c.sum()) // 2, size=n_splits)
        pa[:, j, : q.n_options], pb[:, j, : q.n_options] = a, c - a
    wd = wasserstein_many(pa, pb, [q.positions for q in questions], [q.n_options for q in questions], normalize=normalize)
    nan = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_split = np.nanmean(wd, axis=1)
        per_question = np.nanmean(wd, axis=0)
        return LowerBound(
            wd=float(np.nanmean(per_split)),
            wd_sd=float(np.nanstd(per_split, ddof=1)) if n_splits > 1 else 0.0,
            fro=nan,
            fro_sd=nan,
            alpha=nan,
            alpha_sd=nan,
            n_splits=n_splits,
            n_humans=study.n_respondents,
            seed=seed,
            normalize=normalize,
            per_question_wd={q.id: float(per_question[j]) for j, q in enumerate(questions)},
        )


def _compute(study, n_splits: int, seed: int, normalize: bool) -> LowerBound:
    if not study.is_individual:
        return _compute_counts(study, n_splits, seed, normalize)
    if study.n < 4:
        raise StudyError(f"{study.name}: the split-half lower bound needs at least 4 respondents, got {study.n}")
    # Prepared once: every split only changes the 0/1 frequency counts.
    answers = OptionIndicators(study.answer_matrix(), [q.n_options for q in study.questions])
    positions = ItemProducts(study.position_matrix())
    weights = study.weights
    questions = study.questions
    n_options = [q.n_options for q in questions]
    option_positions = [q.positions for q in questions]
    rng = np.random.default_rng(seed)
    n, half = study.n, study.n // 2
    scales = study.scale_columns() or None

    # Each split is a pair of 0/1 membership vectors (frequency counts); the
    # metrics are evaluated for a block of splits at once (see the batched
    # forms in analysis.distributions).  Blocks bound the [splits, N] count matrices.
    block = max(1, int(4e6 // n))
    total = pairwise_moments(positions, weights)
    wd, fro, alpha = [], [], []
    for start in range(0, n_splits, block):
        size = min(block, n_splits - start)
        in_a = np.zeros((size, n))
        for s in range(size):
            in_a[s, rng.permutation(n)[:half]] = 1.0
        in_b = 1.0 - in_a
        pa = weighted_distributions(answers, weights=weights, counts=in_a)
        pb = weighted_distributions(answers, weights=weights, counts=in_b)
        wd.append(wasserstein_many(pa, pb, option_positions, n_options, normalize=normalize))
        # The second half's sums are the total's minus the first half's.
        moments_a = pairwise_moments(positions, weights, in_a)
        moments_b = total - moments_a
        fro.append(frobenius_distance(moments_a.corr(), moments_b.corr()))
        alpha.append(0.5 * (moments_a.alpha(scales) + moments_b.alpha(scales)))
    wd, fro, alpha = np.concatenate(wd), np.concatenate(fro), np.concatenate(alpha)

    # A question nobody in a (small) half answered gives NaN for that split; it is
    # left out of that split's mean rather than poisoning it.  Likewise a split whose
    # Frobenius distance is undefined (an item constant in a half) is left out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_split_wd = np.nanmean(wd, axis=1)
        per_question = np.nanmean(wd, axis=0)
        return LowerBound(
            wd=float(np.nanmean(per_split_wd)),
            wd_sd=float(np.nanstd(per_split_wd, ddof=1)) if n_splits > 1 else 0.0,
            fro=float(np.nanmean(fro)),
            fro_sd=float(np.nanstd(fro, ddof=1)) if n_splits > 1 else 0.0,
            alpha=float(np.nanmean(alpha)),
            alpha_sd=float(np.nanstd(alpha, ddof=1)) if n_splits > 1 else 0.0,
            n_splits=n_splits,
            n_humans=n,
            seed=seed,
            normalize=normalize,
            per_question_wd={q.id: float(per_question[j]) for j, q in enumerate(questions)},
        )
