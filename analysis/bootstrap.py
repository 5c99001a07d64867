"""Percentile bootstrap confidence intervals of any statistic of one or more samples.

Pure numpy (pandas samples are resampled by row); the method is in
:func:`bootstrap_ci`'s docstring.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


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
