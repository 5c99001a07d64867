"""Pew ATP waves 34, 92 and 99 with Anthology's question sets.

With the user's own Pew ``.sav`` file (``human.overrides: {source: {path: ...}}``)
the personas are matched to the wave's respondents and scored like the paper.
Without it (Pew data cannot be redistributed) the scenario still runs: every
persona answers the wave's questions and the report lists the persona
distributions alone, with no human comparison.
"""
from __future__ import annotations

from .base import Item, StudySurveyModel


class AtpPollModel(StudySurveyModel):
    title = "Pew ATP opinion poll"

    def load_study(self):
        human = self.cfg.human
        if human is None:
            return None
        if not (human.overrides.get("source") or {}).get("path"):
            self._wave_only = human.study
            return None
        return super().load_study()

    def items(self) -> list[Item]:
        if self.study is not None:
            return super().items()
        from analysis.human_data import load_spec

        spec, _, _ = load_spec(getattr(self, "_wave_only", None) or self.cfg.options.get("wave", "atp_w34"))
        return [Item(q.id, q.text, tuple(q.options)) for q in spec.questions]
