"""Running a scenario: config -> model -> steps -> report; resume and replay.

Data flows one way: scenario YAML -> model -> persona agents -> engine (cached
in the store) -> episode log -> analysis -> report files. A replay swaps the
engine for the store: the same model is rebuilt from the same configuration,
every engine request is answered from the store (a miss is an error, never a
call) and every step is re-applied from the episode log.
"""
from __future__ import annotations

import contextlib
import filecmp
import importlib
import json
import re
import shutil
import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from agents.llm.factory import EngineConfig, cached_engine
from core.errors import PersonaeError, error_line, explain, field_path
from core.store import Store, StoreError, describe
from scenarios.config import ConfigError, ScenarioConfig, stored_config
from scenarios.contract import REGISTRY, ScenarioModel, ScenarioReport
from simulation.console import RunConsole

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class RunError(PersonaeError, RuntimeError):
    pass


def scenario_class(name: str) -> type[ScenarioModel]:
    """The class registered under ``name`` (``scenario = "name"``), from the module
    ``scenarios/<name>.py``: a new scenario is one module and its YAML."""
    if name not in REGISTRY and re.fullmatch(r"[a-z_][a-z0-9_]*", name) and (SCENARIOS_DIR / f"{name}.py").exists():
        importlib.import_module(f"scenarios.{name}")
    if name not in REGISTRY:
        raise RunError(f"scenario: unknown scenario '{name}' (expected one of {', '.join(known_scenarios())})")
    return REGISTRY[name]


def known_scenarios() -> list[str]:
    """The scenario names the modules in ``scenarios/`` declare, read from their text:
    importing every scenario just to word an error would load the agents' stack."""
    found = (re.findall(r'^    scenario = "([a-z0-9_]+)"$', p.read_text(encoding="utf-8"), re.M) for p in SCENARIOS_DIR.glob("*.py"))
    return sorted(n for names in found for n in names)


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


# The pre-flight GET /models: seconds per try (a server that is up answers at once).
PING_TIMEOUT = 3.0


def ping(engine: EngineConfig, what: str = "engine") -> None:
    """One line if an OpenAI-compatible endpoint of ``engine`` does not answer
    ``GET <endpoint>/models`` (any HTTP answer, even 401, means it is up);
    tried ``retries`` times like the engine. Other kinds have nothing to reach."""
    if engine.kind not in ("openai", "langchain") or not engine.endpoints:
        return
    tries = max(1, engine.retries)
    for url in engine.endpoints:
        cause = ""
        for attempt in range(tries):
            try:
                with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=min(PING_TIMEOUT, engine.timeout)):
                    cause = ""
                    break
            except urllib.error.HTTPError:  # it answered
                cause = ""
                break
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ConnectionRefusedError):
                    cause = "connection refused"
                elif isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
                    cause = f"timed out after {min(PING_TIMEOUT, engine.timeout):g} s"
                else:
                    cause = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
                if attempt + 1 < tries:
                    time.sleep(0.2 * (attempt + 1))
        if cause:
            raise RunError(f"{what} {engine.kind}: {url} unreachable after {tries} tries ({cause}); nothing was computed")


def check_options(cfg: ScenarioConfig, label: str = "") -> None:
    """``options:`` against the scenario's own options model: one line naming the
    file and the field (a scenario without one takes none: nothing is ignored silently)."""
    cls = scenario_class(cfg.scenario)
    where = label or "scenario"
    if cls.options_model is None:
        if cfg.options:
            raise ConfigError(f"{where}: options: scenario '{cfg.scenario}' takes no options (got {', '.join(map(str, cfg.options))})")
        return
    try:
        cls.options_model.model_validate(cfg.options)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{where}: {field_path(('options', *err['loc']))}: {explain(err)}") from None


def preflight(cfg: ScenarioConfig, label: str = "") -> list[EngineConfig]:
    """Check what the scenario needs at its size (its options, question supply,
    data and model files, ...) before anything is computed; one line on a
    shortfall. Returns every engine the run will call."""
    check_options(cfg, label)
    cls = scenario_class(cfg.scenario)
    check = getattr(cls, "preflight", None)
    extra = list(check(cfg)) if check is not None else []
    return [cfg.engine, *extra]


def build_model(cfg: ScenarioConfig, store: Store, run_id: str, *, replay: bool = False, console: RunConsole | None = None) -> ScenarioModel:
    engine = cached_engine(cfg.engine, store, replay=replay)
    cls = scenario_class(cfg.scenario)
    return cls(cfg, engine, store, run_id, progress=console.progress if console else None)


def write_outputs(model: ScenarioModel, out: Path, console: RunConsole | None = None) -> list[Path]:
    """Evaluate the finished model and write every part of its
    ``ScenarioReport`` into ``out``."""
    from analysis.report import write_report
    from analysis.report_tables import markdown_table, with_paper_rows

    out.mkdir(parents=True, exist_ok=True)
    result: ScenarioReport = model.evaluate()
    if model.kind == "survey" and model.populations:
        from scenarios.population import critic_and_spread

        # Per condition: consistency critic (flagged / fixed) and answer spread.
        result.tables.setdefault("critic_and_spread", critic_and_spread(model))
    files: list[Path] = []
    evaluations = result.evaluations
    if evaluations:
        files += write_report(evaluations, out, title=f"{model.cfg.name}: {model.title}", row_labels=model.cfg.row_labels())
    summary = out / "summary.md"
    extra = []
    if not evaluations:
        extra.append(f"# {model.cfg.name}: {model.title}\n")
    for name, df in result.tables.items():
        df = with_paper_rows(df, model.cfg.row_labels())  # a preset's rows: the paper's label beside each condition
        path = out / f"{name}.csv"
        df.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
        files.append(path)
        extra.append(f"\n## {name.replace('_', ' ')}\n\n{markdown_table(df.set_index(df.columns[0]))}\n")
    missing = model.cfg.rows_not_run()
    notes = [*result.notes, *([f"rows of the paper's table not run here: {', '.join(missing)}"] if missing else [])]
    for note in notes:
        extra.append(f"\n> {note}\n")
    if result.plots:
        extra.append("\n## Plots\n\n" + "".join(f"- [{name}]({name}.png)\n" for name in result.plots))
    if extra:
        with open(summary, "a" if evaluations else "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(extra))
        if summary not in files:
            files.insert(0, summary)
    # The header names the estimator of every figure and any alert, right under the title.
    header = [f"> **{a}**\n" for a in result.alerts] + ([f"> estimator: {result.estimator}\n"] if result.estimator else [])
    if header and summary.exists():
        title, _, rest = summary.read_text(encoding="utf-8").partition("\n")
        summary.write_text(title + "\n\n" + "\n".join(header) + rest, encoding="utf-8", newline="\n")
    for line in result.alerts:
        (console.line if console is not None else print)(line)
    for name, fig in result.plots.items():
        path = out / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": None})
        files.append(path)
    for name, records in result.jsonl.items():
        path = out / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
        files.append(path)
    answers = with_paper_rows(answers_table(model), model.cfg.row_labels())
    if len(answers):
        path = out / "answers.csv"
        answers.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
        files.append(path)
    return files


def answers_table(model: ScenarioModel) -> pd.DataFrame:
    """Mean persona distribution per condition and item (the raw result)."""
    rows = []
    for item in model.item_list:
        for label, probs in model.persona_distributions(item.id).items():
            rows.append({"item": item.id, "condition": label, **{f"p{k}": p for k, p in enumerate(probs)}})
    return pd.DataFrame(rows)


def check_writable(folder: Path, what: str) -> None:
    """Fail now, with one line, if ``folder`` cannot be created or written: not
    after minutes of LLM work, when the report is written."""
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".personae-write-check-"):
            pass
    except OSError as exc:
        raise RunError(f"{what} {folder}: cannot write there ({describe(exc)})") from None
    finally:  # leave nothing behind: a run that stops early writes no folder
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()


def stored_run_id(cfg: ScenarioConfig, store: Store) -> str:
    """The run's id: ``cfg.run_id()``, unless ``store`` holds the same run under the
    id it got before the engines' serving settings left the id (2026-12-06): it
    resumes under that one, whichever endpoints it has now."""
    run_id = cfg.run_id()
    if store.get_run(run_id) is not None:
        return run_id
    for row in reversed(store.list_runs()):  # the latest first
        if row["run_id"].startswith(f"{cfg.name}-"):
            with contextlib.suppress(PersonaeError, ValueError):  # a configuration this version cannot read: another run
                if stored_config(json.loads(row["config"]), "stored run").run_id() == run_id:
                    return row["run_id"]
    return run_id


def run(cfg: ScenarioConfig, *, console: RunConsole | None = None, label: str = "") -> RunResult:
    console = console or RunConsole(live=False)
    engines = preflight(cfg, label)  # a run that cannot finish at its size stops here, before any work
    store = Store(cfg.store)
    run_id = stored_run_id(cfg, store)
    out = output_dir(cfg, run_id)
    check_writable(out, "output folder")
    resumed = store.get_run(run_id) is not None
    registered = False
    try:
        with console:
            console.line(f"run {run_id} ({'resuming' if resumed else 'new'}) — {cfg.scenario}, {label or 'scenario'}; store {cfg.store}")
            try:
                for i, engine in enumerate(engines):
                    ping(engine, "engine" if i == 0 else "judge")
            except RunError as exc:  # an outage, not a bad study: recorded as a failed run, like one met later
                store.start_run(run_id, cfg.scenario, cfg.model_dump(mode="json"), str(out))
                registered = True
                raise exc from None
            model = build_model(cfg, store, run_id, console=console)
            # Registered once the model is built: a bad study or scenario leaves no run behind.
            store.start_run(run_id, cfg.scenario, cfg.model_dump(mode="json"), str(out))
            registered = True
            while model.running:
                model.step()
                console.step(model)
            files = write_report_files(model, out, console, "output folder", "; every answer is in the store: run the same command again")
        store.finish_run(run_id)
    except sqlite3.Error as exc:  # a store fault in the middle of the run: still one line
        err = StoreError(f"store {cfg.store}: {describe(exc)}")
        _mark_stopped(store, run_id, registered, err)
        raise err from None
    except BaseException as exc:
        _mark_stopped(store, run_id, registered, exc)
        raise
    return RunResult(run_id, out, files, model.engine.misses, model.engine.hits, resumed)


def write_report_files(model, out: Path, console, what: str, hint: str = "") -> list[Path]:
    """``write_outputs``, with a disk fault as one line naming the folder."""
    try:
        return write_outputs(model, out, console)
    except OSError as exc:
        raise RunError(f"{what} {out}: cannot write the report ({describe(exc)}){hint}") from None


def _mark_stopped(store: Store, run_id: str, registered: bool, exc: BaseException) -> None:
    """Record why a run stopped ('failed' with its message, or 'interrupted');
    its finished steps and answers stay in the store for the resume."""
    if not registered:
        return
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
    try:
        store.fail_run(run_id, "interrupted" if interrupted else error_line(exc), "interrupted" if interrupted else "failed")
    except StoreError:  # the store itself is the fault: the error being raised says so
        pass


def replay(run_id: str, store_path: str, *, console: RunConsole | None = None, out_dir: str | None = None) -> tuple[RunResult, bool]:
    """Rebuild a logged run with no engine; return (result, report identical)."""
    console = console or RunConsole(live=False)
    store = Store(store_path, readonly=True)  # a replay never writes to the store
    row = store.get_run(run_id)
    if row is None:
        known = ", ".join(r["run_id"] for r in store.list_runs()[-5:]) or "none"
        raise RunError(f"replay: no run '{run_id}' in {store_path} (latest: {known})")
    cfg = stored_config(row["config"], f"{store_path}:runs[{run_id}].config")
    original = Path(row["output_dir"])
    out = Path(out_dir) if out_dir else original / "replay"
    try:
        if out.exists():
            shutil.rmtree(out)
    except OSError as exc:
        raise RunError(f"replay output folder {out}: cannot replace it ({describe(exc)})") from None
    check_writable(out, "replay output folder")
    with console:
        console.line(f"replay {run_id} from {store_path} (no engine calls)")
        model = build_model(cfg, store, run_id, replay=True, console=console)
        while model.running:
            model.step()
            console.step(model)
        files = write_report_files(model, out, console, "replay output folder")
    same = all(
        (original / f.relative_to(out)).exists() and filecmp.cmp(f, original / f.relative_to(out), shallow=False)
        for f in files
    )
    return RunResult(run_id, out, files, model.engine.misses, model.engine.hits), same
