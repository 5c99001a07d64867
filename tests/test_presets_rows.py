"""The paper presets list every row of the published tables, labelled as in the
paper, at the paper's settings (no model: the YAMLs are read and validated)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents import backstories as bs
from agents.generative_agent import PARK2024_EXPERTS

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "scenarios" / "paper"
PARTISAN = ["hostility_kang2025", "subversion_kang2025", "meta_prejudice_kang2025", "hostility_w110", "subversion_braley2023", "meta_prejudice_moore_berg2020"]
TALK_ROWS = ["QA", "Bio", "Portray", "Anthology", "Ours", "Generative Agent"]


def _labels(cfg) -> set[str]:
    """The condition labels a run of ``cfg`` reports (scenarios.population.Population.label)."""
    out = set()
    for c in cfg.population.conditions:
        if c in ("qa", "bio", "portray", "anthology_dp"):
            out.add(c)
        else:
            out |= {f"{c} ({m})" for m in cfg.matching}
    assert out <= set(cfg.reported_labels())
    return out


def _load(name: str):
    from scenarios.config import load_config

    path = PAPER / f"{name}.yaml"
    return yaml.safe_load(path.read_text()), load_config(path)


@pytest.mark.fast
@pytest.mark.parametrize("name", PARTISAN)
def test_partisan_presets_list_the_talks_rows(name):
    raw, cfg = _load(name)
    assert list(cfg.rows) == TALK_ROWS
    assert set(cfg.rows.values()) <= _labels(cfg), "every row is a condition the run reports"
    assert cfg.rows["Ours"] == "interview (greedy)" and cfg.rows["Generative Agent"] == "generative_agent (greedy)"
    b = cfg.population.backstories
    # Ours: the ten American Voices questions, ~2,500 words, both critics
    assert (b.interview_questions, b.interview_words, b.critic, b.consistency_rounds) == (10, 2500, True, 1)
    assert "anthology_prompt" in raw["population"]["backstories"]  # each preset says which Anthology prompt it uses
    g = cfg.population.generative_agent
    assert tuple(g.experts) == PARK2024_EXPERTS and "behavioral_economist" in g.experts and g.source == "interview"


@pytest.mark.fast
def test_anthology_main_preset_has_the_dp_rows_and_random_matching():
    raw, cfg = _load("anthology_atp_main")
    assert list(cfg.rows) == ["Bio", "QA", "Anthology (DP)", "Anthology (NA) max weight", "Anthology (NA) greedy", "random"]
    assert set(cfg.rows.values()) <= _labels(cfg)
    assert cfg.matching == ["max_weight", "greedy", "random"] and "anthology_dp" in cfg.population.conditions
    assert cfg.population.backstories.anthology_prompt == "cued"
    raw, cfg = _load("anthology_atp_subgroups")
    assert set(cfg.rows.values()) <= _labels(cfg) and "anthology_prompt" in raw["population"]["backstories"]


@pytest.mark.fast
def test_a_row_naming_no_condition_is_one_line(tmp_path):
    from scenarios.config import ConfigError, load_config

    path = PAPER / "hostility_kang2025.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(path, ['rows={QA: qa, Ours: "interview (best)"}'])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: rows") and "'Ours' names 'interview (best)'" in msg and "expected 'condition (matching)'" in msg
    # narrowing the conditions keeps the rows: the report leaves the others out and says so
    cfg = load_config(path, ["population.conditions=[qa]"])
    assert cfg.rows_not_run() == TALK_ROWS[1:] and cfg.row_labels()["qa"] == "QA"
    assert cfg.run_id() == load_config(path, ["population.conditions=[qa]", "rows={}"]).run_id()  # labels only


@pytest.mark.fast
def test_the_plain_anthology_prompt_is_a_named_variant_with_its_own_bank():
    from agents.llm.fake_engine import FakeEngine
    from scenarios.config import load_config
    from scenarios.population import bank_name

    assert bs.ANTHOLOGY_PROMPTS["plain"] == "Question: Tell me about yourself.\nAnswer:"
    assert bs.ANTHOLOGY_PROMPTS["cued"] == bs.ANTHOLOGY_PROMPT and "How old are you?" in bs.ANTHOLOGY_PROMPT
    drafts = [bs.Draft(idx=i, seed=i) for i in range(2)]
    bs.anthology(FakeEngine(), drafts, bs.GenerationParams(max_tokens=8, anthology_prompt="plain"))
    assert all(d.prompts["backstory"] == bs.ANTHOLOGY_PROMPTS["plain"] for d in drafts)
    assert all(d.conditioning.startswith("Question: Tell me about yourself.\nAnswer:") for d in drafts)
    cued = load_config(ROOT / "scenarios" / "survey.yaml")
    plain = load_config(ROOT / "scenarios" / "survey.yaml", ["population.backstories.anthology_prompt=plain"])
    assert bank_name(cued, "anthology") != bank_name(plain, "anthology") and bank_name(plain, "anthology").endswith("-plain-s0")
    with pytest.raises(ValueError):
        bs.GenerationParams(anthology_prompt="chatty")


@pytest.mark.fast
def test_the_representatives_preset_states_its_population_mismatch():
    text = (PAPER / "representatives.yaml").read_text()
    raw = yaml.safe_load(text)
    assert "US" in raw["x-population"] and "UK" in raw["x-population"]


@pytest.mark.fast
@pytest.mark.parametrize("name", ["consistency", "depth", "quantity"])
def test_ablations_use_the_instrument_and_estimator_of_the_table_they_ablate(name):
    from scenarios.config import load_config

    path = ROOT / "scenarios" / "ablations" / f"{name}.yaml"
    raw, cfg = yaml.safe_load(path.read_text()), load_config(path)
    _, table = _load(raw["x-table"])
    assert cfg.scenario == table.scenario and cfg.human.study == table.human.study and cfg.human.overrides == table.human.overrides
    assert cfg.questionnaire.series == table.questionnaire.series and cfg.matching == table.matching
    same = ("positions", "persona_answers", "samples")
    assert {k: getattr(cfg.analysis, k) for k in same} == {k: getattr(table.analysis, k) for k in same}
