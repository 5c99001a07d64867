"""Eq. 21 and eq. 22 as pooled estimates with cluster-bootstrap intervals.

Jarrett et al. (2023) define representativity as the discrepancy in expected
payoff (eq. 21) and the consensus autorater's win rate (eq. 22). Here each is
estimated over many groups (or held-out episodes), the unit of independence:

* Per substituted participant j of cluster g, from R paired rollouts (rollout r
  of the substituted episode shares every seed with rollout r of the originals)::

      d_gj = mean_r payoff_gj^r(with representatives) - mean_r payoff_gj^r(originals)

  the *signed* gap (its sign says whether representatives leave their
  principals better or worse off) and |d_gj| the *absolute* gap (eq. 21's
  element-wise discrepancy).
* Pooled over the N = sum_g J_g substituted participants of all clusters::

      signed = (1/N) sum_g sum_j d_gj        absolute = (1/N) sum_g sum_j |d_gj|

* Interval: expanded-percentile bootstrap resampling *clusters* with replacement (the
  participants of a group share its question and mediator, so they are not
  independent); with a single cluster, rollouts are resampled instead and the
  interval says so.
* Null row: the same estimator on the originals re-played as their own
  representatives under other seeds. |d| is biased upward by rollout noise
  (E|d| > 0 even with no true difference); the null row is that noise floor,
  and ``excess = absolute - null absolute`` (clusters resampled jointly) is
  the part of the gap the representatives cause.
* Eq. 22: each substituted episode's win probability p (0.5 = the judge cannot
  tell the statements apart), averaged within a cluster, then over clusters,
  with the same cluster bootstrap; the null row's win rate sits beside it.

Everything here is numpy on arrays: the consensus scenario and
``represent eval`` build :class:`PayoffSample` s and call :func:`pooled_table`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# The conditioning-set name of the null row (originals re-played as themselves).
NULL_SET = "self (null)"
INTERVAL_GROUPS = "groups (cluster bootstrap)"
INTERVAL_ROLLOUTS = "rollouts (one group only)"
INTERVAL_NONE = "none (one group, one rollout)"


@dataclass(frozen=True)
class PayoffSample:
    """One substitution in one cluster: final payoffs of the substituted
    participants over R rollouts, with (``substituted``) and without
    (``original``) representatives, shape (R, J); ``wins`` the judge's
    per-episode preference for the representatives' statement (eq. 22)."""

    cluster: str
    subset: str
    mode: str
    substituted: np.ndarray
    original: np.ndarray
    wins: tuple[float, ...] = ()


def unit_gaps(substituted: np.ndarray, original: np.ndarray, axis: int = 0) -> np.ndarray:
    """Signed gap per participant, d_j = mean_r substituted[r, j] - mean_r original[r, j]."""
    return np.mean(substituted, axis=axis) - np.mean(original, axis=axis)


def _percentile(values: np.ndarray, level: float, n: int) -> tuple[float, float]:
    """Expanded percentile interval (Hesterberg 2015) of bootstrap ``values`` from
    ``n`` resampled units: the percentiles at alpha' / 2 and 1 - alpha' / 2 with

        alpha' = 2 Phi(-sqrt(n / (n - 1)) t_{n-1, 1 - alpha/2})

    so that with few clusters the interval is as wide as a t interval would
    be (the plain percentile interval under-covers: ~0.91 at n = 24)."""
    values = values[np.isfinite(values)]
    if not len(values) or n < 2:
        return float("nan"), float("nan")
    from scipy.stats import norm, t

    a = float(2 * norm.cdf(-np.sqrt(n / (n - 1)) * t.ppf(1 - (1 - level) / 2, n - 1))) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def cluster_weights(n_clusters: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, G) multiplicities of each cluster in B bootstrap resamples of G clusters."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    w = np.zeros((n_resamples, n_clusters))
    np.add.at(w, (np.arange(n_resamples)[:, None], picks), 1.0)
    return w


@dataclass(frozen=True)
class GapEstimate:
    """Pooled eq. 21 (1..7 payoff scale): signed and absolute gap with intervals."""

    clusters: int
    units: int
    rollouts: int
    signed: float
    signed_low: float
    signed_high: float
    absolute: float
    abs_low: float
    abs_high: float
    interval: str


def pooled_gap(samples: Sequence[tuple[np.ndarray, np.ndarray]], seed: int, level: float = 0.95, n_resamples: int = 2000) -> GapEstimate:
    """Pooled signed and absolute gap over clusters (``samples[g] = (substituted,
    original)``, each (R, J_g)), with cluster-bootstrap intervals (see the module
    docstring; one cluster: rollouts resampled, paired)."""
    d = [unit_gaps(np.asarray(s, float), np.asarray(o, float)) for s, o in samples]
    n = np.array([len(x) for x in d], float)
    s_sum = np.array([x.sum() for x in d])
    a_sum = np.array([np.abs(x).sum() for x in d])
    signed, absolute = float(s_sum.sum() / n.sum()), float(a_sum.sum() / n.sum())
    rollouts = int(min(len(np.asarray(s)) for s, _ in samples))
    if len(samples) >= 2:
        w = cluster_weights(len(samples), n_resamples, seed)
        units = w @ n
        sl, sh = _percentile(w @ s_sum / units, level, len(samples))
        al, ah = _percentile(w @ a_sum / units, level, len(samples))
        interval = INTERVAL_GROUPS
    elif rollouts >= 2:
        sub, orig = (np.asarray(x, float) for x in samples[0])
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(sub), size=(n_resamples, len(sub)))
        db = sub[idx].mean(axis=1) - orig[idx].mean(axis=1)  # (B, J), rollouts paired
        sl, sh = _percentile(db.mean(axis=1), level, len(sub))
        al, ah = _percentile(np.abs(db).mean(axis=1), level, len(sub))
        interval = INTERVAL_ROLLOUTS
    else:
        sl = sh = al = ah = float("nan")
        interval = INTERVAL_NONE
    return GapEstimate(len(samples), int(n.sum()), rollouts, signed, sl, sh, absolute, al, ah, interval)


def excess_over_null(
    samples: Sequence[tuple[np.ndarray, np.ndarray]], null: Sequence[tuple[np.ndarray, np.ndarray]], seed: int, level: float = 0.95, n_resamples: int = 2000
) -> tuple[float, float, float]:
    """(excess, low, high): absolute gap minus the null row's, both pooled over
    the same clusters (``samples[g]`` and ``null[g]`` from cluster g), the
    interval from resampling clusters jointly; NaN interval with < 2 clusters."""
    if len(samples) != len(null):
        raise ValueError("one null sample per cluster")
    a = [np.abs(unit_gaps(np.asarray(s, float), np.asarray(o, float))) for s, o in samples]
    b = [np.abs(unit_gaps(np.asarray(s, float), np.asarray(o, float))) for s, o in null]
    na, nb = np.array([len(x) for x in a], float), np.array([len(x) for x in b], float)
    sa, sb = np.array([x.sum() for x in a]), np.array([x.sum() for x in b])
    excess = float(sa.sum() / na.sum() - sb.sum() / nb.sum())
    if len(samples) < 2:
        return excess, float("nan"), float("nan")
    w = cluster_weights(len(samples), n_resamples, seed)
    low, high = _percentile(w @ sa / (w @ na) - w @ sb / (w @ nb), level, len(samples))
    return excess, low, high


def pooled_mean(per_cluster: Sequence[Sequence[float]], seed: int, level: float = 0.95, n_resamples: int = 2000) -> tuple[float, float, float]:
    """(mean, low, high) of per-episode values (eq. 22 win probabilities):
    mean_g (mean of cluster g's values), each cluster weighted once, interval
    from resampling clusters; NaN with no values, NaN interval with < 2 clusters."""
    means = np.array([np.mean(v) for v in per_cluster if len(v)], float)
    if not len(means):
        return float("nan"), float("nan"), float("nan")
    if len(means) < 2:
        return float(means[0]), float("nan"), float("nan")
    w = cluster_weights(len(means), n_resamples, seed)
    low, high = _percentile(w @ means / w.sum(axis=1), level, len(means))
    return float(means.mean()), low, high


@dataclass(frozen=True)
class PooledRow:
    """One (conditioning set, mode) row of the pooled eq. 21 / eq. 22 table."""

    subset: str
    mode: str
    clusters: int
    units: int
    rollouts: int
    signed_gap: float
    signed_ci_low: float
    signed_ci_high: float
    payoff_gap: float  # absolute, eq. 21
    ci_low: float
    ci_high: float
    null_gap: float  # the null row's absolute gap in the same mode (noise floor)
    excess_over_null: float
    excess_ci_low: float
    excess_ci_high: float
    win_rate: float  # eq. 22
    win_ci_low: float
    win_ci_high: float
    null_win_rate: float
    interval: str

    def to_json(self) -> dict:
        return asdict(self)


def _combine(samples: Sequence[PayoffSample]) -> dict[str, tuple[np.ndarray, np.ndarray, list[float]]]:
    """Per cluster: substituted and original columns of every sample side by
    side ("one": each slot's own run), and the cluster's win probabilities."""
    out: dict[str, tuple[list, list, list]] = {}
    for s in samples:
        sub, orig, wins = out.setdefault(s.cluster, ([], [], []))
        sub.append(np.asarray(s.substituted, float))
        orig.append(np.asarray(s.original, float))
        wins.extend(w for w in s.wins if w is not None and np.isfinite(w))
    return {c: (np.concatenate(a, axis=1), np.concatenate(b, axis=1), w) for c, (a, b, w) in out.items()}


def pooled_table(samples: Sequence[PayoffSample], seed: int, level: float = 0.95, n_resamples: int = 2000) -> list[PooledRow]:
    """Rows per (subset, mode) in first-seen order (the null row, when its
    samples are given, included), each beside the null row's figures of the
    same mode. Deterministic in ``seed``; every row resamples the same cluster
    draws, so rows are comparable."""
    keys = list(dict.fromkeys((s.subset, s.mode) for s in samples))
    combined = {k: _combine([s for s in samples if (s.subset, s.mode) == k]) for k in keys}
    rows = []
    for subset, mode in keys:
        by_cluster = combined[(subset, mode)]
        clusters = sorted(by_cluster)
        pairs = [(by_cluster[c][0], by_cluster[c][1]) for c in clusters]
        est = pooled_gap(pairs, seed, level, n_resamples)
        win, wl, wh = pooled_mean([by_cluster[c][2] for c in clusters], seed, level, n_resamples)
        null = combined.get((NULL_SET, mode))
        null_gap = null_win = ex = el = eh = float("nan")
        if null is not None and subset == NULL_SET:
            null_gap, null_win = est.absolute, win
        elif null is not None:
            shared = [c for c in clusters if c in null]
            null_pairs = [(null[c][0], null[c][1]) for c in shared]
            if shared:
                null_gap = pooled_gap(null_pairs, seed, level, n_resamples).absolute
                null_win = pooled_mean([null[c][2] for c in shared], seed, level, n_resamples)[0]
                ex, el, eh = excess_over_null([(by_cluster[c][0], by_cluster[c][1]) for c in shared], null_pairs, seed, level, n_resamples)
        rows.append(PooledRow(subset, mode, est.clusters, est.units, est.rollouts, est.signed, est.signed_low, est.signed_high,
                              est.absolute, est.abs_low, est.abs_high, null_gap, ex, el, eh, win, wl, wh, null_win, est.interval))
    return rows


__all__ = [
    "GapEstimate", "INTERVAL_GROUPS", "INTERVAL_NONE", "INTERVAL_ROLLOUTS", "NULL_SET", "PayoffSample", "PooledRow",
    "cluster_weights", "excess_over_null", "pooled_gap", "pooled_mean", "pooled_table", "unit_gaps",
]
