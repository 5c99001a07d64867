"""Payoff: a participant's agreement with a statement on a Likert scale.

The agreement question is asked as a multiple-choice question (options
``(A) Strongly disagree`` ... ``(G) Strongly agree``); the engine returns the
probability of each option letter, and the payoff is the expected scale value

    payoff = sum_k P(option k) * k,   k = 1 (Strongly disagree) ... 7 (Strongly agree)

which is exact (no sampling) and continuous, so small shifts show. Option
order can be reversed per participant (seeded, as in the Anthology protocol)
to cancel the model's letter bias at the group level; probabilities are mapped
back to scale order before taking the expectation.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.llm.base import Engine, OptionRequest, OptionResult, option_letters

from . import prompts
from .prompts import LIKERT7


@dataclass
class LikertAnswer:
    probs: list[float]  # over the scale in scale order (worst..best), sums to 1
    expected: float  # sum_k p_k * k on 1..n
    outside_mass: float
    reversed: bool
    request: OptionRequest

    @property
    def normalised(self) -> float:
        """Expected value mapped to [0, 1]."""
        n = len(self.probs)
        return (self.expected - 1.0) / (n - 1)


def expected_value(probs: Sequence[float]) -> float:
    p = np.asarray(probs, dtype=np.float64)
    return float(p @ np.arange(1, len(p) + 1))


def likert_request(prefix: str, suffix_for: Callable[[Sequence[str]], str], reverse: bool, scale=LIKERT7) -> OptionRequest:
    """``suffix_for(options)`` builds the question text for the options as listed."""
    listed = tuple(reversed(scale)) if reverse else tuple(scale)
    return OptionRequest(prefix=prefix, suffix=suffix_for(listed), options=option_letters(len(scale)))


def likert_answer(request: OptionRequest, reverse: bool, result: OptionResult) -> LikertAnswer:
    """Map an engine answer (probabilities in listed order) back to scale order."""
    probs = list(reversed(result.probs)) if reverse else list(result.probs)
    return LikertAnswer(probs, expected_value(probs), result.outside_mass, bool(reverse), request)


def ask_likert(engine: Engine, requests: Sequence[OptionRequest], reversed_flags: Sequence[bool]) -> list[LikertAnswer]:
    """Ask every request in one batched call; map reversed answers back."""
    results = engine.option_probs(list(requests))
    return [likert_answer(q, rev, res) for q, rev, res in zip(requests, reversed_flags, results)]


def agreement_requests(
    judges: Sequence[str], question: str, statements: Sequence[str], reversed_flags: Sequence[bool]
) -> list[OptionRequest]:
    """Requests for every (statement, judge) pair, statement-major: index
    ``s * len(judges) + j``. The prompt holds only the judge's conditioning,
    the question and the statement, so a payoff depends on who judges and on
    the outcome alone (needed for value equivalence)."""
    reqs = []
    head = prompts.agreement_head(question)
    for s in statements:
        for j, cond in enumerate(judges):
            prefix = prompts.participant_prefix(cond) + head
            reqs.append(likert_request(prefix, lambda opts, s=s: prompts.agreement_tail(s, opts), reversed_flags[j]))
    return reqs


def disagreement(positions: Sequence[float]) -> float:
    """The group's disagreement on a question: mean absolute difference of the
    participants' position scores over all pairs,

        disagreement = (2 / (n (n - 1))) * sum_{i < j} |p_i - p_j|

    on the 1..7 scale (0 = everyone at the same position; 0 for n < 2)."""
    p = np.asarray(positions, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    i, j = np.triu_indices(len(p), k=1)
    return round(float(np.abs(p[i] - p[j]).mean()), 6)


@dataclass
class PayoffSummary:
    """Agreement of each participant with each round's statement.

    ``agreement[r, i]``: expected Likert value (1..7) participant i gives the
    statement of round r (round 0 = draft, r >= 1 = revision r).
    """

    agreement: np.ndarray

    @property
    def final(self) -> np.ndarray:
        return self.agreement[-1]

    @property
    def mean(self) -> np.ndarray:  # per round
        return self.agreement.mean(axis=1)

    @property
    def min(self) -> np.ndarray:  # per round: the worst-off participant
        return self.agreement.min(axis=1)

    @property
    def change(self) -> np.ndarray:  # per participant: final minus draft
        return self.agreement[-1] - self.agreement[0]

    def to_json(self) -> dict:
        return {
            "agreement": self.agreement.round(6).tolist(),
            "mean": self.mean.round(6).tolist(),
            "min": self.min.round(6).tolist(),
            "final_mean": round(float(self.mean[-1]), 6),
            "final_min": round(float(self.min[-1]), 6),
            "change": self.change.round(6).tolist(),
            "mean_change": round(float(self.change.mean()), 6),
            "min_change": round(float(self.min[-1] - self.min[0]), 6),
        }
