"""Inter-item correlations, the Frobenius distance between two correlation matrices, and Cronbach's alpha.

Every function is pure numpy and documents its formula.  Items are the columns
of an ``[N, Q]`` matrix of option positions (NaN = no answer), with survey
weights as in :mod:`analysis.distributions`; the pairwise sums also take
frequency ``counts`` (``[N]`` or ``[B, N]``: one result per subsample, the
batched forms of :mod:`analysis.distributions`).

Source: Anthology (Moon et al., EMNLP 2024) for Frobenius / alpha and the
human lower bound.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.distributions import frequency_weights


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
    f, fw, fw2 = frequency_weights(nr, weights, counts)
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
