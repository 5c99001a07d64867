"""Response caching in the store, and replay.

``CachedEngine`` answers every request it has seen before from the SQLite
store and sends only the misses, as one batch, to the real engine. The real
engine is built lazily, so a run whose every request is cached never loads a
model (a re-run is served in seconds). With no engine at all it is the replay
engine: a miss is an error, never an LLM call.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from simulation.store import Store, dumps

from .base import (
    Engine,
    EngineError,
    GenerateRequest,
    Generation,
    LoglikRequest,
    OptionRequest,
    OptionResult,
)


class ReplayMiss(EngineError):
    pass


class CachedEngine(Engine):
    def __init__(
        self,
        store: Store,
        fingerprint: dict,
        factory: Callable[[], Engine] | None,
        *,
        exact_distributions: bool = True,
    ) -> None:
        super().__init__()
        self.store = store
        self._fingerprint = fingerprint
        self._factory = factory
        self._inner: Engine | None = None
        self.kind = fingerprint.get("kind", "cached")
        self.model = fingerprint.get("model", "")
        self.exact_distributions = exact_distributions
        self.hits = 0
        self.misses = 0

    def fingerprint(self) -> dict:
        return dict(self._fingerprint)

    @property
    def inner(self) -> Engine:
        if self._inner is None:
            if self._factory is None:
                raise ReplayMiss("replay: a request is not in the log (replay never calls an engine)")
            self._inner = self._factory()
        return self._inner

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def _key(self, op: str, request) -> str:
        payload = dumps({"engine": self._fingerprint, "op": op, "request": request.key()})
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cached(self, op: str, requests: list, call, decode, encode) -> list:
        if not requests:
            return []
        keys = [self._key(op, r) for r in requests]
        found = self.store.get_responses(list(dict.fromkeys(keys)))
        missing_idx = [i for i, k in enumerate(keys) if k not in found]
        # Identical requests inside one batch go to the engine once.
        unique: dict[str, int] = {}
        for i in missing_idx:
            unique.setdefault(keys[i], i)
        self.hits += len(requests) - len(missing_idx)
        if unique:
            todo = [requests[i] for i in unique.values()]
            self.misses += len(todo)
            self.stats.record(op, len(todo))
            answers = call(self.inner, todo)
            rows = []
            for key, req, ans in zip(unique.keys(), todo, answers):
                found[key] = encode(ans)
                rows.append({"key": key, "engine": self.kind, "op": op, "request": req.key(), "response": found[key]})
            self.store.put_responses(rows)
        return [decode(found[k]) for k in keys]

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        return self._cached(
            "option_probs", requests, lambda e, r: e.option_probs(r), OptionResult.from_json, lambda a: a.to_json()
        )

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        return self._cached("generate", requests, lambda e, r: e.generate(r), Generation.from_json, lambda a: a.to_json())

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        return self._cached("loglikelihood", requests, lambda e, r: e.loglikelihood(r), float, float)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
