"""Feasibility before work (issue 24): a run checks what it needs at its size
before the first LLM call; a shortfall is one line naming the field or file."""
from __future__ import annotations

import json
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from agents.llm.cache import CachedEngine
from core.errors import PersonaeError
from scenarios.config import ConfigError, load_config
from simulation.runner import RunError, preflight, run

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "scenarios" / "paper" / "representatives.yaml"


@pytest.fixture()
def calls(monkeypatch):
    """Every batch any engine is handed, counted at the cache (above any model)."""
    seen = []
    for op in ("option_probs", "generate", "loglikelihood"):
        real = getattr(CachedEngine, op)
        monkeypatch.setattr(CachedEngine, op, lambda self, reqs, _real=real: (seen.append(len(reqs)), _real(self, reqs))[1])
    return seen


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_payoff_model(folder: Path) -> Path:
    from mechanisms.payoff_model import RECORD

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / RECORD).write_text("{}")
    return folder


def preset(tmp_path: Path, *extra: str):
    return load_config(PRESET, ["engine.kind=fake", "engine.endpoints=[]", "options.judge=null",
                                f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}", *extra])


@pytest.mark.fast
def test_representatives_preset_at_full_size_passes_feasibility(tmp_path):
    """110 groups x (2 history + 1) = 330 distinct debate questions from the
    shipped 1,000-question subset; the payoff model folder is checked too."""
    from mechanisms.episode import load_questions
    from scenarios.consensus import ConsensusModel, questions_path

    cfg = preset(tmp_path, f"options.payoff_model={trained_payoff_model(tmp_path / 'pm')}")
    assert cfg.population.size == 550 and cfg.options["groups"] == 110 and cfg.options["history"] == 2
    assert preflight(cfg) == [cfg.engine]
    qs = load_questions(questions_path(ConsensusModel.options_of(cfg)), n=330, seed=cfg.seed)
    assert len({q.id for q in qs}) == len({q.question for q in qs}) == 330
    attribution = (ROOT / "data" / "habermas" / "ATTRIBUTION.md").read_text()
    assert "questions_1000.json" in attribution and "Tessler et al., Science 2024" in attribution


@pytest.mark.fast
def test_short_question_supply_is_one_line_before_any_engine_call(tmp_path, calls):
    """The issue's IndexError: 330 questions needed, the default file holds 200.
    Now one line naming the field, the file and the numbers; nothing computed,
    not even the store opened."""
    cfg = preset(tmp_path, "options.questions=null", f"options.payoff_model={trained_payoff_model(tmp_path / 'pm')}")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("options.questions") and "holds 200 debate questions" in msg and "need 330" in msg, msg
    assert calls == [] and not (tmp_path / "s.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.fast
def test_a_group_never_gets_a_shorter_history(tmp_path, calls):
    """history questions per group are all there or it is an error (never group 66
    silently debating one history question instead of two)."""
    small = tmp_path / "q.json"
    rows = json.loads((ROOT / "data" / "habermas" / "questions.json").read_text())[:8]
    small.write_text(json.dumps(rows))
    cfg = preset(tmp_path, "population.size=15", "options.groups=3", "options.group_size=5", "options.payoff=self_rating",
                 f"options.questions={small}")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert str(err.value).startswith(f"options.questions: {small} holds 8 debate questions; 3 groups x (history 2 + 1) need 9")
    assert calls == []


@pytest.mark.fast
def test_missing_payoff_model_is_one_line_before_any_engine_call(tmp_path, calls):
    cfg = preset(tmp_path, f"options.payoff_model={tmp_path / 'none'}")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert str(err.value).startswith(f"options.payoff_model: {tmp_path / 'none'}: no trained payoff model") and "\n" not in str(err.value)
    assert calls == [] and not (tmp_path / "s.db").exists()


@pytest.mark.fast
def test_unreachable_engine_or_judge_is_one_line_before_any_engine_call(tmp_path, calls):
    """GET /models on each endpoint first; a closed port is one line, the run is
    recorded as failed (an outage, like one met later) and nothing was computed."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = load_config(ROOT / "scenarios/gss_spending.yaml", [
        "engine.kind=openai", f"engine.endpoints=[{url}]", "engine.retries=2", f"store={tmp_path / 's.db'}",
        f"output={tmp_path / 'runs'}", "population.size=2", "population.conditions=[anthology]", "human.sample=4"])
    with pytest.raises(RunError) as err:
        run(cfg)
    assert str(err.value) == f"engine openai: {url} unreachable after 2 tries (connection refused); nothing was computed"
    assert calls == []
    with closing(sqlite3.connect(tmp_path / "s.db")) as con:
        assert con.execute("select count(*) from responses").fetchone()[0] == 0
        assert con.execute("select count(*) from personas").fetchone()[0] == 0
        assert con.execute("select status, message from runs").fetchall() == [("failed", str(err.value))]

    judge = preset(tmp_path / "j", "population.size=10", "options.groups=2", "options.payoff=self_rating",
                   f"options.judge={{kind: openai, model: j, endpoints: [{url}], retries: 1}}")
    with pytest.raises(RunError) as err:
        run(judge)
    assert str(err.value) == f"judge openai: {url} unreachable after 1 tries (connection refused); nothing was computed"
    assert calls == []


@pytest.mark.fast
def test_too_few_respondents_is_one_line_before_any_engine_call(tmp_path, calls):
    cfg = load_config(ROOT / "scenarios/gss_spending.yaml", [
        "engine.kind=fake", f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}", "population.size=2",
        "population.conditions=[anthology]", "human.sample=100000"])
    with pytest.raises(PersonaeError) as err:
        run(cfg)
    msg = str(err.value)
    assert msg.startswith("human.sample: 100000 respondents asked for") and "gss_spending" in msg and "\n" not in msg, msg
    assert calls == []
    cfg = load_config(ROOT / "scenarios/gss_spending.yaml", [
        "engine.kind=fake", f"store={tmp_path / 't.db'}", f"output={tmp_path / 'runs'}", "population.size=3",
        "population.conditions=[anthology]", "human.sample=10", "matching=[max_weight]"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert str(err.value).startswith("matching: max_weight needs at least as many personas as humans (population.size 3 < 10 humans)")
    assert calls == []


@pytest.mark.fast
def test_a_max_weight_matrix_larger_than_the_machine_is_one_line_before_any_engine_call(tmp_path, calls, monkeypatch):
    """Max-weight matching needs its H x V float64 matrix whole (scipy's exact
    solver): a run whose matrix cannot fit stops before generating anything,
    instead of after hours of generation."""
    import scenarios.population as pop
    from analysis.matching import available_memory, max_weight_bytes

    free = available_memory()
    assert free is not None and 0 < free < 2**50  # this OS says (Linux /proc/meminfo)
    assert max_weight_bytes(10_000, 40_000) == 3_200_000_000  # the talk's 40k personas x 10k humans: 3.0 GB
    overrides = ["engine.kind=fake", f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}", "population.size=12",
                 "population.conditions=[anthology]", "human.sample=10", "matching=[max_weight]"]
    monkeypatch.setattr(pop, "available_memory", lambda: max_weight_bytes(10, 12) - 1)  # a machine one byte short
    with pytest.raises(ConfigError) as err:
        run(load_config(ROOT / "scenarios/gss_spending.yaml", overrides))
    msg = str(err.value)
    assert msg.startswith("matching: max_weight holds a 10 x 12 weight matrix (0.0 GB) and this machine has 0.0 GB available; use greedy"), msg
    assert "\n" not in msg and calls == []
    monkeypatch.setattr(pop, "available_memory", lambda: max_weight_bytes(10, 12))  # exactly enough: the run goes on
    pop.check_sizes(load_config(ROOT / "scenarios/gss_spending.yaml", overrides), type("S", (), {"n": 10, "is_individual": True})())
