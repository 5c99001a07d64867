"""The one generation budget of a deliberation: how many tokens each act may write.

Episodes, mediators, the consensus scenario and the representatives pipeline
all take a :class:`GenerationBudget` instead of their own token counts, so a
budget set in one YAML section reaches every act and the defaults live here.
"""
from __future__ import annotations

from pydantic import ConfigDict, Field

from core.config import StrictModel


class GenerationBudget(StrictModel):
    """Most tokens generated per act. The defaults fit the embedded model on a
    CPU (a few sentences each); the Habermas Machine's papers used longer texts."""

    model_config = ConfigDict(frozen=True)

    opinion: int = Field(48, gt=0)  # a participant's opinion before deliberation
    critique: int = Field(40, gt=0)  # a participant's critique of the statement
    statement: int = Field(64, gt=0)  # a mediator's candidate or revised statement
