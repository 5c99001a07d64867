"""The persona agent: a Mesa agent bound to a persona's conditioning text.

Agents do not call the engine themselves: a model step collects every agent's
request (``ask``), sends them to the engine as one batch, and hands each agent
its result (``receive``). That is what makes a step one batched forward pass
over all personas.
"""
from __future__ import annotations

import sys
import threading
from array import array
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

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


class Answer:
    """One persona's answer to one multiple-choice question (immutable).

    ``probs`` is the distribution over the options in the question's own order
    (display order already mapped back), ``sampled`` the index drawn from it,
    ``outside_mass`` the probability the engine put outside the option letters,
    ``method`` how the engine read the distribution, ``reversed`` whether the
    options were shown in reverse order."""

    # An agent keeps one answer per question: slots, and its floats (the
    # probabilities, then the outside mass) packed as float64 bytes, 80 B for four
    # options where a tuple and float objects took 208; the properties unpack the
    # same floats.
    __slots__ = ("_floats", "sampled", "method", "reversed")

    def __init__(self, probs, sampled: int, outside_mass: float, method: str, reversed: bool) -> None:
        floats = array("d", probs)
        floats.append(outside_mass)
        for name, value in (("_floats", floats.tobytes()), ("sampled", sampled), ("method", method), ("reversed", reversed)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"Answer is immutable (cannot set '{name}')")

    @property
    def probs(self) -> tuple[float, ...]:
        return tuple(memoryview(self._floats).cast("d")[:-1])

    @property
    def outside_mass(self) -> float:
        return memoryview(self._floats).cast("d")[-1]

    def _fields(self) -> tuple:
        return (self.probs, self.sampled, self.outside_mass, self.method, self.reversed)

    def __eq__(self, other) -> bool:
        return self._fields() == other._fields() if isinstance(other, Answer) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._fields())

    def __reduce__(self):  # copy and pickle through the constructor (attributes cannot be set)
        return (Answer, self._fields())

    def __repr__(self) -> str:
        return "Answer(probs={!r}, sampled={!r}, outside_mass={!r}, method={!r}, reversed={!r})".format(*self._fields())

    def to_json(self) -> dict:
        """The episode log's payload fields (JSON-ready)."""
        return {"probs": list(self.probs), "sampled": self.sampled, "outside_mass": self.outside_mass, "method": self.method, "reversed": self.reversed}

    @classmethod
    def from_json(cls, d: dict) -> Answer:
        # The method names repeat across a run's answers: one string each, not one per answer.
        return cls([float(x) for x in d["probs"]], int(d["sampled"]), float(d["outside_mass"]), sys.intern(str(d.get("method", ""))),
                   bool(d.get("reversed", False)))


_scratch = threading.local()  # the scratch generator, one per thread (the browser page steps models in its own)


class SeededStream:
    """A persona's own random stream: the draws of ``numpy.random.default_rng(seed)``,
    kept as its PCG64 state (~240 B an agent) instead of a live numpy Generator
    (~900 B, measured). Each draw loads the state into this thread's scratch generator and
    keeps the state it leaves, so the sequence is exactly that generator's (replay
    and resume repeat the draws)."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = self._pack(np.random.PCG64(seed).state)

    @staticmethod
    def _pack(state: dict) -> tuple[int, int, int, int]:
        return (state["state"]["state"], state["state"]["inc"], state["has_uint32"], state["uinteger"])

    def _draw(self, method: str, *args, **kwargs):
        gen = getattr(_scratch, "generator", None)
        if gen is None:
            gen = _scratch.generator = np.random.Generator(np.random.PCG64())
        s, inc, has_uint32, uinteger = self._state
        gen.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": s, "inc": inc}, "has_uint32": has_uint32, "uinteger": uinteger}
        try:
            return getattr(gen, method)(*args, **kwargs)
        finally:
            self._state = self._pack(gen.bit_generator.state)

    def integers(self, *args, **kwargs):
        return self._draw("integers", *args, **kwargs)

    def choice(self, *args, **kwargs):
        return self._draw("choice", *args, **kwargs)


_NO_PROFILE = MappingProxyType({})  # shared by agents whose persona has no profile (read-only)


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
        self.profile: Mapping = persona.profile or _NO_PROFILE
        self.method: str = persona.method
        self.condition = condition
        self.population = population
        self.human = human
        self.human_profile: Mapping = human_profile if human_profile is not None else self.profile
        self.party: str | None = self.human_profile.get("party")
        self.group = group
        # Each persona's own generator: its sampled answers do not depend on
        # the order agents are stepped in or on the population size.
        self.answer_rng = SeededStream(derive_seed(seed, self.persona_id))
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
        answer = Answer(probs, sampled, float(result.outside_mass), result.method, self.reverse)
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
