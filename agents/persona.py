"""The persona agent: a Mesa agent bound to a persona's conditioning text.

Agents do not call the engine themselves: a model step collects every agent's
request (``ask``), sends them to the engine as one batch, and hands each agent
its result (``receive``). That is what makes a step one batched forward pass
over all personas.
"""
from __future__ import annotations

import mesa
import numpy as np

from .backstories import derive_seed
from .llm.base import GenerateRequest, OptionRequest, OptionResult
from .questions import INSTRUCTION, Question, answered_block, display_order, map_back, option_request


class PersonaAgent(mesa.Agent):
    def __init__(self, model: mesa.Model, persona: dict, *, seed: int, reverse: bool | None = None, series: bool = True) -> None:
        super().__init__(model)
        self.persona = persona
        self.persona_id: str = persona["persona_id"]
        self.conditioning: str = persona["conditioning"]
        self.profile: dict = persona.get("profile") or {}
        self.method: str = persona.get("method", "")
        # Each persona's own generator: its sampled answers do not depend on
        # the order agents are stepped in or on the population size.
        self.answer_rng = np.random.default_rng(derive_seed(seed, self.persona_id))
        self.reverse = bool(self.answer_rng.integers(2)) if reverse is None else reverse
        self.series = series
        self.history = ""  # previous questions and answers, in series mode
        self.answers: dict[str, dict] = {}
        self.current: str | None = None  # id of the last question answered
        self.texts: dict[str, str] = {}  # free-text utterances by key

    # ---------------------------------------------------------------- multiple choice
    def context(self) -> str:
        return self.conditioning + (self.history if self.series else "")

    def order_for(self, q: Question) -> list[int]:
        return display_order(len(q.options), self.reverse)

    def ask(self, q: Question, instruction: str = INSTRUCTION) -> OptionRequest:
        return option_request(self.context(), q, self.order_for(q), instruction)

    def receive(self, q: Question, result: OptionResult) -> dict:
        order = self.order_for(q)
        probs = map_back(result.probs, order)
        sampled = int(self.answer_rng.choice(len(probs), p=probs / probs.sum()))
        self.answers[q.id] = {
            "probs": [float(x) for x in probs],
            "sampled": sampled,
            "outside_mass": float(result.outside_mass),
            "method": result.method,
            "reversed": self.reverse,
        }
        if self.series:
            self.history += answered_block(q, order, sampled)
        self.current = q.id
        return self.answers[q.id]

    def restore(self, q: Question, answer: dict) -> None:
        """Re-apply a logged answer (replay and resume): same state, no engine."""
        self.answers[q.id] = dict(answer)
        # Keep the generator in step with an original run that sampled here.
        self.answer_rng.choice(len(answer["probs"]), p=np.asarray(answer["probs"]) / np.sum(answer["probs"]))
        if self.series:
            self.history += answered_block(q, self.order_for(q), int(answer["sampled"]))
        self.current = q.id

    def expected(self, qid: str, positions=None) -> float:
        p = np.asarray(self.answers[qid]["probs"])
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
