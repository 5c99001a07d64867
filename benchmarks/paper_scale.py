"""Every paper preset at its published size, against the simulator (issue 24, item 4).

Each preset in ``scenarios/paper/`` runs as its own ``run.py`` subprocess with
``engine.kind: openai`` pointed at a simulated OpenAI-compatible server
(``agents.llm.simulated_server``: a simulator, not a model -- nothing it writes
means anything), a second simulator standing in for a judge where the preset
has one. The simulators answer the consensus presets' chain-of-thought rankings
in their template at ``--rank-rate`` (0.9, an assumption; 0: none parse, so every
ranking is retried and then rated -- the worst case) and each consensus
preset's line says how many rankings fell back. Sizes are the published ones times ``--scale``. Where a preset needs
data that cannot ship (Pew ATP W34/W92/W99/W110, Braley 2023, Moore-Berg 2020)
synthetic respondents of the same shape stand in (``benchmarks.synthetic_studies``),
written to ``OUT/synthetic``; the output says so on every such preset.

Per preset: completed (and the error line), requests and prompts the
simulators served (``/simulator/stats``), wall time, client requests/s, peak
RSS of the run process (``wait4`` rusage of that one child), store size, and
report time (from the run's last progress line to its "results written" line:
the evaluation and the report files). Then one preset is killed (SIGKILL) once
its store holds about half of the uninterrupted run's answers and resumed: the
resume must ask the simulator for exactly the missing answers (0 repeated) and
write byte-identical report files.

Each preset's figures are appended to ``OUT/results.jsonl`` as it finishes; a
re-invocation skips presets already completed at the same scale/population. With
``--shared-store`` an unfinished preset (the benchmark stopped, the machine
restarted) resumes its own run from the store, every answer already computed
served from it: the simulators keep their ports (``OUT/ports.json``) and the
synthetic files their paths, so the run id is the same. Its record then times
the last attempt only.

    python benchmarks/paper_scale.py --scale 0.02 [--only NAME ...] [--out DIR]
    python benchmarks/paper_scale.py --only anthology_atp_subgroups --population 10000 --no-kill
    python benchmarks/paper_scale.py --only anthology_atp_subgroups --population 40000 --no-kill --set population.demographics=probs

Full size (``--scale 1``) takes hours; ``--population N`` sets population.size
(the generated personas) to N, e.g. 1k / 10k / 40k for peak RSS.
"""
from __future__ import annotations

import argparse
import csv
import filecmp
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.llm.simulated_server import SimulatedServer, SimulatorConfig  # noqa: E402
from benchmarks.synthetic_studies import PUBLISHED_N, UNSHIPPABLE, SyntheticStudy, synthesize  # noqa: E402

PAPER = ROOT / "scenarios" / "paper"
DEFAULT_RANK_RATE = SimulatorConfig().rank_rate  # an assumption (the simulator's docstring)
DEFAULT_KILL = "hostility_kang2025"  # real (ANES) data, a survey, a few minutes at 0.02


def presets() -> list[str]:
    return sorted(p.stem for p in PAPER.glob("*.yaml"))


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    with closing(socket.socket()) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def stable_ports(out: Path) -> tuple[int, int]:
    """The simulators' ports, kept in ``out/ports.json``: a benchmark started again
    on the same folder serves the same URLs, so an unfinished preset resumes its
    own run (same run id: its step log goes on, no second copy) from the store."""
    path = out / "ports.json"
    try:
        ports = tuple(json.loads(path.read_text()))
        if len(ports) == 2 and all(bindable(p) for p in ports):
            return ports
    except (OSError, ValueError, TypeError):
        pass
    ports = (free_port(), free_port())
    path.write_text(json.dumps(ports))
    return ports


class PortServer(SimulatedServer):
    """The simulator on a given port: every run of a preset (clean, killed,
    resumed) sees the same endpoint URL (before 2026-12-06 it was part of the
    run id; folders benchmarked then resume under their ids either way)."""

    def __init__(self, port: int, **kw) -> None:
        super().__init__(**kw)
        self.fixed_port = port

    def argv(self, rules_file: str | None) -> list[str]:
        argv = super().argv(rules_file)
        argv[argv.index("--port") + 1] = str(self.fixed_port)
        return argv


# ------------------------------------------------------------------ plans


@dataclass
class Plan:
    """How one preset runs here: its ``--set`` overrides and what was substituted."""

    preset: str
    scenario: Path
    sets: list[str]
    engine_model: str
    judge_model: str | None = None
    notes: list[str] = field(default_factory=list)  # substitutions, said loudly
    synthetic: list[str] = field(default_factory=list)  # banners of synthetic data files
    sizes: dict = field(default_factory=dict)
    # P(the simulator answers a chain-of-thought ranking in its format): assumed, not measured
    rank_rate: float = DEFAULT_RANK_RATE


def _scaled(n: int, scale: float, least: int) -> int:
    return max(least, round(n * scale))


def _flow(v) -> str:
    return json.dumps(v)  # JSON is YAML flow: --set parses it back


def _synthetic_human(entry: dict, scale: float, data_dir: Path) -> tuple[dict, SyntheticStudy | None]:
    study = str(entry.get("study"))
    if study not in UNSHIPPABLE:
        return entry, None
    syn = synthesize(study, _scaled(PUBLISHED_N[study], scale, 20), data_dir)
    return {**entry, "overrides": {**entry.get("overrides", {}), **syn.overrides}}, syn


def plan_preset(name: str, scale: float, data_dir: Path, engine_url: str, judge_url: str,
                population: int | None = None) -> Plan:
    path = PAPER / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    eng = raw.get("engine", {})
    plan = Plan(name, path, [f"engine.endpoints={_flow([engine_url])}"], str(eng.get("model", "simulated")))
    pop = raw.get("population", {})
    size = population or _scaled(int(pop.get("size", 8)), scale, 2)
    human = raw.get("human")
    if human:
        new, syn = _synthetic_human(human, scale, data_dir)
        if syn is not None:
            plan.sets += ["human.overrides.source.kind=csv", f"human.overrides.source.path={_flow(str(syn.path))}"]
            plan.synthetic.append(syn.banner())
            plan.sizes["respondents"] = syn.n
        if human.get("sample"):
            plan.sets.append(f"human.sample={_scaled(int(human['sample']), scale, 10)}")
            plan.sizes["respondents"] = _scaled(int(human["sample"]), scale, 10)
    if raw.get("sweep", {}).get("human"):
        entries = []
        for e in raw["sweep"]["human"]:
            new, syn = _synthetic_human(e, scale, data_dir)
            entries.append(new)
            if syn is not None:
                plan.synthetic.append(syn.banner())
        plan.sets.append(f"sweep.human={_flow(entries)}")
    opts = raw.get("options", {})
    if raw.get("scenario") == "consensus":
        groups = _scaled(int(opts.get("groups", 2)), scale, 1)
        size = groups * int(opts.get("group_size", 3))
        plan.sets.append(f"options.groups={groups}")
        plan.sizes["groups"] = groups
        if opts.get("payoff") == "model":
            # The payoff model is a fine-tuned network trained by `represent payoff`: no simulator stands in.
            plan.sets += ["options.payoff=self_rating", "options.payoff_model=null"]
            plan.notes.append("SUBSTITUTED: options.payoff=self_rating (the preset's trained payoff model cannot run on a simulator)")
        if isinstance(opts.get("judge"), dict):
            plan.judge_model = str(opts["judge"].get("model", "judge"))
            plan.sets.append(f"options.judge.endpoints={_flow([judge_url])}")
    plan.sets.append(f"population.size={size}")
    plan.sizes["population"] = size
    return plan


# ------------------------------------------------------------------ one run


@dataclass
class RunOutcome:
    rc: int
    wall_s: float
    peak_rss_mb: float
    report_s: float
    error: str
    killed: bool
    stats: dict  # role -> simulator stats
    rows: int  # response rows in the store at the end
    store_bytes: int
    engine_calls: int  # as run.py reports them (-1: not reported)

    @property
    def completed(self) -> bool:
        return self.rc == 0 and not self.killed

    def prompts(self) -> int:
        """Sequences the simulator computed: a prompt sampled ``n`` times in one
        request counts ``n``."""
        return sum(s.get("completions", 0) for s in self.stats.values())

    def answers(self) -> int:
        """Prompts the simulator answered, a prompt sampled ``n`` times in one
        request once: one stored answer each (the sampled survey stores the ``n``
        samples of a prompt as one answer)."""
        return sum(s.get("prompts", 0) for s in self.stats.values())

    def requests(self) -> int:
        return sum(s.get("by_path", {}).get("/v1/completions", 0) + s.get("by_path", {}).get("/v1/chat/completions", 0)
                   for s in self.stats.values())


def store_rows(db: Path) -> int:
    try:
        with closing(sqlite3.connect(db, timeout=30)) as con:
            return con.execute("select count(*) from responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def store_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def _is_progress(line: str) -> bool:
    return line.startswith("[") or line.startswith(" ")


def report_seconds(lines: list[tuple[float, str]]) -> float:
    """Per run in the output: the time from its last progress line to its
    "results written" / next run / sweep line; summed over the runs."""
    total, last = 0.0, None
    for t, text in lines:
        if _is_progress(text):
            last = t
        elif last is not None and (text.startswith(("results written", "sweep", "run ")) or "results written" in text):
            total += t - last
            last = None
    return total


def run_once(plan: Plan, work: Path, ports: tuple[int, int], *, kill_at_rows: int | None = None,
             timeout: float = 6 * 3600, log=print, db: Path | None = None) -> RunOutcome:
    """``run.py`` on ``plan`` with store and output in ``work`` (or the store
    ``db``), fresh simulators on ``ports``; SIGKILL once the store holds
    ``kill_at_rows`` answers."""
    work.mkdir(parents=True, exist_ok=True)
    db = db or work / "store.db"
    servers = {"engine": PortServer(ports[0], model=plan.engine_model, rank_rate=plan.rank_rate)}
    if plan.judge_model:
        servers["judge"] = PortServer(ports[1], model=plan.judge_model, rank_rate=plan.rank_rate)
    cmd = [sys.executable, str(ROOT / "run.py"), str(plan.scenario), "--plain",
           *[x for s in [f"store={db}", f"output={work / 'runs'}", *plan.sets] for x in ("--set", s)]]
    lines: list[tuple[float, str]] = []
    err: list[str] = []
    killed = False
    proc = None
    try:
        for s in servers.values():
            s.start()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

        def pump(stream, into, stamp):
            for line in stream:
                into.append((time.monotonic(), line.rstrip("\n")) if stamp else line.rstrip("\n"))

        readers = [threading.Thread(target=pump, args=(proc.stdout, lines, True), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, err, False), daemon=True)]
        for r in readers:
            r.start()
        if kill_at_rows is not None:
            while proc.poll() is None and store_rows(db) < kill_at_rows and time.monotonic() - t0 < timeout:
                time.sleep(0.05)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        # wait4: the peak RSS of this child alone (ru_maxrss, KiB on Linux).
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            rss = usage.ru_maxrss / 1024
        except ChildProcessError:  # poll() above already reaped it
            proc.wait()
            rss = float("nan")
        wall = time.monotonic() - t0
        for r in readers:
            r.join(5)
        stats = {role: s.stats() for role, s in servers.items()}
    finally:
        if proc is not None and proc.poll() is None:  # the benchmark was stopped: so is its run
            proc.kill()
            proc.wait()
        for s in servers.values():
            s.stop()
        if proc is not None:
            # The run's own output with the seconds since its start: where a preset's time
            # went (also of a run stopped with the benchmark: hours of a full-size preset).
            with open(work.parent / f"{work.name}.log", "a", encoding="utf-8") as f:
                f.writelines(f"{t - t0:9.1f}  {text}\n" for t, text in list(lines))
                f.writelines(f"stderr     {text}\n" for text in err[-20:])
    calls = -1
    for _, text in lines:
        if "engine calls" in text and text.startswith("results written"):
            try:
                calls = int(text.split(";")[-2].split("engine calls")[0].split()[-1])
            except (ValueError, IndexError):
                pass
    error = "" if proc.returncode == 0 else (err[-1] if err else f"exit {proc.returncode}")
    if killed:
        error = "killed (SIGKILL) as planned"
    return RunOutcome(proc.returncode, wall, rss, report_seconds(lines), error, killed, stats,
                      store_rows(db), store_bytes(db), calls)


# ------------------------------------------------------------------ reports


def report_files(work: Path) -> dict[str, Path]:
    runs = work / "runs"
    return {str(f.relative_to(runs)): f for f in sorted(runs.rglob("*"))
            if f.is_file() and "replay" not in f.relative_to(runs).parts} if runs.exists() else {}


def ranking_fallbacks(work: Path) -> dict[str, list[int]] | None:
    """A consensus report's mediations and CoT rankings replaced by ratings, per
    phase (``mediation.csv``); None for other presets."""
    found = sorted((work / "runs").glob("*/mediation.csv")) if (work / "runs").exists() else []
    if not found:
        return None
    with open(found[-1], newline="") as f:
        return {row["phase"]: [int(row["mediations"]), int(row["ranking_fallbacks"])] for row in csv.DictReader(f)}


def differing(a: dict[str, Path], b: dict[str, Path]) -> list[str]:
    """Report files that differ byte for byte (or exist on one side only)."""
    return sorted({k for k in a if k not in b or not filecmp.cmp(a[k], b[k], shallow=False)} | (set(b) - set(a)))


@dataclass
class KillResume:
    preset: str
    clean_prompts: int  # answers the simulator computed (one per stored answer; see RunOutcome.answers)
    clean_rows: int
    killed_at_rows: int  # answers in the store after the kill
    killed_prompts: int  # answers the simulator computed before the kill
    resume_prompts: int
    missing: int  # clean rows minus rows saved before the kill
    repeated: int  # resume answers minus the missing ones (0: nothing asked twice)
    lost_in_flight: int  # served before the kill but not yet saved (asked again, never used twice)
    identical: bool
    differing: list[str]
    resume_completed: bool
    error: str = ""
    resume_wall_s: float = 0.0  # the resume's wall time (the clean run's is in its own record)


def kill_and_resume(plan: Plan, clean: RunOutcome, clean_work: Path, work: Path, ports: tuple[int, int],
                    log=print, chunk: int | None = None) -> KillResume:
    """Kill ``plan`` once its store holds half the clean run's answers, resume it,
    compare prompts and report files with the clean run."""
    shutil.rmtree(work, ignore_errors=True)
    half = max(1, clean.rows // 2)
    # The store commits per chunk: a smaller population.chunk lets the kill land nearer half-way.
    # Off by default: at 0.02 a chunk of 8 changed the run id and the prompts (see the issue-24 report).
    if chunk:
        plan = Plan(**{**asdict(plan), "sets": [*plan.sets, f"population.chunk={chunk}"]})
    k = run_once(plan, work, ports, kill_at_rows=half, log=log)
    saved = store_rows(work / "store.db")
    r = run_once(plan, work, ports, log=log)
    missing = clean.rows - saved
    diff = differing(report_files(clean_work), report_files(work)) if r.completed else ["(resume failed)"]
    return KillResume(plan.preset, clean.answers(), clean.rows, saved, k.answers(), r.answers(), missing,
                      r.answers() - missing, k.answers() - saved, not diff, diff, r.completed,
                      "" if k.killed else f"not killed: the run ended first ({k.error or 'completed'})", round(r.wall_s, 2))


# ------------------------------------------------------------------ the benchmark


def _key(preset: str, scale: float, population: int | None, extra: list[str] = (), rank_rate: float = DEFAULT_RANK_RATE) -> str:
    """A record's key: what it measured (a run at another rank rate is another record)."""
    return (f"{preset}@{scale:g}" + (f"/pop{population}" if population else "") + "".join(f"/{s}" for s in extra)
            + (f"/rank-rate{rank_rate:g}" if rank_rate != DEFAULT_RANK_RATE else ""))


def load_records(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[rec["key"]] = rec
    return out


def append_record(path: Path, rec: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def measure(name: str, scale: float, out: Path, data_dir: Path, ports: tuple[int, int],
            population: int | None = None, log=print, extra: list[str] = (), shared: Path | None = None,
            rank_rate: float | None = None) -> tuple[dict, Plan, RunOutcome, Path]:
    """Run one preset clean; return its record (also the plan, outcome and work folder).
    ``extra``: more ``--set`` overrides, recorded in the record and its key.
    ``shared``: the store every preset of this invocation uses, as a user's
    default ``personae.db`` is (banks generated by an earlier preset with the same
    settings are reused); the record's store figure is then what this preset added."""
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    plan = plan_preset(name, scale, data_dir, urls[0], urls[1], population)
    plan.sets.extend(extra)
    if rank_rate is not None:
        plan.rank_rate = rank_rate
    for line in plan.synthetic + plan.notes:
        log(f"  !!! {line}")
    key = _key(name, scale, population, extra, plan.rank_rate) + ("/shared-store" if shared else "")
    work = out / "work" / key.replace("/", "_")
    shutil.rmtree(work, ignore_errors=True)  # a half-done earlier attempt is not resumed: its figures would be off
    before = store_bytes(shared) if shared and shared.exists() else 0
    o = run_once(plan, work, ports, log=log, db=shared)
    if shared:
        o.store_bytes -= before
    rec = {
        "key": key, "preset": name, "scale": scale, "population": population, "extra_sets": list(extra),
        "shared_store": bool(shared), "store_total_mb": round((o.store_bytes + before) / 2**20, 2),
        "sizes": plan.sizes, "completed": o.completed, "error": o.error,
        "requests": o.requests(), "prompts": o.prompts(), "answers": o.answers(), "by_role": {r: {"requests": s.get("by_path", {}).get("/v1/completions", 0)
                                                                           + s.get("by_path", {}).get("/v1/chat/completions", 0),
                                                                           "prompts": s.get("completions", 0)} for r, s in o.stats.items()},
        "wall_s": round(o.wall_s, 2), "requests_per_s": round(o.requests() / o.wall_s, 1) if o.wall_s else 0.0,
        "peak_rss_mb": round(o.peak_rss_mb, 1), "store_mb": round(o.store_bytes / 2**20, 2), "report_s": round(o.report_s, 2),
        "store_rows": o.rows, "engine_calls": o.engine_calls,
        "synthetic": plan.synthetic, "substituted": plan.notes,
        "rank_rate": plan.rank_rate, "ranking_fallbacks": ranking_fallbacks(work),
    }
    return rec, plan, o, work


def table(recs: list[dict]) -> str:
    head = f"{'preset':34} {'done':4} {'requests':>9} {'prompts':>9} {'wall s':>8} {'req/s':>7} {'RSS MB':>7} {'store MB':>8} {'report s':>8}  data"
    rows = [head, "-" * len(head)]
    for r in recs:
        data = "SYNTHETIC" if r["synthetic"] else "real"
        data += " +SUBSTITUTED" if r["substituted"] else ""
        rows.append(f"{r['preset']:34} {'yes' if r['completed'] else 'NO':4} {r['requests']:>9} {r['prompts']:>9} {r['wall_s']:>8.1f} "
                    f"{r['requests_per_s']:>7.1f} {r['peak_rss_mb']:>7.0f} {r['store_mb']:>8.1f} {r['report_s']:>8.2f}  {data}")
        if not r["completed"]:
            rows.append(f"    error: {r['error']}")
        elif r.get("ranking_fallbacks"):
            counts = r["ranking_fallbacks"]
            rows.append(f"    simulator answers CoT rankings in format at rate {r['rank_rate']:g} (assumed); rankings replaced by ratings: "
                        + ", ".join(f"{phase} {fb} in {m} mediations" for phase, (m, fb) in counts.items()))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.02, help="fraction of the published sizes (1 = full size: hours)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="preset name (repeatable)")
    ap.add_argument("--out", default="runs/paper_scale", help="results folder (results.jsonl, work/)")
    ap.add_argument("--population", type=int, default=None, help="population.size for every preset run (e.g. 1000/10000/40000)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another override for every preset run, e.g. population.demographics=probs (part of the record's key)")
    ap.add_argument("--rank-rate", type=float, default=DEFAULT_RANK_RATE,
                    help="P(the simulator answers a chain-of-thought ranking in its format); 0: never (every ranking retried, then rated)")
    ap.add_argument("--kill-preset", default=DEFAULT_KILL, help=f"preset killed half-way and resumed (default {DEFAULT_KILL})")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill-and-resume check")
    ap.add_argument("--kill-chunk", type=int, default=None, help="population.chunk of the killed and resumed runs (default: the preset's)")
    ap.add_argument("--keep", action="store_true", help="keep each preset's store and report (work/)")
    ap.add_argument("--shared-store", action="store_true",
                    help="one store for every preset, as a user's default personae.db: banks an earlier preset generated "
                         "with the same settings are reused (store MB is then what each preset added; no kill check)")
    a = ap.parse_args(argv)
    # Stopped with SIGTERM (kill, a job scheduler's limit): unwind, so the run and
    # the simulators stop with it instead of running on as orphans.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    names = a.only or presets()
    unknown = sorted(set(names) - set(presets()))
    if unknown:
        ap.error(f"unknown preset(s) {', '.join(unknown)} (known: {', '.join(presets())})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = load_records(results)
    ports = stable_ports(out)
    data_dir = out / "synthetic"  # deterministic files at stable paths: a second start resumes the same runs
    data_dir.mkdir(exist_ok=True)
    print(f"simulator (not a model) on ports {ports}; synthetic respondents in {data_dir}; results -> {results}")
    # answers stored at one rank rate are not another's: a store per rate
    rate = f"-rank-rate{a.rank_rate:g}" if a.rank_rate != DEFAULT_RANK_RATE else ""
    shared = out / "work" / f"shared@{a.scale:g}{rate}" / "store.db" if a.shared_store else None
    if shared:
        shared.parent.mkdir(parents=True, exist_ok=True)
        a.no_kill = True
    suffix = "/shared-store" if shared else ""
    for name in names:
        key = _key(name, a.scale, a.population, a.extra, a.rank_rate) + suffix
        if done.get(key, {}).get("completed"):
            print(f"{name}: done earlier (skipped; delete its line in {results} to redo)")
            continue
        print(f"{name}: running at scale {a.scale:g}" + (f", population {a.population}" if a.population else ""))
        rec, plan, o, work = measure(name, a.scale, out, data_dir, ports, a.population, extra=a.extra, shared=shared,
                                     rank_rate=a.rank_rate)
        append_record(results, rec)
        done[key] = rec
        print("\n".join(table([rec]).splitlines()[2:]))  # its row (and the line under it), without the header
        if name == a.kill_preset and not a.no_kill and o.completed:
            kr = kill_and_resume(plan, o, work, out / "work" / (key.replace("/", "_") + "-killed"), ports, chunk=a.kill_chunk)
            krec = {"key": "kill:" + key, **asdict(kr)}
            append_record(results, krec)
            done[krec["key"]] = krec
        if not a.keep and o.completed:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(out / "work" / (key.replace("/", "_") + "-killed"), ignore_errors=True)
    keys = [_key(n, a.scale, a.population, a.extra, a.rank_rate) + suffix for n in names]
    recs = [done[k] for k in keys if k in done]
    if shared and not a.keep and len(recs) == len(names) and all(r["completed"] for r in recs):
        shutil.rmtree(shared.parent, ignore_errors=True)  # kept while a preset is left to run: it reuses the banks
    print()
    print(table(recs))
    syn = [r["preset"] for r in recs if r["synthetic"]]
    if syn:
        print(f"\n!!! SYNTHETIC DATA (not real respondents; figures test the pipeline, not fidelity): {', '.join(syn)}")
    for r in recs:
        for s in r["substituted"]:
            print(f"!!! {r['preset']}: {s}")
    for n in names:
        kr = done.get("kill:" + _key(n, a.scale, a.population, a.extra, a.rank_rate))
        if kr:
            print(f"\nkill/resume {n}: killed at {kr['killed_at_rows']}/{kr['clean_rows']} answers; resume asked "
                  f"{kr['resume_prompts']} prompts for {kr['missing']} missing -> repeated {kr['repeated']} "
                  f"({kr['lost_in_flight']} in flight at the kill, never saved); report "
                  f"{'identical' if kr['identical'] else 'DIFFERS: ' + ', '.join(kr['differing'][:5])}"
                  + (f"; resume {kr['resume_wall_s']:.0f} s" if kr.get("resume_wall_s") else "")
                  + (f"; {kr['error']}" if kr["error"] else ""))
    failed = [r for r in recs if not r["completed"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
