"""Item scores of the individual level: how close a persona's option
distribution is to its own respondent's answer (nominal items: expected exact
agreement; ordinal: 1 - expected distance on [0, 1] positions; the formulas are
in :mod:`analysis.individual`). Pure numpy.
"""
from __future__ import annotations

import numpy as np


def normalise(dists: np.ndarray) -> np.ndarray:
    total = dists.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, dists / np.where(total > 0, total, 1), np.nan)


def item_scores(dists, answers, positions, nominal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, exact, distance)``, each ``[N, Q]``.

    ``dists [N, Q, K]``: option distributions (renormalised; a row without mass
    is no answer); ``answers [N, Q]``: the respondents' option indices (NaN =
    missing); ``positions [Q, K]``: option positions on [0, 1] (padding
    ignored); ``nominal [Q]``. ``exact = p_h``; ``distance = sum_k p_k |x_k -
    x_h|`` (NaN for nominal items); ``s`` = exact on nominal items and
    ``1 - distance`` on ordinal ones. NaN where either side has no answer.
    """
    p = normalise(np.asarray(dists, dtype=float))
    h = np.asarray(answers, dtype=float)
    x = np.asarray(positions, dtype=float)
    nominal = np.asarray(nominal, dtype=bool)
    ok = np.isfinite(h) & np.isfinite(p).all(axis=-1)
    hi = np.where(ok, h, 0).astype(np.int64)
    exact = np.take_along_axis(np.nan_to_num(p), hi[..., None], axis=-1)[..., 0]
    xh = np.take_along_axis(np.broadcast_to(x, p.shape), hi[..., None], axis=-1)
    distance = (np.nan_to_num(p) * np.abs(np.nan_to_num(x)[None] - xh)).sum(axis=-1)
    exact = np.where(ok, exact, np.nan)
    distance = np.where(ok & ~nominal[None], distance, np.nan)
    score = np.where(nominal[None], exact, 1.0 - distance)
    return np.where(ok, score, np.nan), exact, distance


def one_hot(answers, k: int) -> np.ndarray:
    """``[N, Q]`` option indices (NaN = missing) -> ``[N, Q, K]`` (all zero where missing)."""
    a = np.asarray(answers, dtype=float)
    out = np.zeros((*a.shape, k))
    ok = np.isfinite(a)
    idx = np.nonzero(ok)
    out[(*idx, a[ok].astype(np.int64))] = 1.0
    return out


def person_means(scores: np.ndarray) -> np.ndarray:
    """Mean over each person's scored items; NaN for a person with none."""
    s = np.asarray(scores, dtype=float)
    n = np.isfinite(s).sum(axis=1)
    return np.where(n > 0, np.nansum(s, axis=1) / np.maximum(n, 1), np.nan)
