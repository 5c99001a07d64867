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

import numpy as np
import pandas as pd

from analysis import estimators
from analysis.studies import StudyError, UnknownName
from scenarios.config import ConfigError

from .base import StudySurveyModel
from .contract import ScenarioReport

PROFILE_CONDITIONS = ("qa", "bio", "portray")  # one persona per respondent, from their demographics


class SurveyScenario(StudySurveyModel):
    scenario = "survey"
    title = "Survey"

    def load_study(self):
        if self.cfg.human is None:
            raise ConfigError(f"human.study: required for scenario '{self.cfg.scenario}' (a built-in study name or a study YAML path)")
        study = super().load_study()
        check_run(self.cfg, study)
        self.title = study_title(study)
        return study

    def select_humans(self, study):
        # Kept before human.sample: the individual-level demographic-cell baseline reads every respondent.
        self.reference_study = super().select_humans(study)
        return self.reference_study


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
        add_individual_level(self, report)
        # The study's warnings head the report (analysis.report); the scenario's own are added here.
        report.notes.extend(f"config: {n}" for n in self.cfg.notes())
        return report

    def individual_answers(self, study, items: list, which: str = "responses") -> np.ndarray | None:
        """``[study.n, Q]`` each respondent's answers to ``items`` (``which``:
        ``responses`` or ``retest``; NaN = none), or None when the study has no such answers."""
        return study_answers(study, [i.id for i in items], which)


def study_answers(study, item_ids: list[str], which: str = "responses") -> np.ndarray | None:
    """The study's own columns for ``item_ids`` (NaN where an item has none)."""
    table = study.responses if which == "responses" else study.retest
    if table is None or not any(q in table.columns for q in item_ids):
        return None
    return table.reindex(columns=item_ids).to_numpy(dtype=float)


def individual_level(model) -> list:
    """:class:`analysis.individual.IndividualFidelity` of every population whose
    personas are bound to respondents (matching of any kind, Anthology (DP), the
    rule-based profiles), on the items whose human answers the model's
    ``individual_answers`` gives; [] when there are none."""
    from analysis.distributions import option_positions
    from analysis.individual import individual_fidelity
    from analysis.individual_baselines import Reference

    study = model.study
    if study is None or not study.is_individual:
        return []
    items = [i for i in model.item_list if i.options]
    answers = model.individual_answers(study, items)
    if answers is None or not np.isfinite(answers).any():
        return []
    retest = model.individual_answers(study, items, "retest")
    reference = getattr(model, "reference_study", None) or study
    ref_answers = model.individual_answers(reference, items)
    if ref_answers is None:  # cannot happen for a subset of the study; then the evaluated people are the reference
        reference, ref_answers = study, answers
    ref_rows = {rid: j for j, rid in enumerate(reference.row_ids)}
    self_index = np.array([ref_rows.get(rid, -1) for rid in study.row_ids], dtype=np.int64)
    k = max(len(i.options) for i in items)
    positions = np.zeros((len(items), k))
    for j, item in enumerate(items):
        positions[j, : len(item.options)] = option_positions(len(item.options), item.positions, normalize=True)
    nominal = [item.id in study.question_ids and study.question(item.id).nominal for item in items]
    est = estimators.Estimator.of(model.cfg.analysis)
    demographics = study.demographics.to_numpy(np.int64)
    out = []
    for p_i, population in enumerate(model.populations):
        if population.matching == "none":
            continue
        agents = [a for a in model.agents_of(p_i) if a.human is not None]
        if not agents:
            continue
        rows = np.array([a.human for a in agents], dtype=np.int64)
        probs = np.zeros((len(agents), len(items), k))
        for r, a in enumerate(agents):
            for j, item in enumerate(items):
                ans = a.answers.get(item.id)
                if ans is not None:
                    probs[r, j, : len(ans.probs)] = ans.probs
        probs = estimators.apply(est, probs, model.cfg.seed, [a.persona_id for a in agents], [i.id for i in items])
        out.append(
            individual_fidelity(
                probs,
                answers[rows],
                positions,
                nominal,
                demographics[rows],
                study.weights[rows],
                retest=None if retest is None else retest[rows],
                reference=Reference(ref_answers, reference.demographics.to_numpy(np.int64), reference.weights),
                self_index=self_index[rows],
                condition=population.label,
                ids=study.row_ids[rows],
                seed=model.cfg.seed,
            )
        )
    return out


def _json_id(value):
    """A respondent's row label as JSON: numbers stay numbers."""
    value = value.item() if isinstance(value, np.generic) else value
    return value if isinstance(value, (int, float, str)) else str(value)


def add_individual_level(model, report) -> None:
    """The individual-level table, plot, note, per-person records, header
    line and alert (``analysis.individual``) of a survey or partisan report."""
    from analysis import individual_report as individual

    results = individual_level(model)
    if not results:
        if any(p.matching != "none" for p in getattr(model, "populations", [])) and model.study is not None:
            report.notes.append("individual_level: not in this study (it holds none of the asked items for the bound respondents).")
        return
    est = estimators.Estimator.of(model.cfg.analysis)
    retest_note = model.study.retest_note if model.study.retest is not None else ""
    report.tables["individual_level"] = individual.individual_table(results)
    report.notes.append(individual.NOTE)
    fallback = max(r.cell_fallback for r in results)
    if fallback > 0:
        report.notes.append(
            f"individual_level: up to {fallback:.0%} of a condition's answers had a demographic cell with nobody else who "
            "answered the item; their cell baseline is read from the whole population (leaving the respondent out)."
        )
    report.jsonl["individual_level"] = [r.record() for r in results]
    report.jsonl["individual_per_person"] = [
        {"condition": r.condition, "person": _json_id(i), **{c: (None if not np.isfinite(v) else float(v)) for c, v in row.items()}}
        for r in results
        for i, row in r.per_person.iterrows()
    ]
    report.plots["plots/individual_level"] = individual.plot_individual(
        results, f"{model.cfg.name}: each persona vs its own respondent ({'probabilities' if not est.samples else f'{est.samples} samples'})"
    )
    line = individual.describe(est.answers, retest_note, weighted=model.study.weight_column is not None)
    report.estimator = f"{report.estimator}; {line}" if report.estimator else line
    if alert := individual.no_binding_alert(results):
        report.alerts.append(alert)


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
