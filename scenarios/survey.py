"""Any survey from its study YAML alone: the study's questions (all, or those
listed in ``questionnaire.questions``) asked of every persona population and
scored against the respondents -- metrics, lower bounds, subgroups, plots.

The report is titled from the study (``title:`` in the study YAML, else its
name). Everything the run will need from the study -- its data file, the
subgroup traits and options, the question ids, the conditions it must supply
profiles for -- is checked while the model is built, before the first LLM
call; a study whose data file is missing stops with one line naming the file
and where to get it.
"""
from __future__ import annotations

import pandas as pd

from analysis.human_data import StudyError, UnknownName
from simulation.config import ConfigError

from .base import StudySurveyModel
from .contract import ScenarioReport

PROFILE_CONDITIONS = ("qa", "bio", "portray")  # one persona per respondent, from their demographics


class SurveyScenario(StudySurveyModel):
    title = "Survey"

    def load_study(self):
        if self.cfg.human is None:
            raise ConfigError(f"human.study: required for scenario '{self.cfg.scenario}' (a built-in study name or a study YAML path)")
        study = super().load_study()
        check_run(self.cfg, study)
        self.title = study_title(study)
        return study


    def evaluate(self) -> ScenarioReport:
        report = super().evaluate()
        rows = [
            {"scale": name, "condition": ev.label, "items": ", ".join(_scale(self.study, name)), "alpha_human": h, "alpha_persona": p}
            for ev in report.evaluations
            for name, (h, p) in ev.scale_alpha.items()
        ]
        if rows:
            report.tables["alpha_per_scale"] = pd.DataFrame(rows)
            report.notes.append("alpha per scale: Cronbach's alpha of each scale of the study (reverse-coded items reversed); the headline alpha is their mean.")
        # The study's warnings head the report (analysis.report); the scenario's own are added here.
        report.notes.extend(f"config: {n}" for n in self.cfg.notes())
        return report


def _scale(study, name: str) -> list[str]:
    scale = next(s for s in study.scales if s.name == name)
    return [f"{i} (reversed)" if i in scale.reverse else i for i in scale.items]


def study_title(study) -> str:
    return study.title or study.name


def check_run(cfg, study) -> None:
    """Everything the run needs from the study, checked before any LLM call (one-line errors)."""
    from analysis.subgroups import resolve_groups

    known = set(study.question_ids)
    for qid in cfg.questionnaire.questions or []:
        if qid not in known:
            raise ConfigError(f"questionnaire.questions: '{qid}' is not a question of study {study.name} (questions: {', '.join(study.question_ids)})")
    if not study.is_individual:
        needs = [c for c in cfg.population.conditions if c in PROFILE_CONDITIONS]
        if needs:
            raise ConfigError(
                f"population.conditions: '{needs[0]}' builds one persona per respondent, but study {study.name} "
                "holds aggregate counts (no respondents); use anthology or interview"
            )
    try:
        groups = resolve_groups(study, cfg.human.subgroups)
        if not study.is_individual:
            for trait, _, options in groups:
                try:
                    study.subgroup(trait, options)  # shares of several groups cannot be merged
                except UnknownName:
                    pass  # no rows for this group: the report notes it
    except StudyError as e:
        raise ConfigError(f"human.subgroups: {e}") from None
