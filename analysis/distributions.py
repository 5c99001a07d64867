"""Answer distributions and the Wasserstein-1 distance between them.

Every function is pure numpy and documents its formula.  Conventions (also of
:mod:`analysis.correlations` and :mod:`analysis.gaps`):

* An *answer* is an option index ``0..K-1`` (``NaN`` = no answer / refusal).
* A *distribution* is a length-``K`` vector of non-negative masses summing to 1.
* *Positions* are the ordinal values of the options (default ``0..K-1``).  They
  enter the Wasserstein distance, correlations and Cronbach's alpha.
* *Weights* are survey weights, one per respondent (default: all ones).

Sources: Anthology (Moon et al., EMNLP 2024) for WD and the human lower bound;
OpinionQA / SubPOP for the [0, 1] normalisation of WD.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def option_positions(n_options: int, positions: Sequence[float] | None = None, *, normalize: bool = True) -> np.ndarray:
    """Ordinal positions of the options, optionally rescaled to [0, 1].

    ``x_k = positions[k]`` (default ``k``); with ``normalize`` the positions are
    mapped affinely to ``(x_k - min x) / (max x - min x)`` so that the distance
    between the two extreme options is 1 (OpinionQA / SubPOP convention).
    """
    x = np.arange(n_options, dtype=float) if positions is None else np.asarray(positions, dtype=float)
    if x.shape != (n_options,):
        raise ValueError(f"expected {n_options} positions, got {x.shape[0] if x.ndim else 0}")
    if normalize:
        span = x.max() - x.min()
        x = (x - x.min()) / span if span > 0 else np.zeros_like(x)
    return x


def weighted_distribution(answers: np.ndarray, n_options: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Survey-weighted answer distribution over ``n_options`` options.

    ``p_k = sum_i w_i [a_i = k] / sum_i w_i [a_i is not NaN]`` -- refusals and
    missing answers (NaN, or negative indices) are dropped and the rest
    renormalised (SPEC section 4).  Returns an all-NaN vector if nobody answered.
    """
    a = np.asarray(answers, dtype=float)
    w = np.ones(a.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    valid = np.isfinite(a) & (a >= 0)
    idx = a[valid].astype(np.int64)
    if idx.size and idx.max() >= n_options:
        raise ValueError(f"answer index {idx.max()} out of range for {n_options} options")
    counts = np.bincount(idx, weights=w[valid], minlength=n_options)
    total = counts.sum()
    return counts / total if total > 0 else np.full(n_options, np.nan)


def wasserstein(p: np.ndarray, q: np.ndarray, positions: Sequence[float] | None = None, *, normalize: bool = True) -> float:
    """Wasserstein-1 distance between two distributions over ordinal options.

    On the real line W1 is the area between the two CDFs:
    ``W1(p, q) = sum_k |P_k - Q_k| (x_{k+1} - x_k)`` with ``P_k = sum_{j<=k} p_j``
    over positions sorted increasingly.  With ``normalize`` (default) positions
    are rescaled to [0, 1] so W1 lies in [0, 1]; with ``normalize=False`` the raw
    positions are used (default ``0..K-1``, which gives the same value as the
    Anthology code's ``1..K`` because W1 is translation invariant).  ``p`` and
    ``q`` are renormalised first; NaN if either has no mass.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"distributions must be 1-D and the same length, got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0 or not (np.isfinite(p).all() and np.isfinite(q).all()):
        return float("nan")
    x = option_positions(p.size, positions, normalize=normalize)
    order = np.argsort(x, kind="stable")
    x, p, q = x[order], p[order] / p.sum(), q[order] / q.sum()
    cdf_gap = np.abs(np.cumsum(p) - np.cumsum(q))[:-1]
    return float(np.sum(cdf_gap * np.diff(x)))


# --- Batched forms ----------------------------------------------------------
#
# Split-half lower bounds and bootstrap replicates evaluate the same statistic
# on many subsamples of one data set.  A subsample is exactly a vector of
# *frequency counts* per respondent (0/1 for a half, multinomial counts for a
# bootstrap resample), so the functions below take optional ``counts`` of shape
# ``[N]`` or ``[B, N]`` and return one result per row of counts: a resampled
# row counted c times contributes c * w to every weighted sum and c * w^2 to the
# sums of squared weights -- identical to duplicating it.  This turns hundreds
# of small numpy calls into a few batched matrix products.


def frequency_weights(n: int, weights, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(f, f * w, f * w^2)`` broadcast to ``[..., N]``."""
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    f = np.ones(n) if counts is None else np.asarray(counts, dtype=float)
    if w.shape[-1] != n or f.shape[-1] != n:
        raise ValueError(f"weights and counts must have {n} entries (one per respondent)")
    return f, f * w, f * w * w


class OptionIndicators:
    """0/1 indicators of the answers of N respondents to Q questions, ``[N, Q * K_max]``.

    Prepared once and reused for every subsample (:func:`weighted_distributions`
    with ``counts``); ``take`` selects respondents.
    """

    def __init__(self, answers: np.ndarray, n_options: Sequence[int]):
        a = np.asarray(answers, dtype=float)
        if a.ndim != 2:
            raise ValueError(f"expected a [respondents, questions] matrix of option indices, got shape {a.shape}")
        k = np.asarray(n_options, dtype=np.int64)
        n, nq = a.shape
        if k.shape != (nq,):
            raise ValueError(f"expected {nq} option counts (one per question), got {k.shape[0]}")
        self.n_options = k
        self.kmax = int(k.max())
        valid = np.isfinite(a) & (a >= 0)
        rows, cols = np.nonzero(valid)
        idx = a[rows, cols].astype(np.int64)
        if (idx >= k[cols]).any():
            raise ValueError("answer index out of range for its question's options")
        self.onehot = np.zeros((n, nq * self.kmax))
        self.onehot[rows, cols * self.kmax + idx] = 1.0

    def __len__(self) -> int:
        return self.onehot.shape[0]

    def take(self, rows: np.ndarray) -> OptionIndicators:
        out = object.__new__(OptionIndicators)
        out.n_options, out.kmax, out.onehot = self.n_options, self.kmax, self.onehot[rows]
        return out


def weighted_distributions(
    answers: np.ndarray | OptionIndicators,
    n_options: Sequence[int] | None = None,
    weights: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """All questions at once: row ``q`` is ``weighted_distribution(answers[:, q], n_options[q], weights)``.

    ``answers`` is ``[N, Q]`` (or prepared :class:`OptionIndicators`); the
    result is ``[..., Q, max K]`` (leading dimensions from ``counts``, see the
    batched forms above), zero-padded beyond each question's options, NaN
    where nobody answered.
    """
    ind = answers if isinstance(answers, OptionIndicators) else OptionIndicators(answers, n_options)
    _, fw, _ = frequency_weights(len(ind), weights, counts)
    mass = (fw @ ind.onehot).reshape(*fw.shape[:-1], ind.n_options.size, ind.kmax)
    totals = mass.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, mass / totals, np.nan)


def wasserstein_many(
    p: np.ndarray,
    q: np.ndarray,
    positions: Sequence[Sequence[float] | None] | None = None,
    n_options: Sequence[int] | None = None,
    *,
    normalize: bool = True,
) -> np.ndarray:
    """Row-wise :func:`wasserstein` for ``[..., Q, K_max]`` zero-padded distribution arrays.

    Question ``j`` uses its first ``n_options[j]`` entries (default: all) and
    ``positions[j]`` (default ``0..K_j-1``).  Same formula as :func:`wasserstein`
    (area between the CDFs), vectorised: padding gets the question's largest
    position, so it adds no area.  Returns ``[..., Q]``, NaN where a
    distribution has no mass.
    """
    p, q = np.broadcast_arrays(np.asarray(p, dtype=float), np.asarray(q, dtype=float))
    nq, kmax = p.shape[-2:]
    ks = [kmax] * nq if n_options is None else list(n_options)
    positions = positions if positions is not None else [None] * nq
    x = np.empty((nq, kmax))
    for j, (k, pos) in enumerate(zip(ks, positions, strict=True)):
        xj = option_positions(k, pos, normalize=normalize)
        x[j, :k] = xj
        x[j, k:] = xj.max()
    order = np.argsort(x, axis=-1, kind="stable")
    x = np.take_along_axis(x, order, axis=-1)
    order = np.broadcast_to(order, p.shape)
    p = np.take_along_axis(p, order, axis=-1)
    q = np.take_along_axis(q, order, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(axis=-1, keepdims=True)
        q = q / q.sum(axis=-1, keepdims=True)
        gap = np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1))[..., :-1]
        d = np.sum(gap * np.diff(x, axis=-1), axis=-1)
    ok = np.isfinite(p).all(axis=-1) & np.isfinite(q).all(axis=-1)
    return np.where(ok, d, np.nan)


def mean_wasserstein(
    human: Sequence[np.ndarray],
    persona: Sequence[np.ndarray],
    positions: Sequence[Sequence[float] | None] | None = None,
    *,
    normalize: bool = True,
) -> float:
    """Representativeness: ``mean_q W1(human_q, persona_q)`` over questions (NaN ones skipped)."""
    positions = positions if positions is not None else [None] * len(human)
    d = [wasserstein(h, v, x, normalize=normalize) for h, v, x in zip(human, persona, positions, strict=True)]
    d = [x for x in d if np.isfinite(x)]
    return float(np.mean(d)) if d else float("nan")
