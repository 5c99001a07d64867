"""Running a scenario: config -> model -> steps -> report; resume and replay.

Data flows one way: scenario YAML -> model -> persona agents -> engine (cached
in the store) -> episode log -> analysis -> report files. A replay swaps the
engine for the store: the same model is rebuilt from the same configuration,
every engine request is answered from the store (a miss is an error, never a
call) and every step is re-applied from the episode log.
"""
from __future__ import annotations

from core.errors import PersonaeError

import json

import filecmp
import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from agents.llm.factory import cached_engine
from simulation.config import ScenarioConfig, validate_config
from simulation.console import RunConsole
from simulation.store import Store

SCENARIOS = {
    "atp_poll": "scenarios.atp_poll:AtpPollModel",
    "gss_spending": "scenarios.gss_spending:GssSpendingModel",
    "partisan_hostility": "scenarios.partisan_hostility:PartisanHostilityModel",
    "subversion": "scenarios.subversion:SubversionModel",
    "meta_prejudice": "scenarios.meta_prejudice:MetaPrejudiceModel",
    "consensus": "scenarios.consensus:ConsensusModel",
}


class RunError(PersonaeError, RuntimeError):
    pass


def scenario_class(name: str):
    if name not in SCENARIOS:
        raise RunError(f"scenario: unknown scenario '{name}' (expected one of {', '.join(SCENARIOS)})")
    module, cls = SCENARIOS[name].split(":")
    return getattr(importlib.import_module(module), cls)


@dataclass
class RunResult:
    run_id: str
    output_dir: Path
    files: list[Path]
    engine_calls: int
    store_hits: int
    resumed: bool = False
    summary: dict = field(default_factory=dict)


def output_dir(cfg: ScenarioConfig, run_id: str) -> Path:
    return Path(cfg.output) / run_id


def build_model(cfg: ScenarioConfig, store: Store, run_id: str, *, replay: bool = False, console: RunConsole | None = None):
    engine = cached_engine(cfg.engine, store, replay=replay)
    cls = scenario_class(cfg.scenario)
    return cls(cfg, engine, store, run_id, progress=console.progress if console else None)


def write_outputs(model, out: Path) -> list[Path]:
    """Evaluate the finished model and write every report file into ``out``."""
    from analysis.report import markdown_table, write_report

    out.mkdir(parents=True, exist_ok=True)
    result = model.evaluate()
    files: list[Path] = []
    evaluations = result.get("evaluations") or []
    if evaluations:
        files += write_report(evaluations, out, title=f"{model.cfg.name}: {model.title}")
    summary = out / "summary.md"
    extra = []
    if not evaluations:
        extra.append(f"# {model.cfg.name}: {model.title}\n")
    for name, df in result.get("tables", {}).items():
        path = out / f"{name}.csv"
        df.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
        files.append(path)
        extra.append(f"\n## {name.replace('_', ' ')}\n\n{markdown_table(df.set_index(df.columns[0]))}\n")
    for note in result.get("notes", []):
        extra.append(f"\n> {note}\n")
    if extra:
        with open(summary, "a" if evaluations else "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(extra))
        if summary not in files:
            files.insert(0, summary)
    for name, records in result.get("jsonl", {}).items():
        path = out / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
        files.append(path)
    answers = answers_table(model)
    if len(answers):
        path = out / "answers.csv"
        answers.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
        files.append(path)
    return files


def answers_table(model) -> pd.DataFrame:
    """Mean persona distribution per condition and item (the raw result)."""
    rows = []
    for item in model.item_list:
        for label, probs in model.population_distributions(item.id).items():
            rows.append({"item": item.id, "condition": label, **{f"p{k}": p for k, p in enumerate(probs)}})
    return pd.DataFrame(rows)


def run(cfg: ScenarioConfig, *, console: RunConsole | None = None, label: str = "") -> RunResult:
    console = console or RunConsole(live=False)
    store = Store(cfg.store)
    run_id = cfg.run_id()
    out = output_dir(cfg, run_id)
    resumed = store.get_run(run_id) is not None
    with console:
        console.line(f"run {run_id} ({'resuming' if resumed else 'new'}) — {cfg.scenario}, {label or 'scenario'}; store {cfg.store}")
        model = build_model(cfg, store, run_id, console=console)
        # Registered once the model is built: a bad study or scenario leaves no run behind.
        store.start_run(run_id, cfg.scenario, cfg.model_dump(mode="json"), str(out))
        human = model.human_distributions() if hasattr(model, "human_distributions") else None
        while model.running:
            model.step()
            metrics = model.running_metrics() if hasattr(model, "running_metrics") else None
            console.step(model, human, metrics)
        files = write_outputs(model, out)
    store.finish_run(run_id)
    return RunResult(run_id, out, files, model.engine.misses, model.engine.hits, resumed)


def replay(run_id: str, store_path: str, *, console: RunConsole | None = None, out_dir: str | None = None) -> tuple[RunResult, bool]:
    """Rebuild a logged run with no engine; return (result, report identical)."""
    console = console or RunConsole(live=False)
    store = Store(store_path)
    row = store.get_run(run_id)
    if row is None:
        known = ", ".join(r["run_id"] for r in store.list_runs()[-5:]) or "none"
        raise RunError(f"replay: no run '{run_id}' in {store_path} (latest: {known})")
    cfg = validate_config(row["config"], f"{store_path}:runs[{run_id}].config")
    original = Path(row["output_dir"])
    out = Path(out_dir) if out_dir else original / "replay"
    if out.exists():
        shutil.rmtree(out)
    with console:
        console.line(f"replay {run_id} from {store_path} (no engine calls)")
        model = build_model(cfg, store, run_id, replay=True, console=console)
        while model.running:
            model.step()
            console.step(model)
        files = write_outputs(model, out)
    same = all(
        (original / f.relative_to(out)).exists() and filecmp.cmp(f, original / f.relative_to(out), shallow=False)
        for f in files
    )
    return RunResult(run_id, out, files, model.engine.misses, model.engine.hits), same
