"""Every shipped scenario end to end on the embedded model (tiny sizes), replay,
kill -9 and resume, bad YAML / overrides, plain console output."""
from __future__ import annotations

import filecmp
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from killing import count, kill_when
import pytest

from simulation.config import ConfigError, load_config
from simulation.runner import replay, run

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))


def tiny(store: Path, out: Path, extra: list[str] = ()) -> list[str]:
    return [
        "population.size=2",
        "population.backstories.max_tokens=12",
        "population.backstories.interview_questions=1",
        f"store={store}",
        f"output={out}",
        *extra,
    ]


# Per scenario: extra overrides that keep it small, and the table its report must have.
CASES = {
    "atp_poll.yaml": (["questionnaire.questions=[FUD35_W34, FUD22_W34]"], "answers.csv"),
    "gss_spending.yaml": (["human.sample=6", "human.lower_bound_splits=10", "questionnaire.questions=[natspac, natenvir, natheal]", "population.conditions=[anthology, qa]"], "conditions.csv"),
    "meta_prejudice.yaml": (["human.sample=6", "population.conditions=[anthology, qa]"], "meta_perception.csv"),
    "partisan_hostility.yaml": (["human.sample=4", "population.conditions=[qa, bio]", "questionnaire.questions=[moral_democrat, moral_republican, honest_democrat, honest_republican]"], "hostility.csv"),
    "subversion.yaml": (["human.sample=4", "population.conditions=[portray]", "questionnaire.questions=[self_courts, outgroup_courts, self_violence, outgroup_violence]"], "subversion.csv"),
    "consensus.yaml": (["options={groups: 1, group_size: 3, rounds: 1, candidates: 2, history: 0, representatives: [], opinion_tokens: 12, critique_tokens: 12, statement_tokens: 16}", "population.size=3"], "consensus.csv"),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store for the module: the anthology bank is generated once."""
    d = tmp_path_factory.mktemp("scen")
    return d / "store.db", d / "runs"


def test_every_shipped_scenario_is_covered():
    assert set(SCENARIOS) <= set(CASES), f"add a case for {set(SCENARIOS) - set(CASES)}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_runs_end_to_end(name, shared, capsys):
    extra, table = CASES[name]
    cfg = load_config(ROOT / "scenarios" / name, tiny(*shared, extra))
    result = run(cfg)
    printed = capsys.readouterr().out
    if table == "conditions.csv":  # live human distribution and running metrics in the log
        assert "; human: " in printed and "running WD: " in printed
    out = result.output_dir
    assert (out / "summary.md").exists() and (out / table).exists()
    df = pd.read_csv(out / table)
    assert len(df) > 0
    conds = cfg.population.conditions
    if table == "conditions.csv":
        assert len(df) == len(conds) + 1  # conditions side by side, then the human lower bound
        assert df.iloc[-1, 0].startswith("Human")
    elif "party" in df.columns:
        assert set(df["party"]) == {"Democrat", "Republican"}
        assert df["condition"].nunique() == len(conds)
        assert {"delta", "cohens_d", "human_delta"} <= set(df.columns)
    if name == "consensus.yaml":  # the episode log feeds fine-tuned representatives
        from agents.representatives.deliberations import load

        data = load(out / "episodes.jsonl")
        assert 1 <= len(data.examples) <= 3  # one critique per participant of the one group
        assert len({e.participant for e in data.examples}) == len(data.examples)
    answers = pd.read_csv(out / "answers.csv") if (out / "answers.csv").exists() else None
    if answers is not None and len(answers):
        probs = answers.filter(regex=r"^p\d+$").fillna(0).sum(axis=1)
        assert ((probs - 1).abs() < 1e-5).all()


def test_replay_reproduces_the_report_with_no_engine_calls(shared):
    cfg = load_config(ROOT / "scenarios" / "meta_prejudice.yaml", tiny(*shared, CASES["meta_prejudice.yaml"][0]))
    original = run(cfg)
    result, same = replay(original.run_id, str(cfg.store))
    assert result.engine_calls == 0  # steps come from the episode log, personas from the bank
    assert same
    for f in result.files:
        assert filecmp.cmp(f, original.output_dir / f.relative_to(result.output_dir), shallow=False)


def test_kill_then_resume_equals_clean_run(tmp_path):
    args = ["human.sample=6", "population.conditions=[anthology, qa]", "human.lower_bound_splits=10",
            "questionnaire.questions=[natspac, natenvir, natheal, natcity]"]
    killed_db, clean_db = tmp_path / "killed.db", tmp_path / "clean.db"
    sets = [x for a in tiny(killed_db, tmp_path / "runs-k", args) for x in ("--set", a)]
    cmd = [sys.executable, str(ROOT / "run.py"), "scenarios/gss_spending.yaml", "--plain", *sets]
    steps_done = kill_when(cmd, ROOT, killed_db, "select count(distinct step) from events", 1)
    assert 1 <= steps_done < 4, "the kill must land in the middle of the run"
    calls_before = count(killed_db, "select count(*) from responses")

    resumed = run(load_config(ROOT / "scenarios" / "gss_spending.yaml", tiny(killed_db, tmp_path / "runs-k", args)))
    assert resumed.resumed
    assert count(killed_db, "select count(*) from responses") == calls_before + resumed.engine_calls

    clean = run(load_config(ROOT / "scenarios" / "gss_spending.yaml", tiny(clean_db, tmp_path / "runs-c", args)))
    # no finished engine call was repeated: both runs made the same calls in total
    assert calls_before + resumed.engine_calls == clean.engine_calls
    assert resumed.run_id == clean.run_id
    for f in clean.files:
        rel = f.relative_to(clean.output_dir)
        assert filecmp.cmp(f, resumed.output_dir / rel, shallow=False), f"{rel} differs"


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("name: x\nscenario: gss_spending\npopulation: {size: [\n", [], r"bad\.yaml: not valid YAML at line \d+"),
        ("name: x\nscenario: gss_spending\npopulation: {sise: 3}\n", [], r"bad\.yaml: population\.sise: unknown field"),
        ("name: x\nscenario: gss_spending\n", ["population.size=ten"], r"bad\.yaml: population\.size: .*integer.*'ten'"),
        ("name: x\nscenario: gss_spending\n", ["population.size"], r"--set population\.size: expected path\.to\.key=value"),
        ("name: x\nscenario: gss_spending\nengine: {kind: gpt}\n", [], r"bad\.yaml: engine\.kind: expected"),
        ("name: x\nscenario: nope\n", [], r"scenario: unknown scenario 'nope'"),
        ("name: x\nscenario: gss_spending\nhuman: {study: nowhere_study}\n", [], r"nowhere_study"),
    ],
)
def test_bad_yaml_and_overrides_give_one_line_and_write_nothing(tmp_path, text, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    sets = [x for o in overrides + [f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}"] for x in ("--set", o)]
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(path), *sets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_unknown_field_error_in_load_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nscenario: gss_spending\nmatching: [best]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: matching\[0\]: expected"):
        load_config(p)


def test_console_without_terminal_prints_plain_lines(shared):
    store, out = shared
    sets = [x for a in tiny(store, out, CASES["subversion.yaml"][0]) for x in ("--set", a)]
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "scenarios/subversion.yaml", *sets], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "\x1b[" not in proc.stdout  # no ANSI escapes or cursor movement in a log
    steps = [ln for ln in lines if re.match(r"\[\d\d:\d\d\] step \d+/4 ", ln)]
    assert len(steps) == 4
    assert any("results written to" in ln for ln in lines)


def test_sweep_runs_every_combination_through_batch_run(tmp_path):
    from simulation.sweep import run_sweep

    cfg = load_config(
        ROOT / "scenarios" / "gss_spending.yaml",
        tiny(tmp_path / "s.db", tmp_path / "runs", ["human.sample=4", "human.lower_bound_splits=5", "questionnaire.questions=[natspac, natenvir]",
                                                     "sweep={population.conditions: [[qa], [bio]], seed: [0, 1]}"]),
    )
    out = run_sweep(cfg, "sweep-test")
    table = pd.read_csv(out / "sweep.csv")
    assert table["run_id"].nunique() == 4
    assert set(table["seed"]) == {0, 1}
    assert set(table["population.conditions"]) == {'["qa"]', '["bio"]'}
    assert (out / "summary.md").read_text().startswith("# gss_spending: sweep over")
