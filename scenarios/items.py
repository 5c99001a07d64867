"""What a scenario steps through: questionnaire items (or, for a deliberation,
its phases: an item with no options)."""
from __future__ import annotations

from dataclasses import dataclass

from agents.persona import PersonaAgent
from agents.questions import Question
from analysis.partisan import OTHER

PLURAL = {"Democrat": "Democrats", "Republican": "Republicans"}


def party_names(agent: PersonaAgent) -> tuple[str, str]:
    """(own party, other party), plural, for the partisan an agent stands for."""
    if agent.party in OTHER:
        return PLURAL[agent.party], PLURAL[OTHER[agent.party]]
    return "your party", "the other party"


@dataclass(frozen=True)
class Item:
    """A questionnaire item. ``text`` may hold {own} / {other} (the agent's party
    and the other party, plural) for partisan scenarios. A deliberation phase is
    an item with no options."""

    id: str
    text: str
    options: tuple[str, ...]
    positions: tuple[float, ...] | None = None
    group: str = ""  # scenario-specific tag (e.g. "self", "meta", "ingroup")

    def render(self, agent: PersonaAgent) -> Question:
        own, other = party_names(agent)
        return Question.make(self.id, self.text.format(own=own, other=other), self.options)

    def generic_text(self) -> str:
        """The text with its party placeholders named, for displays."""
        try:
            return self.text.format(own="[own party]", other="[other party]")
        except (KeyError, IndexError, ValueError):
            return self.text
