"""Effect sizes and the three partisan gaps: hostility, subversion, meta-perception.

Every function is pure numpy and documents its formula: a gap is a (survey-
weighted) mean difference with its Cohen's d.  Source: "Higher-order binding"
(Kang et al., 2025); the human values it reports are :data:`HUMAN_GAP_REFERENCE`.
The gaps of a run, beside their human comparators, are in :mod:`analysis.partisan`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GapReference:
    """Human value of a partisan gap for one party: mean difference and Cohen's d."""

    delta: float
    d: float


#: Human values of the three partisan gaps (Kang et al. 2025, talk tables).
#: Keys: gap kind -> party -> (delta, Cohen's d).
HUMAN_GAP_REFERENCE: dict[str, dict[str, GapReference]] = {
    "hostility": {"Democrat": GapReference(1.630, 2.208), "Republican": GapReference(1.606, 2.263)},
    "subversion": {"Democrat": GapReference(0.445, 1.887), "Republican": GapReference(0.398, 1.951)},
    "meta_perception": {"Democrat": GapReference(1.091, 0.761), "Republican": GapReference(1.182, 0.768)},
}


def _weighted_mean_var(x: np.ndarray, w: np.ndarray | None) -> tuple[float, float, float]:
    """Weighted mean, reliability-corrected variance and Kish effective n (NaNs dropped)."""
    x = np.asarray(x, dtype=float)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    keep = np.isfinite(x)
    x, w = x[keep], w[keep]
    sw, sw2 = w.sum(), (w**2).sum()
    if x.size == 0 or sw <= 0:
        return float("nan"), float("nan"), 0.0
    mean = float(np.sum(w * x) / sw)
    denom = sw - sw2 / sw
    var = float(np.sum(w * (x - mean) ** 2) / denom) if denom > 0 else float("nan")
    return mean, var, float(sw**2 / sw2)


def cohens_d(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None, weights_b: np.ndarray | None = None) -> float:
    """Cohen's d with the pooled standard deviation.

    ``d = (mean_a - mean_b) / s``,
    ``s = sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2))``
    with ``s^2`` the ``ddof=1`` variances.  With survey weights the means and
    variances are weighted and ``n`` is Kish's effective size
    ``(sum w)^2 / sum w^2`` (equal to the count for unit weights).
    """
    ma, va, na = _weighted_mean_var(a, weights_a)
    mb, vb, nb = _weighted_mean_var(b, weights_b)
    if na + nb <= 2 or not (np.isfinite(va) and np.isfinite(vb)):
        return float("nan")
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    return float((ma - mb) / pooled) if pooled > 0 else float("nan")


@dataclass(frozen=True)
class Gap:
    """A mean difference between two sets of ratings and its effect size.

    ``delta = mean_a - mean_b``; ``d`` = Cohen's d of a vs b (pooled SD).
    """

    delta: float
    d: float
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int


def mean_gap(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None, weights_b: np.ndarray | None = None) -> Gap:
    """``Gap(delta = mean(a) - mean(b), d = cohens_d(a, b))`` (weighted if weights are given)."""
    ma, _, _ = _weighted_mean_var(a, weights_a)
    mb, _, _ = _weighted_mean_var(b, weights_b)
    return Gap(
        delta=ma - mb,
        d=cohens_d(a, b, weights_a, weights_b),
        mean_a=ma,
        mean_b=mb,
        n_a=int(np.isfinite(np.asarray(a, dtype=float)).sum()),
        n_b=int(np.isfinite(np.asarray(b, dtype=float)).sum()),
    )


def hostility_gap(own_party_rating: np.ndarray, other_party_rating: np.ndarray, weights: np.ndarray | None = None) -> Gap:
    """Hostility gap of one party: own-party rating minus other-party rating.

    Both arrays hold the same partisans' ratings (e.g. Democrats rating
    Democrats and Republicans on "moral ... immoral"), oriented so that a
    higher value is *more favourable*.  ``delta = mean(own) - mean(other)``
    (positive = ingroup favouritism); ``d`` uses the pooled SD of the two
    rating sets.  Human reference: :data:`HUMAN_GAP_REFERENCE` ``["hostility"]``.
    """
    return mean_gap(own_party_rating, other_party_rating, weights, weights)


def subversion_gap(
    perceived_outgroup_willingness: np.ndarray,
    outgroup_self_willingness: np.ndarray,
    weights_perceivers: np.ndarray | None = None,
    weights_outgroup: np.ndarray | None = None,
) -> Gap:
    """Subversion gap: perceived minus actual willingness of the other party to subvert democracy.

    For the *Democrat* gap: ``perceived`` = Democrats' answers to "would MOST
    REPUBLICANS support ..." and ``outgroup_self`` = Republicans' answers to
    "would YOU support ..."; the *Republican* gap is the mirror.  Higher =
    more willing.  ``delta = mean(perceived) - mean(self)`` (positive =
    overestimation of the other side); ``d`` pools the two independent samples.
    """
    return mean_gap(perceived_outgroup_willingness, outgroup_self_willingness, weights_perceivers, weights_outgroup)


def meta_perception_gap(
    actual_outgroup_feeling: np.ndarray,
    believed_outgroup_feeling: np.ndarray,
    weights_outgroup: np.ndarray | None = None,
    weights_believers: np.ndarray | None = None,
) -> Gap:
    """Meta-perception gap: how warm the other side really is minus how warm partisans believe it is.

    For the *Democrat* gap: ``believed`` = Democrats' answers to "how warm or
    cold do you think Republicans feel towards Democrats?" and ``actual`` =
    Republicans' own warmth towards Democrats; the *Republican* gap is the
    mirror.  Ratings are warmth (higher = warmer; thermometers binned into five
    equal bins).  ``delta = mean(actual) - mean(believed)``, which equals
    "believed minus actual" measured as *coldness/prejudice* (SPEC section 4):
    positive when partisans exaggerate the other side's hostility, as the human
    data show (:data:`HUMAN_GAP_REFERENCE` ``["meta_perception"]``).
    """
    return mean_gap(actual_outgroup_feeling, believed_outgroup_feeling, weights_outgroup, weights_believers)
