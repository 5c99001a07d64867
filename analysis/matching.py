"""Matching virtual personas to human respondents (Anthology, Moon et al. 2024, section 3).

Each persona has, per demographic trait ``t``, a probability vector over the
trait's options (from its demographic survey, refusal dropped).  The edge
weight between human ``h`` and persona ``v`` is the likelihood that the persona
shares the human's demographics::

    w(h, v) = prod_t P_v(t = c_{h,t})

where a human who refused trait ``t`` (``c_{h,t} = -1``) contributes the
uniform factor ``1 / K_t``.

Methods:

* ``greedy``: each human takes ``argmax_v w(h, v)``, *with replacement* (one
  persona may serve several humans).  Ties go to the lowest persona index.
* ``max_weight``: a one-to-one assignment maximising ``sum_h w(h, v(h))`` --
  the objective the paper states (Hungarian algorithm) -- with
  ``scipy.optimize.linear_sum_assignment``; needs at least as many personas as
  humans.  ``objective="log_weight"`` maximises ``sum_h log w`` (the joint
  likelihood) instead; it is not the paper's objective and is offered for
  comparison only.
* ``random``: a seeded baseline, one-to-one (without replacement) when there
  are at least as many personas as humans, with replacement otherwise.

Scale (``benchmarks/bench_matching.py``, 40,000 personas x 5,000 humans x 9
traits, 2 busy cores): greedy about 3 s and 0.45 GB peak, max-weight about
12 s and 1.7 GB peak -- the ``H x V`` float64 weight matrix (1.6 GB) is the
only large allocation; greedy never holds more than a 256 MB block of it. A run
checks that the matrix fits in the memory available before its first LLM call
(:func:`max_weight_bytes`, ``scenarios.population.check_sizes``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.errors import PersonaeError

METHODS = ("greedy", "max_weight", "random")

# log P for P = 0.  A finite stand-in for -inf keeps the one-hot matrix product
# below exact (0 * -inf would be NaN) while still sending the edge weight to
# exactly 0 after exponentiation (log-probabilities of positive float64 values
# are >= -745).  Exact weights of the chosen pairs are recomputed with -inf.
_LOG_ZERO = -1.0e4

# Rows of the H x V weight matrix computed per block: bounds the temporary
# memory of the one-hot products to about _BLOCK_BYTES.
_BLOCK_BYTES = 256 * 2**20


class MatchingError(PersonaeError, ValueError):
    """Inconsistent matching inputs; the message is one line."""


@dataclass(frozen=True)
class WeightStats:
    """Summary of the edge weights of the matched pairs."""

    mean: float
    median: float
    min: float
    mean_log: float
    n_unique_personas: int


@dataclass(frozen=True)
class MatchResult:
    """Human ``h`` is matched to persona ``persona_index[h]`` with edge weight ``weight[h]``."""

    method: str
    persona_index: np.ndarray  # [H] int64
    log_weight: np.ndarray  # [H] float64, exact (may be -inf when a probability is 0)
    traits: tuple[str, ...]
    n_personas: int
    objective: str = "weight"
    seed: int | None = None

    @property
    def n_humans(self) -> int:
        return int(self.persona_index.size)

    @property
    def weight(self) -> np.ndarray:
        return np.exp(self.log_weight)

    @property
    def pairs(self) -> np.ndarray:
        """``[H, 2]`` array of (human index, persona index)."""
        return np.column_stack([np.arange(self.n_humans), self.persona_index])

    @property
    def stats(self) -> WeightStats:
        w = self.weight
        with np.errstate(divide="ignore"):
            mean_log = float(np.mean(self.log_weight))
        return WeightStats(
            mean=float(w.mean()),
            median=float(np.median(w)),
            min=float(w.min()),
            mean_log=mean_log,
            n_unique_personas=int(np.unique(self.persona_index).size),
        )


def _prepare(
    persona_probs: Mapping[str, np.ndarray],
    human_codes: Mapping[str, np.ndarray],
) -> tuple[tuple[str, ...], list[np.ndarray], np.ndarray, int, int]:
    """Validate inputs; return traits, per-trait log-prob tables [K_t, V], codes [H, T], V, H."""
    traits = tuple(human_codes)
    if not traits:
        raise MatchingError("no demographic traits to match on")
    missing = [t for t in traits if t not in persona_probs]
    if missing:
        raise MatchingError(f"persona survey has no trait '{missing[0]}' (persona traits: {', '.join(persona_probs)})")
    logs, codes, n_personas, n_humans = [], [], None, None
    for t in traits:
        p = np.asarray(persona_probs[t], dtype=np.float64)
        c = np.asarray(human_codes[t])
        if p.ndim != 2 or p.shape[1] < 1:
            raise MatchingError(f"trait '{t}': persona probabilities must be a [personas, options] matrix, got shape {p.shape}")
        if n_personas is None:
            n_personas, n_humans = p.shape[0], c.shape[0]
        if p.shape[0] != n_personas:
            raise MatchingError(f"trait '{t}': {p.shape[0]} persona rows, expected {n_personas} like the other traits")
        if c.ndim != 1 or c.shape[0] != n_humans:
            raise MatchingError(f"trait '{t}': human codes must be a vector of {n_humans} values, got shape {c.shape}")
        if not np.all(np.isfinite(p)) or (p < 0).any():
            raise MatchingError(f"trait '{t}': persona probabilities must be finite and >= 0")
        sums = p.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            raise MatchingError(f"trait '{t}': persona {int(np.flatnonzero(sums <= 0)[0])} has no probability mass on any option")
        c = c.astype(np.int64)
        k = p.shape[1]
        if (c < -1).any() or (c >= k).any():
            bad = c[(c < -1) | (c >= k)][0]
            raise MatchingError(f"trait '{t}': human code {bad} out of range (0..{k - 1}, or -1 for refusal)")
        # Rows are renormalised: the caller drops the persona's refusal option.
        with np.errstate(divide="ignore"):
            logs.append(np.log(p / sums).T.copy())  # [K_t, V]
        codes.append(c)
    if n_personas == 0 or n_humans == 0:
        raise MatchingError(f"need at least one persona and one human (got {n_personas} personas, {n_humans} humans)")
    return traits, logs, np.column_stack(codes), int(n_personas), int(n_humans)


class _LogWeights:
    """Computes rows of ``log w(h, v)`` as one matrix product per block.

    ``log w(h, .) = sum_t logP_t[c_{h,t}, .]`` is a one-hot row vector (one 1 per
    answered trait) times the stacked log-probability table -- a single BLAS
    call per block, about 10x faster than gathering and adding rows per trait.
    Refusals get no one-hot entry and the constant ``-log K_t`` instead.
    """

    def __init__(self, logs: list[np.ndarray], codes: np.ndarray):
        self.table = np.maximum(np.concatenate(logs, axis=0), _LOG_ZERO)  # [sum K_t, V]
        sizes = np.array([lg.shape[0] for lg in logs])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.codes = codes
        self.refusal_const = ((codes < 0) * -np.log(sizes)).sum(axis=1)  # [H]

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        c = self.codes[start:stop]
        onehot = np.zeros((stop - start, self.table.shape[0]))
        rows, cols = np.nonzero(c >= 0)
        onehot[rows, self.offsets[cols] + c[rows, cols]] = 1.0
        out = np.matmul(onehot, self.table, out=out)
        out += self.refusal_const[start:stop, None]
        return out


def _pair_log_weights(logs: list[np.ndarray], codes: np.ndarray, persona_index: np.ndarray) -> np.ndarray:
    """Exact ``log w(h, v(h))`` for the chosen pairs (-inf where a probability is 0)."""
    total = np.zeros(codes.shape[0])
    for t, lg in enumerate(logs):
        c = codes[:, t]
        answered = c >= 0
        total[answered] += lg[c[answered], persona_index[answered]]
        total[~answered] -= np.log(lg.shape[0])
    return total


def _block_rows(n_personas: int) -> int:
    return max(1, _BLOCK_BYTES // (8 * n_personas))


def edge_log_weights(persona_probs: Mapping[str, np.ndarray], human_codes: Mapping[str, np.ndarray]) -> np.ndarray:
    """The full ``[H, V]`` matrix of ``log w(h, v)`` (zero probabilities floored at -1e4).

    Meant for inspection and small problems; :func:`match` never needs it whole
    for ``greedy`` and builds the weights in place for ``max_weight``.
    """
    _, logs, codes, n_personas, n_humans = _prepare(persona_probs, human_codes)
    lw = _LogWeights(logs, codes)
    out = np.empty((n_humans, n_personas))
    step = _block_rows(n_personas)
    for s in range(0, n_humans, step):
        lw.block(s, min(n_humans, s + step), out=out[s : s + step])
    return out


def match(
    persona_probs: Mapping[str, np.ndarray],
    human_codes: Mapping[str, np.ndarray],
    method: str = "greedy",
    *,
    seed: int = 0,
    objective: str = "weight",
) -> MatchResult:
    """Match humans to personas.

    ``persona_probs``: trait -> ``[V, K_t]`` probabilities over the trait's
    options (rows are renormalised).  ``human_codes``: trait -> ``[H]`` option
    index, -1 = refused / missing.  The traits matched on are those of
    ``human_codes``; extra persona traits are ignored.  ``seed`` is used by
    ``random`` only.  ``objective`` (``max_weight`` only): ``"weight"`` =
    maximise ``sum w`` as in the paper, ``"log_weight"`` = maximise ``sum log w``.
    """
    if method not in METHODS:
        raise MatchingError(f"unknown matching method '{method}' (choose from {', '.join(METHODS)})")
    if objective not in ("weight", "log_weight"):
        raise MatchingError(f"unknown objective '{objective}' (choose 'weight' or 'log_weight')")
    traits, logs, codes, n_personas, n_humans = _prepare(persona_probs, human_codes)

    if method == "random":
        rng = np.random.default_rng(seed)
        chosen = rng.choice(n_personas, size=n_humans, replace=n_personas < n_humans)
    elif method == "greedy":
        # argmax of w equals argmax of log w: no exponentials needed.
        lw = _LogWeights(logs, codes)
        chosen = np.empty(n_humans, dtype=np.int64)
        step = _block_rows(n_personas)
        buf = np.empty((min(step, n_humans), n_personas))
        for s in range(0, n_humans, step):
            e = min(n_humans, s + step)
            chosen[s:e] = np.argmax(lw.block(s, e, out=buf[: e - s]), axis=1)
    else:
        chosen = _max_weight(logs, codes, n_personas, n_humans, objective)

    chosen = np.asarray(chosen, dtype=np.int64)
    return MatchResult(
        method=method,
        persona_index=chosen,
        log_weight=_pair_log_weights(logs, codes, chosen),
        traits=traits,
        n_personas=n_personas,
        objective=objective if method == "max_weight" else "weight",
        seed=seed if method == "random" else None,
    )


def max_weight_bytes(n_humans: int, n_personas: int) -> int:
    """Memory ``max_weight`` needs at its peak: the dense ``H x V`` float64 weight
    matrix that scipy's exact solver takes whole (842 MB at 10,260 x 10,260;
    3.0 GB at 10,000 x 40,000), ``8 H V`` bytes. Greedy holds at most a 256 MB block."""
    return 8 * int(n_humans) * int(n_personas)


def available_memory() -> int | None:
    """Bytes the OS can give this process now without swapping (Linux's
    ``MemAvailable``); None where the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _max_weight(logs: list[np.ndarray], codes: np.ndarray, n_personas: int, n_humans: int, objective: str) -> np.ndarray:
    if n_personas < n_humans:
        raise MatchingError(
            f"max_weight matching is one-to-one and needs at least as many personas as humans "
            f"(got {n_personas} personas for {n_humans} humans); generate more personas or use greedy"
        )
    lw = _LogWeights(logs, codes)
    cost = np.empty((n_humans, n_personas))
    step = _block_rows(n_personas)
    for s in range(0, n_humans, step):
        lw.block(s, min(n_humans, s + step), out=cost[s : s + step])
    if objective == "weight":
        # w is a product of up to ~10 probabilities, so it can underflow float64 when
        # read straight from log-probabilities; it never overflows.  Working in log
        # space and dividing every weight by the largest one (subtracting the global
        # max of log w) keeps the weights in (0, 1] without changing which
        # assignment maximises sum w (a common positive factor).  Weights that still
        # underflow to 0 are below 1e-308 of the best edge: they cannot change a
        # float64 sum that the best edges dominate.
        cost -= cost.max()
        np.exp(cost, out=cost)
    # Minimise -w in place: linear_sum_assignment(maximize=True) would first copy
    # the H x V matrix (1.6 GB at 5,000 x 40,000); negating ours avoids the copy.
    np.negative(cost, out=cost)
    rows, cols = linear_sum_assignment(cost)
    del cost
    chosen = np.empty(n_humans, dtype=np.int64)
    chosen[rows] = cols
    return chosen


def match_study(
    study,
    persona_probs: Mapping[str, np.ndarray],
    method: str = "greedy",
    *,
    seed: int = 0,
    objective: str = "weight",
) -> MatchResult:
    """:func:`match` on a loaded :class:`analysis.studies.HumanStudy` (all of its traits).

    Checks that each persona matrix has one column per option of the study's
    trait (the trait ``question`` / ``options`` the personas were surveyed with).
    """
    for t in study.traits:
        if t.name in persona_probs:
            k = np.asarray(persona_probs[t.name]).shape[-1]
            if k != t.n_options:
                raise MatchingError(
                    f"trait '{t.name}': persona probabilities have {k} columns but the study lists "
                    f"{t.n_options} options {list(t.options)}"
                )
    return match(persona_probs, study.trait_codes(), method, seed=seed, objective=objective)
