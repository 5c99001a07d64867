"""Response caching in the store, and replay.

``CachedEngine`` answers every request it has seen before from the SQLite
store and sends only the misses, as one batch, to the real engine. Runs that
share a store claim the misses they compute (a lease in the store): a request
another run is computing is waited for, not computed twice. The real
engine is built lazily, so a run whose every request is cached never loads a
model (a re-run is served in seconds). With no engine at all it is the replay
engine: a miss is an error, never an LLM call.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterable, Protocol

from core.canonical import dumps
from core.errors import PersonaeError

from .base import (
    Engine,
    EngineError,
    GenerateRequest,
    Generation,
    LoglikRequest,
    OptionRequest,
    OptionResult,
    SampleRequest,
)


class ReplayMiss(EngineError):
    pass


class ResponseStore(Protocol):
    """What the cache needs of a store (``core.store.Store`` is one); the
    caller passes it in, so engines never import the layers above them."""

    LEASE_SECONDS: float

    def get_responses(self, keys: list[str]) -> dict[str, dict]: ...
    def put_responses(self, rows: Iterable[dict]) -> None: ...
    def claim(self, keys: list[str], owner: str, seconds: float | None = None) -> list[str]: ...
    def renew(self, owner: str, seconds: float | None = None) -> None: ...
    def release(self, owner: str) -> None: ...


def _shared_text(request) -> dict:
    """Which leading part of a request is a persona's long text (its backstory
    or transcript so far, shared with its other requests), so the store keeps
    that text once and the request refers to it (``Store.put_responses``). The
    cache key is computed from the whole request, as always."""
    if isinstance(request, OptionRequest):
        return {"text_field": "prefix", "text_len": len(request.prefix)}
    if isinstance(request, (GenerateRequest, SampleRequest)) and request.prefix_len:
        return {"text_field": "prompt", "text_len": request.prefix_len}
    if isinstance(request, LoglikRequest):
        return {"text_field": "context", "text_len": len(request.context)}
    return {}


class CachedEngine(Engine):
    POLL_SECONDS = 0.2  # how often a run waiting for another run's answers looks again

    def __init__(
        self,
        store: ResponseStore,
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
        # Who holds a lease on a request (one engine in one process on one machine).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

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
    def replaying(self) -> bool:
        """A replay engine (built with no factory) answers from the store only."""
        return self._factory is None

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def _key(self, op: str, request) -> str:
        payload = dumps({"engine": self._fingerprint, "op": op, "request": request.key()})
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cached(self, op: str, requests: list, call, decode, encode, earlier=None) -> list:
        """``earlier(missing)``: answers stored in an earlier unit for requests
        missing here ({key: request} -> {key: encoded answer})."""
        if not requests:
            return []
        keys = [self._key(op, r) for r in requests]
        found = self.store.get_responses(list(dict.fromkeys(keys)))
        if earlier is not None and len(found) < len(set(keys)):
            old = earlier({k: r for k, r in zip(keys, requests) if k not in found})
            found.update(old)
            if old and not self.replaying:  # kept in this unit too: read whole next time
                by_key = dict(zip(keys, requests))
                self.store.put_responses([self._row(op, k, by_key[k], v) for k, v in old.items()])
        # Identical requests inside one batch go to the engine once.
        unique: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found:
                unique.setdefault(k, i)
        computed = 0
        pending = list(unique)
        while pending:
            if self.replaying:
                self.inner  # replay: a miss is an error (ReplayMiss), never a call
            # Another run on this store may be computing some of them: take only
            # the requests nobody holds, wait for the rest (see Store.claim).
            mine = self.store.claim(pending, self.owner)
            if mine:
                todo = [requests[unique[k]] for k in mine]
                self.misses += len(todo)
                computed += len(todo)
                self.stats.record(op, len(todo))
                with self._leased():
                    answers = call(self.inner, todo)
                rows = []
                for key, req, ans in zip(mine, todo, answers):
                    found[key] = encode(ans)
                    rows.append(self._row(op, key, req, found[key]))
                self.store.put_responses(rows)
            else:
                time.sleep(self.POLL_SECONDS)
            found.update(self.store.get_responses([k for k in pending if k not in found]))
            pending = [k for k in pending if k not in found]
        self.hits += len(requests) - computed
        return [decode(found[k]) for k in keys]

    def _row(self, op: str, key: str, request, response) -> dict:
        return {"key": key, "engine": self.kind, "op": op, "request": request.key(), "response": response, **_shared_text(request)}

    @contextlib.contextmanager
    def _leased(self):
        """Renew this engine's leases while it computes; drop them if it fails."""
        done = threading.Event()

        def renew():
            while not done.wait(self.store.LEASE_SECONDS / 3):
                try:
                    self.store.renew(self.owner)
                except PersonaeError:  # a store fault: the computation's own save reports it
                    return

        beat = threading.Thread(target=renew, name="personae-lease", daemon=True)
        beat.start()
        try:
            yield
        except BaseException:
            with contextlib.suppress(PersonaeError):  # a store fault
                self.store.release(self.owner)
            raise
        finally:
            done.set()
            beat.join()

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        return self._cached(
            "option_probs", requests, lambda e, r: e.option_probs(r), OptionResult.from_json, lambda a: a.to_json()
        )

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        return self._cached("generate", requests, lambda e, r: e.generate(r), Generation.from_json, lambda a: a.to_json())

    def sample(self, requests: list[SampleRequest]) -> list[list[Generation]]:
        """One stored answer per request (its ``n`` samples), not ``n``."""
        return self._cached("sample", requests, lambda e, r: e.sample(r), _samples_in, _samples_out, self._stored_one_by_one)

    def _stored_one_by_one(self, missing: dict[str, SampleRequest]) -> dict[str, dict]:
        """Samples a store made before ``sample`` was cached as one answer holds as
        ``n`` generations (the same seeds): read, so such a store is not asked again.
        Only requests whose first sample is stored are looked up whole."""
        firsts = {self._key("generate", r.expand()[0]): k for k, r in missing.items()}
        wanted = {firsts[f]: [self._key("generate", g) for g in missing[firsts[f]].expand()]
                  for f in self.store.get_responses(list(firsts))}
        # One lookup for all of them (the store reads 500 keys per query), not one per request.
        got = self.store.get_responses([k for keys in wanted.values() for k in keys])
        return {key: _samples_out([Generation.from_json(got[k]) for k in keys])
                for key, keys in wanted.items() if all(k in got for k in keys)}

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        return self._cached("loglikelihood", requests, lambda e, r: e.loglikelihood(r), float, float)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def _samples_out(samples: list[Generation]) -> dict:
    return {"samples": [[g.text, g.finish_reason, g.n_tokens] for g in samples]}


def _samples_in(d: dict) -> list[Generation]:
    return [Generation(text=t, finish_reason=f, n_tokens=int(n)) for t, f, n in d["samples"]]
