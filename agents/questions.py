"""Multiple-choice prompts in the shape Anthology used, and option-order handling.

Suffix shape (after the persona's conditioning text and previous answers)::

    Please answer the following question keeping in mind your previous answers.
    Question: <text>
    (A) <option>
    (B) <option>
    Answer with (A) or (B).
    Answer: (

The prompt ends with "(" so the next token is the option letter: measured on
SmolLM2-135M-Instruct, ending at "Answer:" puts ~58% of the mass on the
end-of-turn token, ending at "Answer: (" puts ~95% on the letters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.llm.base import OptionRequest, option_letters

INSTRUCTION = "Please answer the following question keeping in mind your previous answers."


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    options: tuple[str, ...]

    @classmethod
    def make(cls, id: str, text: str, options) -> "Question":
        return cls(id=str(id), text=str(text), options=tuple(str(o) for o in options))


def display_order(n: int, reverse: bool) -> list[int]:
    """Original option indices in the order they are shown."""
    return list(range(n))[::-1] if reverse else list(range(n))


def _answer_with(labels: tuple[str, ...]) -> str:
    marks = [f"({x})" for x in labels]
    if len(marks) == 1:
        return marks[0]
    if len(marks) == 2:
        return f"{marks[0]} or {marks[1]}"
    return ", ".join(marks[:-1]) + f", or {marks[-1]}"


def question_block(q: Question, order: list[int]) -> str:
    labels = option_letters(len(order))
    lines = [f"Question: {q.text}"]
    lines += [f"({lab}) {q.options[o]}" for lab, o in zip(labels, order)]
    return "\n".join(lines) + "\n"


def question_suffix(q: Question, order: list[int], instruction: str = INSTRUCTION) -> str:
    labels = option_letters(len(order))
    head = f"{instruction}\n" if instruction else ""
    return head + question_block(q, order) + f"Answer with {_answer_with(labels)}.\nAnswer: ("


def option_request(prefix: str, q: Question, order: list[int], instruction: str = INSTRUCTION) -> OptionRequest:
    return OptionRequest(prefix=prefix, suffix=question_suffix(q, order, instruction), options=option_letters(len(order)))


def map_back(display_probs, order: list[int]) -> np.ndarray:
    """Probabilities over displayed letters -> over the original options."""
    out = np.zeros(len(order))
    for shown, original in enumerate(order):
        out[original] = display_probs[shown]
    return out


def answered_block(q: Question, order: list[int], chosen_original: int) -> str:
    """The question and the persona's answer, as kept in its context."""
    shown = order.index(chosen_original)
    label = option_letters(len(order))[shown]
    return question_block(q, order) + f"Answer: ({label}) {q.options[chosen_original]}\n\n"
