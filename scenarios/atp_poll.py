"""Pew ATP waves 34, 92 and 99 with Anthology's question sets: a preset of the
generic survey scenario (``scenarios.survey``).

Pew data cannot be redistributed: give your own wave file with
``human.overrides: {source: {path: "ATP W34.sav"}}``. Without it the run stops
before any LLM call with one line naming the file and where to get it.
"""
from __future__ import annotations

from .survey import SurveyScenario


class AtpPollModel(SurveyScenario):
    """``scenario: survey`` with a Pew ATP study; kept as a name for existing YAMLs."""
    scenario = "atp_poll"
