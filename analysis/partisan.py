"""Partisan gaps and their human comparators (Kang et al. 2025; SPEC section 4).

Every partisan figure has three kinds of comparator, kept apart:

* the **personas'** value;
* the **matched human respondents'** value, computed with the same estimator
  on the real microdata the personas were matched to, wherever that study holds
  the corresponding items -- with a bootstrap CI and its own split-half lower
  bound (the distance two random halves of the same humans are apart);
* the **published** value, from another instrument, labelled with it
  (:data:`PUBLISHED`).

Ratings are positions 1..K, oriented as the scenario says (higher = more
favourable / more willing / warmer). Thermometers (0-100) are binned into
five equal bins by the study (analysis/studies/anes_partytherms.yaml).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.bootstrap import bootstrap_ci
from analysis.distributions import wasserstein, weighted_distribution
from analysis.gaps import HUMAN_GAP_REFERENCE, mean_gap

PARTIES = ("Democrat", "Republican")
OTHER = {"Democrat": "Republican", "Republican": "Democrat"}
NOT_IN_STUDY = "not in this study"

#: The instrument behind each published human value of HUMAN_GAP_REFERENCE.
PUBLISHED_INSTRUMENT = {
    "hostility": "published, Pew ATP W110, Kang et al. 2025",
    "subversion": "published, Braley et al. 2023, Kang et al. 2025",
    "meta_perception": "published, Moore-Berg et al. 2020, Kang et al. 2025",
}

#: Party feeling thermometers of a study (question ids), toward each party.
THERMOMETERS = {"Democrat": "therm_dem", "Republican": "therm_gop"}


@dataclass(frozen=True)
class Published:
    instrument: str
    delta: float
    d: float


def published(kind: str, party: str) -> Published | None:
    ref = HUMAN_GAP_REFERENCE.get(kind, {}).get(party)
    return Published(PUBLISHED_INSTRUMENT[kind], ref.delta, ref.d) if ref else None


@dataclass(frozen=True)
class GapEstimate:
    """``delta = mean(a) - mean(b)`` with its percentile bootstrap CI, Cohen's d
    (pooled SD) and the sizes; ``lower_bound``: split-half bound (see
    :func:`split_half_gap`), NaN when not computed."""

    delta: float
    low: float
    high: float
    d: float
    n_a: int
    n_b: int
    lower_bound: float = float("nan")


def _gap(a, b, wa, wb):
    """:func:`mean_gap` of the finite ratings of each set, with their weights."""
    ka, kb = np.isfinite(a), np.isfinite(b)
    return mean_gap(a[ka], b[kb], wa[ka], wb[kb])


def _arrays(a, b, wa, wb):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    wa = np.ones_like(a) if wa is None else np.asarray(wa, dtype=float)
    wb = np.ones_like(b) if wb is None else np.asarray(wb, dtype=float)
    return a, b, wa, wb


def gap_estimate(
    a, b, wa=None, wb=None, *, paired: bool = False, n_boot: int = 500, seed: int = 0, lower_bound: bool = False, n_splits: int = 100
) -> GapEstimate:
    """Gap ``mean_w(a) - mean_w(b)`` (survey weights ``wa``, ``wb``), Cohen's d
    with the pooled SD of the two rating sets, a percentile bootstrap CI
    (resampling respondents: pairs together when ``paired``, i.e. ``a`` and
    ``b`` are the same people's two ratings) and optionally the split-half
    lower bound. NaNs are dropped per set, as each mean uses every rating given."""
    a, b, wa, wb = _arrays(a, b, wa, wb)
    gap = _gap(a, b, wa, wb)
    low = high = float("nan")
    if np.isfinite(a).sum() > 1 and np.isfinite(b).sum() > 1:
        # Each sample is a (rating, weight) pair per respondent so weights follow their ratings.
        if paired:
            ci = bootstrap_ci(lambda m: _gap(m[:, 0], m[:, 1], m[:, 2], m[:, 2]).delta, np.stack([a, b, wa], axis=1), n=n_boot, seed=seed)
        else:
            ci = bootstrap_ci(
                lambda x, y: _gap(x[:, 0], y[:, 0], x[:, 1], y[:, 1]).delta, np.stack([a, wa], axis=1), np.stack([b, wb], axis=1), n=n_boot, seed=seed
            )
        low, high = ci.low, ci.high
    lb = split_half_gap(a, b, wa, wb, paired=paired, n_splits=n_splits, seed=seed) if lower_bound else float("nan")
    return GapEstimate(gap.delta, low, high, gap.d, gap.n_a, gap.n_b, lb)


def split_half_gap(a, b, wa=None, wb=None, *, paired: bool = False, n_splits: int = 100, seed: int = 0) -> float:
    """Split-half lower bound of a gap: ``mean_s |delta(A_s) - delta(B_s)|``
    over ``n_splits`` random splits of the respondents into two halves (each
    set split separately when the sets are different people). Two halves of the
    same humans differ by about this much, so no persona gap can be expected
    closer to the human gap than this."""
    a, b, wa, wb = _arrays(a, b, wa, wb)
    if len(a) < 4 or len(b) < 4:
        return float("nan")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        ia = rng.permutation(len(a))
        ib = ia if paired else rng.permutation(len(b))
        halves = [(ia[: len(a) // 2], ib[: len(b) // 2]), (ia[len(a) // 2 :], ib[len(b) // 2 :])]
        d1, d2 = (_gap(a[x], b[y], wa[x], wb[y]).delta for x, y in halves)
        if np.isfinite(d1) and np.isfinite(d2):
            out.append(abs(d1 - d2))
    return float(np.mean(out)) if out else float("nan")


def split_half_wd(answers, k: int, weights=None, *, normalize: bool = True, n_splits: int = 100, seed: int = 0) -> float:
    """Split-half lower bound of WD on one item: ``mean_s W1(h(A_s), h(B_s))``,
    ``h`` the survey-weighted answer distribution of a random half of the
    respondents (positions as the estimator: [0, 1] or raw)."""
    x = np.asarray(answers, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = np.isfinite(x)
    x, w = x[keep], w[keep]
    if len(x) < 4:
        return float("nan")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        idx = rng.permutation(len(x))
        h1, h2 = idx[: len(x) // 2], idx[len(x) // 2 :]
        out.append(wasserstein(weighted_distribution(x[h1], k, w[h1]), weighted_distribution(x[h2], k, w[h2]), normalize=normalize))
    return float(np.mean(out))


def positions_of(answers, k: int, *, favourable_first: bool = False) -> np.ndarray:
    """Option indices (NaN = none) -> positions 1..K; reversed (K..1) when option 0
    is the most favourable, so that higher = more favourable."""
    x = np.asarray(answers, dtype=float) + 1
    return k + 1 - x if favourable_first else x


def thermometer_ratings(study, rows: Sequence[int], party: str) -> tuple[np.ndarray, np.ndarray]:
    """The binned thermometers (positions 1..5, NaN = missing) of respondents
    ``rows`` toward their own party ``party`` and toward the other party."""
    own = study.responses[THERMOMETERS[party]].to_numpy(float)[np.asarray(rows, dtype=np.int64)]
    other = study.responses[THERMOMETERS[OTHER[party]]].to_numpy(float)[np.asarray(rows, dtype=np.int64)]
    k = study.question(THERMOMETERS[party]).n_options
    return positions_of(own, k), positions_of(other, k)


def has_thermometers(study) -> bool:
    return study is not None and study.is_individual and all(q in study.question_ids for q in THERMOMETERS.values())


def party_rows(study, party: str) -> np.ndarray:
    return np.flatnonzero(study.group_mask("party", party))


def thermometer_gap(study, party: str, *, n_boot: int = 500, seed: int = 0, lower_bound: bool = True) -> GapEstimate:
    """In-party minus out-party thermometer gap of a study's ``party`` partisans
    (five bins, positions 1..5, survey-weighted): the ANES analogue of the
    hostility gap and of the partisans' self-ratings."""
    rows = party_rows(study, party)
    own, other = thermometer_ratings(study, rows, party)
    w = study.weights[rows]
    return gap_estimate(own, other, w, w, paired=True, n_boot=n_boot, seed=seed, lower_bound=lower_bound)
