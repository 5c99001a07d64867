"""Every shipped scenario end to end on the embedded model (tiny sizes), replay,
bad YAML / overrides, plain console output. (Kill -9 and resume of a scenario
run: tests/test_faults.py, which kills inside the question steps.)"""
from __future__ import annotations

import filecmp
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenarios.config import ConfigError, load_config
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


@dataclass(frozen=True)
class Table:
    """A table a scenario's report must hold: its columns, its row count given
    the run's configuration, and the range every value of some columns must lie in."""

    name: str
    columns: frozenset[str]
    rows: Callable[[object], int]
    ranges: tuple[tuple[str, float, float], ...] = ()
    values: tuple[tuple[str, frozenset], ...] = ()  # column -> the exact set of values it holds


@dataclass(frozen=True)
class Case:
    """A shipped scenario at a tiny size and what its report must hold."""

    scenario: str
    overrides: tuple[str, ...]
    tables: tuple[Table, ...]
    console: tuple[str, ...] = ()  # text the plain console must print while it runs


def _n_populations(cfg) -> int:
    assert len(cfg.matching) == 1  # every case uses one matching method: one population per condition
    return len(cfg.population.conditions)


ANSWERS = Table("answers", frozenset({"item", "condition", "p0", "p1"}), lambda cfg: len(cfg.questionnaire.questions) * _n_populations(cfg), (("p0", 0, 1), ("p1", 0, 1)))
# The two parties' rows per condition, the personas' gap finite and its interval around it.
GAP_COLUMNS = frozenset({"condition", "party", "persona_delta", "persona_ci_low", "persona_ci_high", "persona_d", "published_delta"})
PARTIES = (("party", frozenset({"Democrat", "Republican"})),)


def gap_table(name: str, lo: float, hi: float) -> Table:
    return Table(name, GAP_COLUMNS, lambda cfg: 2 * _n_populations(cfg), (("persona_delta", lo, hi),), PARTIES)


CASES = {
    # A synthetic file shaped like Pew ATP W34 (not Pew data): without a file the scenario stops.
    "atp_poll.yaml": Case(
        "atp_poll",
        (f"human.overrides.source.path={ROOT / 'tests/data/synthetic_atp_w34_not_pew_data.sav'}", "human.sample=4",
         "population.conditions=[qa]", "human.lower_bound_splits=5", "questionnaire.questions=[FUD35_W34, FUD22_W34]"),
        (Table("conditions", frozenset({"condition", "matching"}), lambda cfg: _n_populations(cfg) + 1), ANSWERS),
    ),
    "survey.yaml": Case(
        "survey",
        ("human.sample=4", "population.conditions=[qa]", "human.lower_bound_splits=5", "questionnaire.questions=[economy_national, economy_household]"),
        (Table("conditions", frozenset({"condition", "matching"}), lambda cfg: _n_populations(cfg) + 1), ANSWERS,
         Table("alpha_per_scale", frozenset({"scale", "condition", "alpha_human", "alpha_persona"}), lambda cfg: _n_populations(cfg))),
    ),
    "gss_spending.yaml": Case(
        "gss_spending",
        ("human.sample=6", "human.lower_bound_splits=10", "questionnaire.questions=[natspac, natenvir, natheal]", "population.conditions=[anthology, qa]"),
        # conditions side by side, then the human lower bound
        (Table("conditions", frozenset({"condition", "matching"}), lambda cfg: _n_populations(cfg) + 1), ANSWERS),
        console=("; human: ", "running WD: "),
    ),
    "meta_prejudice.yaml": Case(
        "meta_prejudice",
        ("human.sample=6", "population.conditions=[anthology, qa]"),
        (gap_table("meta_perception", -4, 4), Table("answers", ANSWERS.columns, lambda cfg: 3 * _n_populations(cfg), ANSWERS.ranges)),
        console=("; human: ", "running WD: "),  # the represented partisans' thermometers
    ),
    "partisan_hostility.yaml": Case(
        "partisan_hostility",
        ("human.sample=6", "population.conditions=[qa, bio]", "questionnaire.questions=[moral_democrat, moral_republican, honest_democrat, honest_republican]"),
        (gap_table("hostility", -4, 4), ANSWERS),
    ),
    "subversion.yaml": Case(
        "subversion",
        ("human.sample=6", "population.conditions=[portray]", "questionnaire.questions=[self_courts, outgroup_courts, self_violence, outgroup_violence]"),
        (gap_table("subversion", -1, 1), ANSWERS),
    ),
    "consensus.yaml": Case(
        "consensus",
        ("options={groups: 1, group_size: 3, rounds: 1, candidates: 2, history: 0, representatives: [], budget: {opinion: 12, critique: 12, statement: 16}}", "population.size=3"),
        # one row per group and round (draft, one revision); agreement on the 1-7 scale
        (Table("consensus", frozenset({"group", "round", "mean_agreement", "min_agreement", "statement"}), lambda cfg: 2, (("mean_agreement", 1, 7), ("min_agreement", 1, 7))),),
    ),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store for the module: the anthology bank is generated once."""
    d = tmp_path_factory.mktemp("scen")
    return d / "store.db", d / "runs"


@pytest.mark.fast
def test_every_shipped_scenario_is_covered():
    assert set(SCENARIOS) <= set(CASES), f"add a case for {set(SCENARIOS) - set(CASES)}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_report_holds_its_tables(name, shared, capsys):
    case = CASES[name]
    cfg = load_config(ROOT / "scenarios" / name, tiny(*shared, list(case.overrides)))
    assert cfg.scenario == case.scenario
    result = run(cfg)
    printed = capsys.readouterr().out
    for text in case.console:
        assert text in printed, f"{name}: the console never printed {text!r}"
    assert (result.output_dir / "summary.md").exists()
    for table in case.tables:
        path = result.output_dir / f"{table.name}.csv"
        assert path in result.files, f"{name}: no {table.name} table in the report"
        df = pd.read_csv(path)  # conditions: one "<study> <metric>" column per study and metric
        cols = set(df.columns)
        assert table.columns <= cols, f"{name}: {table.name} lacks {set(table.columns) - cols}"
        assert len(df) == table.rows(cfg), f"{name}: {table.name} has {len(df)} rows"
        for col, lo, hi in table.ranges:
            vals = df[col].astype(float)
            assert vals.notna().all() and vals.between(lo, hi).all(), f"{name}: {table.name}.{col} = {vals.tolist()} not in [{lo}, {hi}]"
        for col, expected in table.values:
            assert set(df[col]) == expected, f"{name}: {table.name}.{col}"
        if table.name == "answers":  # each row a probability distribution
            probs = df.filter(regex=r"^p\d+$").fillna(0).sum(axis=1)
            assert ((probs - 1).abs() < 1e-5).all()
        if {"persona_ci_low", "persona_ci_high"} <= cols:  # each interval holds its estimate (when the bootstrap ran)
            ok = df["persona_ci_low"].isna() | ((df["persona_ci_low"] <= df["persona_delta"] + 1e-9) & (df["persona_delta"] <= df["persona_ci_high"] + 1e-9))
            assert ok.all(), df[["persona_ci_low", "persona_delta", "persona_ci_high"]]
        if table.name == "conditions":
            assert str(df.iloc[-1, 0]).startswith("Human")
    if name == "consensus.yaml":  # the episode log feeds fine-tuned representatives
        from mechanisms.finetuned_representatives.deliberations import load

        data = load(result.output_dir / "episodes.jsonl")
        assert 1 <= len(data.examples) <= 3  # one critique per participant of the one group
        assert len({e.participant for e in data.examples}) == len(data.examples)


def test_replay_reproduces_the_report_with_no_engine_calls(shared):
    cfg = load_config(ROOT / "scenarios" / "meta_prejudice.yaml", tiny(*shared, list(CASES["meta_prejudice.yaml"].overrides)))
    original = run(cfg)
    result, same = replay(original.run_id, str(cfg.store))
    assert result.engine_calls == 0  # steps come from the episode log, personas from the bank
    assert same
    for f in result.files:
        assert filecmp.cmp(f, original.output_dir / f.relative_to(result.output_dir), shallow=False)


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
        ("name: x\nscenario: gss_spending\noptions: {rounds: 2}\n", [], r"bad\.yaml: options: scenario 'gss_spending' takes no options \(got rounds\)"),
        ("name: x\nscenario: consensus\nengine: {kind: fake}\n", ["options.rounds=-1"], r"bad\.yaml: options\.rounds: expected greater than or equal to 0, got -1"),
        ("name: x\nscenario: consensus\nengine: {kind: fake}\noptions: {roundz: 1}\n", [], r"bad\.yaml: options\.roundz: unknown field"),
    ],
)
@pytest.mark.fast
def test_bad_yaml_and_overrides_give_one_line_and_write_nothing(tmp_path, text, overrides, message, capsys):
    """Through run.py's own entry point (in this process: a subprocess per case
    cost seconds of imports each; the real command line is run below)."""
    import run as cli

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    sets = [x for o in overrides + [f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}"] for x in ("--set", o)]
    assert cli.main([str(path), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-written


@pytest.mark.fast
def test_bad_yaml_on_the_real_command_line_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nscenario: gss_spending\npopulation: {sise: 3}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), str(path), "--set", f"output={tmp_path / 'runs'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: \S*bad\.yaml: population\.sise: unknown field.*\n", proc.stderr), proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.fast
def test_unknown_field_error_in_load_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nscenario: gss_spending\nmatching: [best]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: matching\[0\]: expected"):
        load_config(p)


def test_console_without_terminal_prints_plain_lines(shared):
    store, out = shared
    sets = [x for a in tiny(store, out, list(CASES["subversion.yaml"].overrides)) for x in ("--set", a)]
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
    import gc

    import mesa

    from scenarios.contract import ScenarioModel

    held = set(map(id, mesa.Agent._ids))  # models other tests in this process left behind
    out = run_sweep(cfg, "sweep-test")
    gc.collect()
    # A finished point's model (agents, personas, answers) is freed before the next
    # point is built: mesa 3.3 kept every model in Agent._ids (a 3-wave sweep held all three).
    assert not [m for m in mesa.Agent._ids if id(m) not in held and isinstance(m, ScenarioModel)]
    table = pd.read_csv(out / "sweep.csv")
    assert table["run_id"].nunique() == 4
    assert set(table["seed"]) == {0, 1}
    assert set(table["population.conditions"]) == {'["qa"]', '["bio"]'}
    assert (out / "summary.md").read_text().startswith("# gss_spending: sweep over")


def test_page_shows_the_reported_consensus_rounds(shared):
    """The browser page's consensus panel, replaying the consensus run, holds the
    statements and agreement its report gives."""
    from simulation.viz import PersonaeViz
    from simulation.viz_source import ViewSource

    cfg = load_config(ROOT / "scenarios" / "consensus.yaml", tiny(*shared, list(CASES["consensus.yaml"].overrides)))
    result = run(cfg)  # answered from the store when the parametrised case ran first
    report = pd.read_csv(result.output_dir / "consensus.csv")
    m = PersonaeViz(source=ViewSource(replay=result.run_id, store=str(cfg.store)))
    while m.running:
        m.step()
    views = m.sim.group_views()
    assert m.error is None and [v.label for v in views] == [f"group {g}" for g in sorted(report["group"].unique())]
    for g, view in enumerate(views):
        rows = report[report["group"] == g].sort_values("round")
        assert view.phase == "finished" and view.question == rows["question"].iloc[0]
        assert [s.replace("\n", " ") for s in view.statements] == rows["statement"].fillna("").tolist()
        np.testing.assert_allclose(view.agreement.mean(axis=1), rows["mean_agreement"], atol=1e-5)
        np.testing.assert_allclose(view.agreement.min(axis=1), rows["min_agreement"], atol=1e-5)
