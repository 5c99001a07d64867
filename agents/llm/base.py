"""The engine interface every LLM backend implements.

Two batched operations carry everything a persona does:

* ``option_probs``: for each request (a shared *prefix* -- the persona's
  conditioning text -- plus a question *suffix* ending where the answer letter
  goes, and the option labels) return a probability vector over the options.
* ``generate``: free text for each prompt (max tokens, temperature, stop
  strings, seed).

A third, ``loglikelihood``, scores a given continuation (used to evaluate
representatives on ground-truth critiques).
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

from core.errors import PersonaeError
from core.seeds import consecutive_seeds


class EngineError(PersonaeError, RuntimeError):
    """A failure an end user can act on; the message is one line."""


@dataclass(frozen=True)
class OptionRequest:
    prefix: str
    suffix: str
    options: tuple[str, ...]  # labels as they must be emitted, e.g. ("A", "B", "C")

    @property
    def prompt(self) -> str:
        return self.prefix + self.suffix

    def key(self) -> dict:
        return {"prefix": self.prefix, "suffix": self.suffix, "options": list(self.options)}


@dataclass
class OptionResult:
    probs: list[float]  # renormalised over the options, sums to 1
    outside_mass: float  # probability the model put on anything but the option labels
    method: str = "logprobs"  # "logprobs" or "sampling:k"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "OptionResult":
        return cls(probs=list(d["probs"]), outside_mass=float(d["outside_mass"]), method=d.get("method", "logprobs"))


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    max_tokens: int = 256
    temperature: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    # Optional split of ``prompt`` into a reusable prefix (same text, just a hint
    # for engines that cache prefixes).
    prefix_len: int = 0

    def key(self) -> dict:
        # Built by hand, not asdict (a deep copy per field): the sampled demographic
        # survey keys ~2 million of these per bank. Same dict, so the same cache keys.
        return {"prompt": self.prompt, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "stop": list(self.stop), "seed": self.seed}


@dataclass(frozen=True)
class SampleRequest:
    """``n`` samples of one prompt, the k-th drawn with seed ``seed + k`` (mod
    2^31, ``core.seeds.consecutive_seeds``): what a served model draws in one
    request with ``n``. Cached as one answer, not ``n`` (the sampled demographic
    survey draws 40 per persona and trait)."""

    prompt: str
    n: int
    max_tokens: int = 2
    temperature: float = 1.0
    seed: int = 0
    prefix_len: int = 0  # as in GenerateRequest: the persona's text the prompt extends

    def key(self) -> dict:
        return {"prompt": self.prompt, "n": self.n, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "seed": self.seed}

    def expand(self) -> list[GenerateRequest]:
        """The ``n`` one-sample requests, on one shared prompt string."""
        return [GenerateRequest(prompt=self.prompt, max_tokens=self.max_tokens, temperature=self.temperature,
                                seed=seed, prefix_len=self.prefix_len) for seed in consecutive_seeds(self.seed, self.n)]


@dataclass
class Generation:
    text: str
    finish_reason: str = "stop"  # "stop" or "length"
    n_tokens: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Generation":
        return cls(text=d["text"], finish_reason=d.get("finish_reason", "stop"), n_tokens=int(d.get("n_tokens", 0)))


@dataclass(frozen=True)
class LoglikRequest:
    context: str
    continuation: str

    def key(self) -> dict:
        return asdict(self)


@dataclass
class EngineStats:
    """Counters every engine keeps; the console and the benchmarks read them."""

    calls: int = 0  # batched operations that reached the model
    requests: int = 0  # individual requests that reached the model
    prompt_tokens: int = 0  # tokens actually evaluated (prefix-cache hits excluded)
    cached_prompt_tokens: int = 0  # tokens served from a prefix cache
    generated_tokens: int = 0
    seconds: float = 0.0
    by_op: dict = field(default_factory=dict)

    def record(self, op: str, n: int) -> None:
        self.calls += 1
        self.requests += n
        self.by_op[op] = self.by_op.get(op, 0) + n


def renormalise(letter_probs: np.ndarray) -> tuple[list[float], float]:
    """Renormalise summed letter probabilities; return (probs, outside mass).

    ``letter_probs[i]`` is the total next-token probability of option i (all
    its variants summed). Outside mass is ``1 - sum(letter_probs)``.
    """
    p = np.asarray(letter_probs, dtype=np.float64)
    total = float(p.sum())
    if not np.isfinite(total) or total <= 0:
        n = len(p)
        return [1.0 / n] * n, 1.0
    return (p / total).tolist(), max(0.0, 1.0 - total)


class Engine(ABC):
    """Base class of every backend. Subclasses set ``kind`` and ``model``."""

    kind: str = "base"
    model: str = ""
    # Whether option_probs reads real next-token probabilities or estimates them.
    exact_distributions: bool = True

    def __init__(self) -> None:
        self.stats = EngineStats()

    @property
    def replaying(self) -> bool:
        """Whether this engine only replays stored answers (a miss is an error,
        never a model call); engines that call a model never do."""
        return False

    def fingerprint(self) -> dict:
        """What identifies this engine's outputs for caching (no secrets)."""
        return {"kind": self.kind, "model": self.model}

    def fingerprint_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True).encode()).hexdigest()[:16]

    @abstractmethod
    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]: ...

    @abstractmethod
    def generate(self, requests: list[GenerateRequest]) -> list[Generation]: ...

    def sample(self, requests: list[SampleRequest]) -> list[list[Generation]]:
        """The ``n`` samples of each request, as the ``n`` seeded generations it
        expands to (an engine that serves ``n`` draws them in one request)."""
        flat = self.generate([g for r in requests for g in r.expand()])
        out, k = [], 0
        for r in requests:
            out.append(flat[k : k + r.n])
            k += r.n
        return out

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        raise EngineError(f"engine '{self.kind}' cannot score log-likelihoods")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def option_letters(n: int) -> tuple[str, ...]:
    if not 1 <= n <= 26:
        raise ValueError(f"a question needs 1..26 options, got {n}")
    return tuple(chr(ord("A") + i) for i in range(n))


def letter_variants(letter: str) -> tuple[str, ...]:
    """Token strings counted as the same answer letter (summed)."""
    return (letter, " " + letter)
