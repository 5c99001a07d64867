"""Rank aggregation: Schulze, Borda and plurality.

Every method takes a *rankings* array of shape ``(participants, candidates)``
where lower is better (rank 1 = best; any monotone encoding works, only
comparisons within a row matter) and equal values are ties. Each returns a
:class:`SocialChoiceResult` with the winner, the full untied order and the
ranking *with* ties before tie-breaking.

Tie-breaking (``tie_break``), applied only inside groups the method leaves tied:

* ``"tbrc"`` (default for Schulze) -- Schulze's *tie-breaking ranking of the
  candidates*: ballots are taken in a seeded random order and each one orders
  the candidates that are still tied (the first ballot that separates two
  candidates decides); candidates no ballot separates fall back to ``"random"``.
  The Habermas Machine uses this rule.
* ``"random"`` -- a seeded random permutation of the candidates is the priority
  (``numpy.random.default_rng(seed).permutation(n)``, earlier = better).
* ``"index"`` -- the lower candidate index wins (no seed needed).

The same ``seed`` always gives the same result.

Input, checked as the Habermas Machine checks it (``habermas_machine/social_choice``,
Tessler et al. 2024): a 2-D array, one row per voter; a row of ``-1`` is a voter
who did not rank (left out, as their "mock" ballot); ``-1`` in part of a row is
an error (a partial ballot); other negative or non-finite ranks are errors; no
voter left is an error -- the Habermas Machine returns a seed-dependent random
order there, which would read as a decision. Pairwise counts given to
:func:`strongest_paths` must be square with a zero diagonal. Unlike the Habermas
Machine, ranks need not be the dense integers 0..k (any monotone encoding, floats
included, gives the same result).

Conventions beside the Habermas Machine's (``Schulze.aggregate``, tie-breaking
``TBRC``):

* winners (rank 1 here, 0 there) are the same set: the candidates no one beats
  on strongest paths. Below them the Habermas Machine ranks by the number of
  candidates each one weakly beats (``p[x,y] >= p[y,x]``); here the strict
  beatpath relation is layered (see :func:`schulze`). The two can order the
  lower candidates differently (75 of 3,000 random small profiles in our check).
* ``tbrc``: both shuffle the ballots with ``numpy.random.default_rng(seed)``
  (the same ballot order for the same seed) and let the first ballot that
  separates two tied candidates decide.
* the last, random step differs: the Habermas Machine draws a shuffled
  ``arange(n)`` and uses it as a ballot (candidate ``i`` gets rank ``perm[i]``);
  here the permutation is the priority order (candidate ``perm[0]`` first). Both
  are uniform, so only the draw for a given seed differs. The Habermas Machine
  has no ``"index"`` rule and defaults ``seed`` to ``None`` (unseeded); here 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import PersonaeError


class SocialChoiceError(PersonaeError, ValueError):
    """Rankings (or pairwise counts) that no voting rule should be run on; one line."""

ABSTAIN = -1  # a whole row of it: a voter who did not rank (the Habermas Machine's mock ballot)

TIE_BREAKS = ("tbrc", "random", "index")


@dataclass
class SocialChoiceResult:
    method: str
    winner: int  # candidate index after tie-breaking
    order: np.ndarray  # candidate indices, best first, no ties
    ranks: np.ndarray  # per candidate, 1 = best; tied candidates share a rank (dense)
    scores: np.ndarray  # per candidate, higher is better (method-specific)
    tie_break: str
    details: dict = field(default_factory=dict)

    @property
    def tied(self) -> bool:
        return len(np.unique(self.ranks)) < len(self.ranks)

    @property
    def winners(self) -> np.ndarray:
        """Every candidate ranked first before tie-breaking."""
        return np.flatnonzero(self.ranks == 1)

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "winner": int(self.winner),
            "order": [int(i) for i in self.order],
            "ranks": [int(r) for r in self.ranks],
            "scores": [float(s) for s in self.scores],
            "tie_break": self.tie_break,
        }


def _check(rankings) -> np.ndarray:
    """The ballots to count: ``(voters, candidates)``, abstaining rows left out."""
    try:
        r = np.asarray(rankings, dtype=np.float64)
    except (ValueError, TypeError):
        raise SocialChoiceError("rankings: expected one row of ranks per voter, all rows of the same length (lower = better)") from None
    if r.ndim != 2 or r.shape[1] < 1:
        raise SocialChoiceError(f"rankings: expected shape (voters, candidates), got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise SocialChoiceError("rankings: ranks must be finite (lower = better)")
    abstain = r == ABSTAIN
    partial = abstain.any(axis=1) & ~abstain.all(axis=1)
    if partial.any():
        v = int(np.flatnonzero(partial)[0])
        raise SocialChoiceError(f"rankings[{v}]: a partial ballot: -1 marks a voter who did not rank and must fill the whole row")
    r = r[~abstain.all(axis=1)]
    if (r < 0).any():
        raise SocialChoiceError("rankings: ranks must be >= 0 (lower = better; a row of -1 is a voter who did not rank)")
    if len(r) == 0:
        raise SocialChoiceError("rankings: no voters (every ballot is empty or -1): there is nothing to aggregate")
    return r


def dense_ranks(scores) -> np.ndarray:
    """Dense ranks of *scores* where higher is better: [3, 5, 5, 1] -> [3, 1, 1, 4]."""
    _, inverse = np.unique(-np.asarray(scores, dtype=np.float64), return_inverse=True)
    return inverse.astype(np.int64) + 1


def pairwise_preferences(rankings) -> np.ndarray:
    """``d[x, y]`` = number of participants ranking x strictly above y."""
    r = _check(rankings)
    return (r[:, :, None] < r[:, None, :]).sum(axis=0)


def strongest_paths(d: np.ndarray) -> np.ndarray:
    """Schulze strongest-path strengths ``p`` from pairwise counts ``d``.

    A direct link x->y has strength ``d[x,y]`` if ``d[x,y] > d[y,x]`` else 0;
    the strength of a path is its weakest link and ``p[x,y]`` is the strongest
    path's strength (widest path, Floyd-Warshall with max/min). The diagonal is
    left at 0: it never changes an off-diagonal entry.
    """
    d = np.asarray(d)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise SocialChoiceError(f"pairwise counts: expected a square (candidates, candidates) array, got shape {d.shape}")
    if not np.all(np.isfinite(d)) or (d < 0).any():
        raise SocialChoiceError("pairwise counts: expected counts >= 0")
    if np.any(np.diag(d) != 0):
        raise SocialChoiceError("pairwise counts: the diagonal must be 0 (no candidate is preferred to itself)")
    p = np.where(d > d.T, d, 0).astype(np.int64)
    for k in range(p.shape[0]):
        p = np.maximum(p, np.minimum(p[:, k : k + 1], p[k : k + 1, :]))
    np.fill_diagonal(p, 0)
    return p


def _order(ranks: np.ndarray, rankings: np.ndarray, tie_break: str, seed: int | None) -> np.ndarray:
    """Untied order (best first): primary key the tied rank, then the tie-break."""
    n = len(ranks)
    if tie_break not in TIE_BREAKS:
        raise SocialChoiceError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    if tie_break == "index":
        keys = [np.arange(n)]
    else:
        rng = np.random.default_rng(seed)
        ballots = rankings[rng.permutation(len(rankings))] if tie_break == "tbrc" else rankings[:0]
        fallback = np.empty(n, dtype=np.int64)
        fallback[rng.permutation(n)] = np.arange(n)  # position in the random permutation
        keys = [*ballots, fallback]
    # np.lexsort sorts by the last key first.
    return np.lexsort([*reversed(keys), ranks]).astype(np.int64)


def _result(method, scores, ranks, rankings, tie_break, seed, **details) -> SocialChoiceResult:
    order = _order(ranks, rankings, tie_break, seed)
    return SocialChoiceResult(
        method=method,
        winner=int(order[0]),
        order=order,
        ranks=ranks,
        scores=np.asarray(scores, dtype=np.float64),
        tie_break=tie_break,
        details=details,
    )


def _layers(beats: np.ndarray) -> np.ndarray:
    """Ranks from a strict partial order: rank 1 = candidates nobody beats;
    remove them and repeat. x beats y implies rank[x] < rank[y]."""
    n = beats.shape[0]
    ranks = np.zeros(n, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    level = 0
    while left.any():
        level += 1
        top = left & ~beats[left].any(axis=0)  # not beaten by anyone still left
        ranks[top] = level
        left &= ~top
    return ranks


def schulze(rankings, tie_break: str = "tbrc", seed: int | None = 0) -> SocialChoiceResult:
    """Schulze method (beatpath).

    1. ``d[x,y]`` = #participants preferring x to y (ties count for neither).
    2. ``p[x,y]`` = strength of the strongest path from x to y, see
       :func:`strongest_paths` (link strength = winning votes).
    3. x beats y iff ``p[x,y] > p[y,x]``; Schulze (2011) proves this relation
       transitive. The winners are the candidates nobody beats.
    4. Full ranking with ties: rank 1 = the winners; remove them, the next
       unbeaten candidates get rank 2, and so on. The relation is only a
       *partial* order (two candidates with ``p[x,y] == p[y,x]`` may land on
       different levels), so this layering is the coarsest ranking where every
       beaten candidate sits below whoever beats it. ``scores[x]`` = #candidates
       x beats.

    A Condorcet winner (``d[x,y] > d[y,x]`` for all y) beats everyone, so it is
    always the unique winner.
    """
    r = _check(rankings)
    d = pairwise_preferences(r)
    p = strongest_paths(d)
    beats = p > p.T
    return _result("schulze", beats.sum(axis=1), _layers(beats), r, tie_break, seed, pairwise=d, strongest_paths=p)


def borda(rankings, tie_break: str = "tbrc", seed: int | None = 0) -> SocialChoiceResult:
    """Borda count with ties averaged.

    From each participant a candidate scores the number of candidates it is
    ranked strictly above plus half the number it is tied with:
    ``score[x] = sum_v #{y: r_vx < r_vy} + 0.5 #{y != x: r_vx == r_vy}``.
    Without ties this is the usual n-1, n-2, ..., 0 points.
    """
    r = _check(rankings)
    above = (r[:, :, None] < r[:, None, :]).sum(axis=2)
    tied = (r[:, :, None] == r[:, None, :]).sum(axis=2) - 1
    scores = (above + 0.5 * tied).sum(axis=0)
    return _result("borda", scores, dense_ranks(scores), r, tie_break, seed)


def plurality(rankings, tie_break: str = "tbrc", seed: int | None = 0) -> SocialChoiceResult:
    """Plurality: each participant gives one vote to their top choice.

    A participant with several candidates tied at the top splits the vote
    equally among them. The full ranking orders candidates by votes received
    (candidates with equal votes are tied, then tie-broken).
    """
    r = _check(rankings)
    top = r == r.min(axis=1, keepdims=True)
    scores = (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
    return _result("plurality", scores, dense_ranks(scores), r, tie_break, seed)


METHODS = {"schulze": schulze, "borda": borda, "plurality": plurality}


def aggregate(rankings, method: str = "schulze", tie_break: str = "tbrc", seed: int | None = 0) -> SocialChoiceResult:
    try:
        fn = METHODS[method]
    except KeyError:
        raise SocialChoiceError(f"unknown social choice method {method!r}; choose from {sorted(METHODS)}") from None
    return fn(rankings, tie_break=tie_break, seed=seed)


def ranks_from_scores(scores) -> np.ndarray:
    """Rankings (rank 1 = best, equal scores tied) from a (participants, candidates)
    array of scores where higher is better -- e.g. expected agreement."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    return np.stack([dense_ranks(row) for row in s])
