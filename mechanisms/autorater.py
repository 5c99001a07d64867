"""The consensus autorater (Jarrett et al., eq. 22): a judge model compares the
consensus reached with digital representatives to the consensus reached by
the real participants.

The judge sees the question and the real participants' opinions, and picks the
group statement this group would agree with more. Both orders are asked and
averaged (cancels the judge's letter bias):

    p = (P(A | representatives' statement shown as A) + P(B | shown as B)) / 2
    win rate = mean over compared pairs of p

0.5 = the judge cannot tell them apart; an identical pair counts 0.5 without
asking. The judge engine is configured separately from the representatives.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.llm.base import Engine, OptionRequest, option_letters

from . import prompts


@dataclass(frozen=True)
class ConsensusPair:
    question: str
    opinions: tuple[str, ...]  # the real participants' opinions
    candidate: str  # consensus reached with representatives
    baseline: str  # consensus reached by the real participants (or the ground truth)


@dataclass
class WinRate:
    per_pair: list[float]  # p per compared pair

    @property
    def win_rate(self) -> float:
        return float(np.mean(self.per_pair)) if self.per_pair else float("nan")

    def to_json(self) -> dict:
        return {"win_rate": self.win_rate, "pairs": len(self.per_pair), "per_pair": [round(p, 6) for p in self.per_pair]}


def judge_request(pair: ConsensusPair, first: str, second: str) -> OptionRequest:
    head = f"Question under debate: {pair.question}\n" + "".join(
        f"Opinion of participant {i + 1}: {o}\n" for i, o in enumerate(pair.opinions)
    )
    body = prompts.choice_block(
        "Which group statement would this group of participants agree with more?",
        [first or "(no statement)", second or "(no statement)"],
    )
    return OptionRequest(prefix=head + "\n", suffix=body, options=option_letters(2))


def consensus_win_rate(judge: Engine, pairs: Sequence[ConsensusPair]) -> WinRate:
    """Win rate of each pair's ``candidate`` against its ``baseline`` (one batched call)."""
    asked = [k for k, p in enumerate(pairs) if p.candidate.strip() != p.baseline.strip()]
    reqs = []
    for k in asked:
        p = pairs[k]
        reqs += [judge_request(p, p.candidate, p.baseline), judge_request(p, p.baseline, p.candidate)]
    res = judge.option_probs(reqs) if reqs else []
    per = [0.5] * len(pairs)
    for n, k in enumerate(asked):
        a, b = res[2 * n], res[2 * n + 1]
        # renormalise over the two letters: mass outside them says nothing about the choice
        pa = a.probs[0] / max(a.probs[0] + a.probs[1], 1e-12)
        pb = b.probs[1] / max(b.probs[0] + b.probs[1], 1e-12)
        per[k] = float((pa + pb) / 2)
    return WinRate(per)
