"""Baselines of the individual level, scored like a persona on the same people:
the best single answer of the respondent's demographic cell and the population
marginal (both leave-one-out, read from a :class:`Reference` sample), and the
shuffled binding. Definitions in :mod:`analysis.individual`. Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.individual_scores import item_scores, normalise, one_hot, person_means


@dataclass(frozen=True)
class Reference:
    """The respondents the cell and marginal baselines are read from (default: the
    evaluated people). ``answers [M, Q]`` option indices (NaN = missing),
    ``demographics [M, T]`` trait codes (-1 = refused), ``weights [M]``."""

    answers: np.ndarray
    demographics: np.ndarray
    weights: np.ndarray


def cell_codes(demographics, reference_demographics) -> tuple[np.ndarray, np.ndarray]:
    """One integer per distinct row of trait codes, shared by both arrays (a refused trait, -1, is a value of its own)."""
    d = np.asarray(demographics, dtype=np.int64).reshape(len(demographics), -1)
    r = np.asarray(reference_demographics, dtype=np.int64).reshape(len(reference_demographics), -1)
    _, inverse = np.unique(np.vstack([d, r]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse[: len(d)], inverse[len(d) :]


def _counts(answers: np.ndarray, weights: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """``[G, Q, K]`` weighted answer counts per group."""
    out = np.zeros((n_groups, answers.shape[1], k))
    np.add.at(out, groups, one_hot(answers, k) * weights[:, None, None])
    return out


def best_answer(counts: np.ndarray, positions, nominal) -> np.ndarray:
    """``[..., Q]`` option index from ``[..., Q, K]`` weighted counts: the mode
    (``argmax_k C_k``) on nominal items, the weighted median on ordinal ones (the
    first option, in position order, where the cumulative count reaches half the
    total); NaN without counts. Ties go to the lowest option."""
    c = np.asarray(counts, dtype=float)
    x = np.asarray(positions, dtype=float)
    order = np.argsort(x, axis=-1, kind="stable")  # [Q, K]
    ranked = np.take_along_axis(c, np.broadcast_to(order, c.shape), axis=-1)
    cum = np.cumsum(ranked, axis=-1)
    half = cum[..., -1:] / 2
    at = np.argmax(cum >= half - 1e-12, axis=-1)
    median = np.take_along_axis(np.broadcast_to(order, c.shape), at[..., None], axis=-1)[..., 0]
    pick = np.where(np.asarray(nominal, dtype=bool), c.argmax(axis=-1), median)
    return np.where(c.sum(axis=-1) > 0, pick, np.nan)


def baseline_distributions(answers, demographics, reference: Reference, self_index, k: int, positions=None, nominal=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cell_best [N, Q, K] one-hot, marginal [N, Q, K], fallback [N, Q])``.

    For person ``i`` with reference row ``self_index[i]`` (-1: not in the
    reference), counts ``C_c = sum_{m in cell c} w_m onehot(a_m)`` minus the
    person's own ``w_i onehot(a_i)`` (leave-one-out); the cell's answer is
    :func:`best_answer` of ``C_c`` (default: every item nominal, the mode); the
    marginal is ``sum_c C_c`` minus the same, normalised.
    """
    a = np.asarray(answers, dtype=float)
    ref_a = np.asarray(reference.answers, dtype=float)
    ref_w = np.asarray(reference.weights, dtype=float)
    me, ref_cells = cell_codes(demographics, reference.demographics)
    n_cells = int(max(me.max(initial=-1), ref_cells.max(initial=-1)) + 1)
    by_cell = _counts(ref_a, ref_w, ref_cells, n_cells, k)
    total = by_cell.sum(axis=0)
    idx = np.asarray(self_index, dtype=np.int64)
    own = np.zeros((len(a), a.shape[1], k))
    inside = idx >= 0
    own[inside] = one_hot(ref_a[idx[inside]], k) * ref_w[idx[inside], None, None]
    cell = np.clip(by_cell[me] - own, 0, None)
    marg = np.clip(total[None] - own, 0, None)
    fallback = cell.sum(axis=-1) <= 1e-12
    cell = np.where(fallback[..., None], marg, cell)
    q = a.shape[1]
    positions = np.tile(np.arange(k, dtype=float), (q, 1)) if positions is None else positions
    nominal = np.ones(q, dtype=bool) if nominal is None else nominal
    return one_hot(best_answer(cell, positions, nominal), k), normalise(marg), fallback & np.isfinite(a)


def shuffled_scores(dists, answers, positions, nominal, n_shuffles: int = 20, seed: int = 0) -> np.ndarray:
    """``[N]``: each person's agreement with a randomly re-assigned persona,
    averaged over ``n_shuffles`` seeded permutations of the binding."""
    rng = np.random.default_rng(seed)
    n = len(answers)
    out = np.zeros(n)
    seen = np.zeros(n)
    for _ in range(n_shuffles):
        # A random cycle: nobody keeps their own persona (a plain permutation
        # would leave ~1 person bound, a large share of a small sample).
        order = rng.permutation(n)
        persona = np.empty(n, dtype=np.int64)
        persona[order] = np.roll(order, -1)
        s = person_means(item_scores(np.asarray(dists)[persona], answers, positions, nominal)[0])
        ok = np.isfinite(s)
        out[ok] += s[ok]
        seen[ok] += 1
    return np.where(seen > 0, out / np.maximum(seen, 1), np.nan)
