"""Episodes run together (mechanisms.lockstep): their engine calls merge into
one batch per operation and round, each gets exactly its own answers, and a
failure reaches the episodes it concerns."""
from __future__ import annotations

import pytest

from agents.llm.base import GenerateRequest, OptionRequest
from agents.llm.fake_engine import FakeEngine
from mechanisms.lockstep import run_together

pytestmark = pytest.mark.fast


class Recording(FakeEngine):
    """The fake engine, recording the size of every batch it is sent."""

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__()
        self.batches: list[tuple[str, int]] = []
        self.fail_on = fail_on

    def option_probs(self, requests):
        self.batches.append(("option_probs", len(requests)))
        if any(r.prefix == self.fail_on for r in requests):
            raise RuntimeError("engine down")
        return super().option_probs(requests)

    def generate(self, requests):
        self.batches.append(("generate", len(requests)))
        return super().generate(requests)


def episode(i: int, rounds: int):
    """``rounds`` rounds of i + 1 option requests then one generation."""
    def run(engine):
        out = []
        for k in range(rounds):
            out.append([r.probs for r in engine.option_probs([OptionRequest(f"p{i}", f" q{k}.{j}", ("A", "B")) for j in range(i + 1)])])
            out.append(engine.generate([GenerateRequest(f"p{i} round {k}", max_tokens=3, seed=i)])[0].text)
        return out
    return run


def test_calls_merge_per_round_and_each_episode_gets_its_own_answers():
    tasks = [episode(i, rounds=3 if i < 4 else 5) for i in range(6)]
    alone = [t(FakeEngine()) for t in tasks]
    engine = Recording()
    assert run_together(engine, tasks) == alone
    # Rounds 0-2: all six episodes in one batch per operation; rounds 3-4: the two longer ones.
    assert engine.batches == [("option_probs", 21), ("generate", 6)] * 3 + [("option_probs", 11), ("generate", 2)] * 2


def test_an_engine_failure_reaches_the_episodes_that_asked_and_the_first_is_raised():
    finished = []

    def quiet(engine):
        engine.generate([GenerateRequest("x", max_tokens=2)])
        finished.append("quiet")
        return "done"

    engine = Recording(fail_on="p1")
    with pytest.raises(RuntimeError, match="engine down"):
        run_together(engine, [episode(0, 2), episode(1, 2), quiet])
    assert finished == ["quiet"]  # the episode that never asked for options finished
