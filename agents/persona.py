"""The persona agent: a Mesa agent bound to a persona's conditioning text.

Agents do not call the engine themselves: a model step collects every agent's
request (``ask``), sends them to the engine as one batch, and hands each agent
its result (``receive``). That is what makes a step one batched forward pass
over all personas.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mesa
import numpy as np

from core.persona_record import PersonaRecord
from core.seeds import derive_seed

from .llm.base import GenerateRequest, OptionRequest, OptionResult
from .questions import (
    INSTRUCTION,
    Question,
    answered_block,
    display_order,
    map_back,
    option_request,
)


@lru_cache(maxsize=4096)
def _shared_block(q: Question, order: tuple[int, ...], chosen: int) -> str:
    return answered_block(q, list(order), chosen)


def history_block(q: Question, order: list[int], chosen: int) -> str:
    """``answered_block``, one string per distinct (question, order, answer):
    every agent that gave that answer holds the same string, so a series-mode
    history costs a reference per answered question, not a copy of its text
    (measured: ~2 KB per agent, 61k agents per wave at the Anthology ATP size)."""
    try:
        return _shared_block(q, tuple(order), chosen)
    except TypeError:  # an unhashable question (options given as a list): not shared
        return answered_block(q, order, chosen)


@dataclass(frozen=True)
class Answer:
    """One persona's answer to one multiple-choice question.

    ``probs`` is the distribution over the options in the question's own order
    (display order already mapped back), ``sampled`` the index drawn from it,
    ``outside_mass`` the probability the engine put outside the option letters,
    ``method`` how the engine read the distribution, ``reversed`` whether the
    options were shown in reverse order."""

    probs: tuple[float, ...]
    sampled: int
    outside_mass: float
    method: str
    reversed: bool

    def to_json(self) -> dict:
        """The episode log's payload fields (JSON-ready)."""
        return {"probs": list(self.probs), "sampled": self.sampled, "outside_mass": self.outside_mass, "method": self.method, "reversed": self.reversed}

    @classmethod
    def from_json(cls, d: dict) -> Answer:
        return cls(tuple(float(x) for x in d["probs"]), int(d["sampled"]), float(d["outside_mass"]), str(d.get("method", "")), bool(d.get("reversed", False)))


class PersonaAgent(mesa.Agent):
    """``condition``: the label of the population it belongs to; ``population``:
    that population's index; ``human``: index of the human it stands for (None
    when unmatched); ``human_profile``: that human's demographics (else the
    persona's own profile); ``party``: from that profile; ``group``: its
    discussion group (deliberation scenarios), else None."""

    def __init__(
        self,
        model: mesa.Model,
        persona: PersonaRecord,
        *,
        seed: int,
        reverse: bool | None = None,
        series: bool = True,
        condition: str = "",
        population: int = 0,
        human: int | None = None,
        human_profile: dict | None = None,
        group: int | None = None,
    ) -> None:
        super().__init__(model)
        self.persona = persona
        self.persona_id: str = persona.persona_id
        self.profile: dict = persona.profile or {}
        self.method: str = persona.method
        self.condition = condition
        self.population = population
        self.human = human
        self.human_profile: dict = human_profile if human_profile is not None else self.profile
        self.party: str | None = self.human_profile.get("party")
        self.group = group
        # Each persona's own generator: its sampled answers do not depend on
        # the order agents are stepped in or on the population size.
        self.answer_rng = np.random.default_rng(derive_seed(seed, self.persona_id))
        self.reverse = bool(self.answer_rng.integers(2)) if reverse is None else reverse
        self.series = series
        self._blocks: list[str] = []  # previous questions and answers, in series mode (shared strings)
        self.answers: dict[str, Answer] = {}
        self.current: str | None = None  # id of the last question answered
        self.texts: dict[str, str] = {}  # free-text utterances by key

    @property
    def conditioning(self) -> str:
        """The persona's text, read from its record (from the store when it came
        from there): agents do not hold their texts."""
        return self.persona.conditioning

    # ---------------------------------------------------------------- multiple choice
    @property
    def history(self) -> str:
        """Previous questions and answers, in series mode."""
        return "".join(self._blocks)

    def context(self) -> str:
        return self.conditioning + (self.history if self.series else "")

    def order_for(self, q: Question) -> list[int]:
        return display_order(len(q.options), self.reverse)

    def ask(self, q: Question, instruction: str = INSTRUCTION) -> OptionRequest:
        return option_request(self.context(), q, self.order_for(q), instruction)

    def reasoning_request(self, q: Question) -> GenerateRequest | None:
        """Free text to generate before ``ask`` (chain of thought); None: answer directly.
        Agents that reason (``agents.generative_agent``) override this and ``reasoned``."""
        return None

    def reasoned(self, q: Question, text: str) -> None:
        pass

    def receive(self, q: Question, result: OptionResult) -> Answer:
        order = self.order_for(q)
        probs = map_back(result.probs, order)
        sampled = int(self.answer_rng.choice(len(probs), p=probs / probs.sum()))
        answer = Answer(tuple(float(x) for x in probs), sampled, float(result.outside_mass), result.method, self.reverse)
        self.answers[q.id] = answer
        if self.series:
            self._blocks.append(history_block(q, order, sampled))
        self.current = q.id
        return answer

    def restore(self, q: Question, payload: dict) -> None:
        """Re-apply a logged answer (replay and resume): same state, no engine."""
        answer = Answer.from_json(payload)
        self.answers[q.id] = answer
        # Keep the generator in step with an original run that sampled here.
        self.answer_rng.choice(len(answer.probs), p=np.asarray(answer.probs) / np.sum(answer.probs))
        if self.series:
            self._blocks.append(history_block(q, self.order_for(q), answer.sampled))
        self.current = q.id

    @property
    def current_answer(self) -> Answer | None:
        return self.answers.get(self.current) if self.current else None

    def expected(self, qid: str, positions=None) -> float:
        p = np.asarray(self.answers[qid].probs)
        pos = np.arange(len(p)) if positions is None else np.asarray(positions, dtype=float)
        return float(p @ pos)

    # ---------------------------------------------------------------- free text
    def write(self, key: str, instruction: str, *, max_tokens: int = 120, temperature: float = 0.7, seed: int = 0, stop=("\n\n",)) -> GenerateRequest:
        prompt = self.conditioning + instruction
        return GenerateRequest(
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=tuple(stop),
            seed=derive_seed(seed, self.persona_id, key),
            prefix_len=len(self.conditioning),
        )

    def wrote(self, key: str, text: str) -> None:
        self.texts[key] = text.strip()

    def step(self) -> None:  # scenarios drive agents through ask/receive
        pass
