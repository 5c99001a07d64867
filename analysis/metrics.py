"""Fidelity metrics between human and persona answers, as the papers define them.

Every function is pure numpy and documents its formula.  Conventions:

* An *answer* is an option index ``0..K-1`` (``NaN`` = no answer / refusal).
* A *distribution* is a length-``K`` vector of non-negative masses summing to 1.
* *Positions* are the ordinal values of the options (default ``0..K-1``).  They
  enter the Wasserstein distance, correlations and Cronbach's alpha.
* *Weights* are survey weights, one per respondent (default: all ones).

Sources: Anthology (Moon et al., EMNLP 2024) for WD / Frobenius / alpha and the
human lower bound; OpinionQA / SubPOP for the [0, 1] normalisation of WD;
"Higher-order binding" (Kang et al., 2025) for the hostility, subversion and
meta-perception gaps.  Reference values from those papers are module constants
(:data:`PAPER_ATP_LOWER_BOUNDS`, :data:`HUMAN_GAP_REFERENCE`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------
# Reference values from the papers
# ---------------------------------------------------------------------------

#: Human lower bounds (split-half) for Pew ATP waves, Anthology main table:
#: WD (normalisation as in the Anthology code, positions 1..K), Frobenius, alpha.
PAPER_ATP_LOWER_BOUNDS: dict[str, dict[str, float]] = {
    "W34": {"wd": 0.057, "fro": 0.418, "alpha": 0.784},
    "W92": {"wd": 0.091, "fro": 0.411, "alpha": 0.641},
    "W99": {"wd": 0.081, "fro": 0.327, "alpha": 0.830},
}


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

# ---------------------------------------------------------------------------
# Distributions and the Wasserstein-1 distance
# ---------------------------------------------------------------------------


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


def _frequency_weights(n: int, weights, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    _, fw, _ = _frequency_weights(len(ind), weights, counts)
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


# ---------------------------------------------------------------------------
# Correlations, Frobenius distance, Cronbach's alpha
# ---------------------------------------------------------------------------


def _T(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


@dataclass(frozen=True)
class PairwiseMoments:
    """Weighted sums over pairwise complete cases for every item pair (i, j), each ``[..., Q, Q]``.

    Summing over respondents who answered both i and j: ``n`` = number of
    respondents, ``s0`` = sum w, ``s0sq`` = sum w^2, ``a[i, j]`` = sum w x_i,
    ``b[i, j]`` = sum w x_i x_j, ``c2[i, j]`` = sum w x_i^2 (x centred by the
    item mean).  The sums are linear in the respondents, so the moments of the
    complement of a subsample are ``total - subsample``.
    """

    n: np.ndarray
    s0: np.ndarray
    s0sq: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c2: np.ndarray

    def __sub__(self, other: PairwiseMoments) -> PairwiseMoments:
        return PairwiseMoments(*(getattr(self, k) - getattr(other, k) for k in ("n", "s0", "s0sq", "a", "b", "c2")))

    def corr(self) -> np.ndarray:
        """Pearson correlations: ``cov_ij / sqrt(var_i|ij var_j|ij)`` on each pair's common respondents."""
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = self.b - self.a * _T(self.a) / self.s0
            var_i = self.c2 - self.a**2 / self.s0
            var_j = _T(var_i)
            # Variances below the rounding noise of the one-pass sums count as zero.
            tiny = 1e-12 * np.maximum(np.abs(self.c2), np.abs(_T(self.c2)))
            ok = (self.n >= 2 - 1e-9) & (var_i > tiny) & (var_j > tiny)
            r = np.where(ok, cov / np.sqrt(var_i * var_j), np.nan)
        return np.clip(r, -1.0, 1.0)

    def cov(self) -> np.ndarray:
        """Covariances with the reliability-weight correction ``W - W2 / W`` (``ddof=1`` for unit weights)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            c = (self.b - self.a * _T(self.a) / self.s0) / (self.s0 - self.s0sq / self.s0)
        return np.where(self.n >= 2 - 1e-9, c, np.nan)

    def alpha(self, scales: Sequence[Sequence[int]] | None = None):
        """Cronbach's alpha ``K / (K - 1) * (1 - tr(C) / sum C)`` (float, or array for batches).

        With ``scales`` (column indices of each scale's items): the mean of the
        per-scale alphas (:meth:`scale_alphas`).
        """
        if not scales:
            return _alpha_from_cov(self.cov())
        return np.mean(self.scale_alphas(scales), axis=0)[()] if len(scales) > 1 else self.scale_alphas(scales)[0]

    def scale_alphas(self, scales: Sequence[Sequence[int]]) -> list:
        """Cronbach's alpha of each scale: the formula on the scale's items' covariance block."""
        c = self.cov()
        return [_alpha_from_cov(c[..., list(s), :][..., list(s)]) for s in scales]


class ItemProducts:
    """Per-respondent outer products of an ``[N, Q]`` item matrix, reused for every subsample.

    With ``m`` = answered (0/1) and ``z`` = value centred by the item mean
    (correlations and covariances are shift invariant; centring keeps the
    one-pass sums well conditioned), row ``r`` holds ``m_r m_r^T`` and
    ``(z_r m_r^T, z_r z_r^T, z_r^2 m_r^T)``, flattened.  Every pairwise sum is
    then a matrix product of frequency weights with these rows.  They are
    cached when they fit in about 256 MB, else rebuilt in chunks on each use.
    """

    _CACHE_FLOATS = 2**25
    _CHUNK_FLOATS = 2**23

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=float)
        if x.ndim != 2:
            raise ValueError(f"expected a [respondents, items] matrix, got shape {x.shape}")
        present = np.isfinite(x)
        self.m = present.astype(float)
        answered = self.m.sum(axis=0)
        col_mean = np.divide(np.where(present, x, 0.0).sum(axis=0), answered, out=np.zeros(x.shape[1]), where=answered > 0)
        self.z = np.where(present, x - col_mean, 0.0)
        self.n_items = x.shape[1]
        self._cache = self._products(self.m, self.z) if len(self) * 4 * self.n_items**2 <= self._CACHE_FLOATS else None

    def __len__(self) -> int:
        return self.m.shape[0]

    @staticmethod
    def _products(m: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qq = m.shape[1] ** 2
        both = (m[:, :, None] * m[:, None, :]).reshape(-1, qq)
        values = np.concatenate(
            [
                (z[:, :, None] * m[:, None, :]).reshape(-1, qq),
                (z[:, :, None] * z[:, None, :]).reshape(-1, qq),
                ((z * z)[:, :, None] * m[:, None, :]).reshape(-1, qq),
            ],
            axis=1,
        )
        return both, values

    def chunks(self):
        """``(row slice, presence products, value products)`` over all respondents."""
        if self._cache is not None:
            yield slice(0, len(self)), *self._cache
            return
        rows = max(1, self._CHUNK_FLOATS // (4 * self.n_items**2))
        for s in range(0, len(self), rows):
            part = slice(s, s + rows)
            yield part, *self._products(self.m[part], self.z[part])

    def take(self, rows: np.ndarray) -> ItemProducts:
        out = object.__new__(ItemProducts)
        out.m, out.z, out.n_items = self.m[rows], self.z[rows], self.n_items
        out._cache = None if self._cache is None else (self._cache[0][rows], self._cache[1][rows])
        return out


def pairwise_moments(x: np.ndarray | ItemProducts, weights=None, counts=None) -> PairwiseMoments:
    """The :class:`PairwiseMoments` of ``x`` (``[N, Q]``, NaN = missing), optionally per subsample.

    Each sum is ``sum_r f_r * g_r[i] * h_r[j]``: the per-respondent outer
    products (:class:`ItemProducts`, pass one to reuse it) times the
    frequency-weight vectors -- one matrix product for any number of subsamples.
    """
    prods = x if isinstance(x, ItemProducts) else ItemProducts(x)
    nr, nq = len(prods), prods.n_items
    unit = weights is None or bool(np.all(np.asarray(weights) == 1.0))
    f, fw, fw2 = _frequency_weights(nr, weights, counts)
    batch = np.broadcast_shapes(f.shape, fw.shape)[:-1]
    f, fw, fw2 = (np.ascontiguousarray(np.broadcast_to(v, (*batch, nr)).reshape(-1, nr)) for v in (f, fw, fw2))
    qq = nq * nq
    # With unit survey weights f == f*w == f*w^2: one product gives n, s0 and s0sq.
    presence_weights = f if unit else np.concatenate([f, fw, fw2])
    by_presence = np.zeros((presence_weights.shape[0], qq))
    by_value = np.zeros((fw.shape[0], 3 * qq))  # a, b, c2
    for part, both, values in prods.chunks():
        by_presence += presence_weights[:, part] @ both
        by_value += fw[:, part] @ values
    k = f.shape[0]
    shape = (*batch, nq, nq)
    if unit:
        n = s0 = s0sq = by_presence.reshape(shape)
    else:
        n, s0, s0sq = (by_presence[i * k : (i + 1) * k].reshape(shape) for i in range(3))
    a, b, c2 = (by_value[:, i * qq : (i + 1) * qq].reshape(shape) for i in range(3))
    return PairwiseMoments(n, s0, s0sq, a, b, c2)


def _alpha_from_cov(c: np.ndarray):
    k = c.shape[-1]
    total = c.sum(axis=(-2, -1))
    trace = np.trace(c, axis1=-2, axis2=-1)
    ok = np.isfinite(c).all(axis=(-2, -1)) & (total > 0) & (k >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(ok, k / max(k - 1, 1) * (1.0 - trace / total), np.nan)
    return float(alpha) if alpha.ndim == 0 else alpha


def weighted_corr(x: np.ndarray, weights: np.ndarray | None = None, counts: np.ndarray | None = None) -> np.ndarray:
    """Weighted Pearson correlation matrix of the items, pairwise complete cases.

    For each pair (i, j), over respondents who answered both, with weighted
    means ``m_i``, ``m_j`` on that subset:
    ``r_ij = sum w (x_i - m_i)(x_j - m_j) / sqrt(sum w (x_i - m_i)^2 * sum w (x_j - m_j)^2)``.
    Unweighted it equals ``pandas.DataFrame.corr()``.  Entries with fewer than
    two common respondents or zero variance are NaN.
    """
    return pairwise_moments(x, weights, counts).corr()


def weighted_cov(x: np.ndarray, weights: np.ndarray | None = None, counts: np.ndarray | None = None) -> np.ndarray:
    """Weighted covariance matrix of the items, pairwise complete cases.

    ``c_ij = sum w (x_i - m_i)(x_j - m_j) / (W - W2 / W)`` over respondents who
    answered both, with ``W = sum w`` and ``W2 = sum w^2`` on that subset
    (reliability-weight correction; with unit weights this is the usual
    ``ddof=1`` covariance, i.e. ``pandas.DataFrame.cov()``).
    """
    return pairwise_moments(x, weights, counts).cov()


def frobenius_distance(corr_a: np.ndarray, corr_b: np.ndarray):
    """Consistency: ``||C_a - C_b||_F = sqrt(sum_ij (C_a,ij - C_b,ij)^2)`` over the full matrices.

    The full matrix is used (each off-diagonal pair counts twice), as in the
    Anthology code.  If any correlation of either matrix is undefined (NaN: an
    item with no variance, e.g. personas who all give the same answer, or no
    respondents in common) the distance is undefined too and NaN is returned --
    never a number computed from made-up entries (filling them with 0 turned
    all-undefined matrices into a perfect 0.0).  With fewer than two items
    there is no inter-item correlation to compare and the distance is NaN too
    (a 1x1 matrix of ones would read as perfect agreement).  Leading batch
    dimensions give one distance each.
    """
    a = np.asarray(corr_a, dtype=float)
    b = np.asarray(corr_b, dtype=float)
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"correlation matrices differ in shape: {a.shape} vs {b.shape}")
    d = np.sqrt(np.sum((a - b) ** 2, axis=(-2, -1)))
    if a.shape[-1] < 2:
        d = np.full_like(d, np.nan)
    return float(d) if d.ndim == 0 else d


def cronbach_alpha(x: np.ndarray, weights: np.ndarray | None = None, counts: np.ndarray | None = None):
    """Cronbach's alpha of a set of items (columns of ``x``).

    ``alpha = K / (K - 1) * (1 - tr(C) / sum_ij C_ij)`` with ``C`` the item
    covariance matrix -- the textbook ``1 - sum var_i / var(sum of items)``
    when answers are complete.  ``C`` is :func:`weighted_cov` (pairwise
    complete cases, like ``pingouin.cronbach_alpha`` which the Anthology code
    calls); survey weights, if given, weight each respondent's contribution to
    every covariance (our weighted variant; unweighted it is the usual alpha).
    Items are used as coded: reverse-code an item by reversing its positions
    (a study's ``scales: {s: {reverse: [...]}}`` does that).
    """
    return pairwise_moments(x, weights, counts).alpha()


def corr_and_alpha(x: np.ndarray, weights: np.ndarray | None = None, counts: np.ndarray | None = None):
    """``(weighted_corr(x, w), cronbach_alpha(x, w))`` from one pass over the data."""
    m = pairwise_moments(x, weights, counts)
    return m.corr(), m.alpha()


# ---------------------------------------------------------------------------
# Effect sizes and partisan gaps
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Bootstrap confidence intervals
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfidenceInterval:
    """Point estimate and percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int


def _take_rows(sample, idx: np.ndarray):
    return sample.iloc[idx] if hasattr(sample, "iloc") else np.asarray(sample)[idx]


def bootstrap_ci(
    fn: Callable[..., float],
    *samples,
    n: int = 1000,
    seed: int = 0,
    paired: bool = False,
    level: float = 0.95,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``fn(*samples)``.

    Each replicate resamples the rows (first axis) of every sample with
    replacement, keeping its size, and evaluates ``fn`` on the resampled
    samples; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    percentiles of the finite replicate values.  Samples are resampled
    independently unless ``paired=True``, in which case all samples share the
    same row indices (use it for matched human/persona rows, or data and their
    weights).  ``seed`` makes the interval reproducible.
    """
    cis = bootstrap_cis(lambda *s: {"value": fn(*s)}, *samples, n=n, seed=seed, paired=paired, level=level)
    return cis["value"]


def bootstrap_cis(
    fn: Callable[..., Mapping[str, float]],
    *samples,
    n: int = 1000,
    seed: int = 0,
    paired: bool = False,
    level: float = 0.95,
) -> dict[str, ConfidenceInterval]:
    """:func:`bootstrap_ci` for a function returning several named statistics.

    All statistics are computed on the same resamples (one pass instead of one
    per statistic).  Returns name -> :class:`ConfidenceInterval`.
    """
    if not samples:
        raise ValueError("bootstrap needs at least one sample")
    sizes = [len(s) for s in samples]
    if paired and len(set(sizes)) != 1:
        raise ValueError(f"paired bootstrap needs samples of equal length, got {sizes}")
    estimate = {k: float(v) for k, v in fn(*samples).items()}
    rng = np.random.default_rng(seed)
    stats = {k: np.empty(n) for k in estimate}
    for b in range(n):
        if paired:
            idx = rng.integers(0, sizes[0], size=sizes[0])
            resampled = [_take_rows(s, idx) for s in samples]
        else:
            resampled = [_take_rows(s, rng.integers(0, k, size=k)) for s, k in zip(samples, sizes)]
        for k, v in fn(*resampled).items():
            stats[k][b] = v
    tail = (1.0 - level) / 2.0 * 100.0
    out = {}
    for k, values in stats.items():
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100.0 - tail]) if values.size else (float("nan"), float("nan"))
        out[k] = ConfidenceInterval(estimate[k], float(low), float(high), level, n)
    return out
