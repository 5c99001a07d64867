"""Several episodes run together, their engine calls merged into large batches.

An episode phase is plain synchronous code that may call the engine several
times (a mediator's candidates, retries, rankings), so episodes cannot simply
hand over "their" batch. Instead each episode runs in its own thread against a
proxy engine: a proxy call blocks until every episode still running is either
blocked in a call or finished; then the calling thread (the caller of
:func:`run_together`) sends all waiting requests to the real engine as one
call per operation, in task order, and hands each episode its answers. Only
the caller's thread ever touches the real engine (a store-cached engine and
torch stay single-threaded). No library does this rendezvous for sync code
that is not ours to rewrite as coroutines, hence hand-written.

Answers do not depend on the batch a request shares (seeded per request,
batch-invariant products), so results equal running the episodes one by one.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from agents.llm.base import Engine, GenerateRequest, Generation, LoglikRequest, OptionRequest, OptionResult, SampleRequest

T = TypeVar("T")
OPS = ("option_probs", "generate", "sample", "loglikelihood")


class _Rendezvous:
    def __init__(self, engine: Engine, tasks: int) -> None:
        self.engine = engine
        # Only the server waits on ``cond`` (a task asked or finished); each task waits
        # on its own event, so an answer wakes its task alone: with one shared
        # condition every post woke every task (110 groups: ~12,000 wake-ups a round).
        self.cond = threading.Condition()
        self.ready = [threading.Event() for _ in range(tasks)]  # task -> its answer is in
        self.running = tasks  # tasks not finished yet
        self.waiting: dict[int, tuple[str, list]] = {}  # task -> (op, requests) it is blocked on
        self.answers: dict[int, list | BaseException] = {}
        self.abort: BaseException | None = None

    def call(self, task: int, op: str, requests: list) -> list:
        with self.cond:
            if self.abort is not None:
                raise RuntimeError("stopped") from self.abort
            self.ready[task].clear()
            self.waiting[task] = (op, requests)
            if len(self.waiting) >= self.running:
                self.cond.notify()
        self.ready[task].wait()
        with self.cond:
            answer = self.answers.pop(task)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def finished(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify()

    def serve(self) -> None:
        """Answer merged batches until every task has finished (caller's thread)."""
        while True:
            with self.cond:
                while self.running and len(self.waiting) < self.running:
                    self.cond.wait()
                if not self.running:
                    return
                batch = sorted(self.waiting.items())
                self.waiting.clear()
            answers: dict[int, list | BaseException] = {}
            for op in OPS:
                members = [(task, reqs) for task, (o, reqs) in batch if o == op]
                if not members:
                    continue
                try:
                    out = getattr(self.engine, op)([r for _, reqs in members for r in reqs])
                except Exception as exc:  # noqa: BLE001 - handed to every episode that asked; the first one is re-raised
                    answers.update((task, exc) for task, _ in members)
                    continue
                k = 0
                for task, reqs in members:
                    answers[task] = out[k : k + len(reqs)]
                    k += len(reqs)
            with self.cond:
                self.answers.update(answers)
            for task in answers:
                self.ready[task].set()

    def stop(self, exc: BaseException) -> None:
        with self.cond:
            self.abort = exc
            stopped = list(self.waiting)
            for task in stopped:
                self.answers[task] = RuntimeError("stopped")
            self.waiting.clear()
        for task in stopped:
            self.ready[task].set()


class _Member(Engine):
    """The engine one task sees: every call goes through the rendezvous."""

    def __init__(self, rendezvous: _Rendezvous, task: int, inner: Engine) -> None:
        super().__init__()
        self._r, self._task = rendezvous, task
        self.kind, self.model, self.exact_distributions = inner.kind, inner.model, inner.exact_distributions

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        return self._r.call(self._task, "option_probs", list(requests))

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        return self._r.call(self._task, "generate", list(requests))

    def sample(self, requests: list[SampleRequest]) -> list[list[Generation]]:
        return self._r.call(self._task, "sample", list(requests))

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        return self._r.call(self._task, "loglikelihood", list(requests))


def run_together(engine: Engine, tasks: Sequence[Callable[[Engine], T]]) -> list[T]:
    """Run ``task(proxy_engine)`` for every task, concurrently, with their
    engine calls merged (see the module docstring); return their results in
    order. The first task that raised (in task order) re-raises here."""
    if len(tasks) <= 1:
        return [task(engine) for task in tasks]
    rv = _Rendezvous(engine, len(tasks))
    results: list = [None] * len(tasks)
    errors: dict[int, BaseException] = {}

    def work(i: int) -> None:
        try:
            results[i] = tasks[i](_Member(rv, i, engine))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors[i] = exc
        finally:
            rv.finished()

    threads = [threading.Thread(target=work, args=(i,), name=f"personae-lockstep-{i}", daemon=True) for i in range(len(tasks))]
    for t in threads:
        t.start()
    try:
        rv.serve()
    except BaseException as exc:  # an interrupt or a store fault while serving: release the tasks
        rv.stop(exc)
        raise
    for t in threads:
        t.join()
    if errors:
        raise errors[min(errors)]
    return results
