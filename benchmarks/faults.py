"""Fault campaign (issue 13): kill a small run at random moments, kill the vLLM
server mid-run, inject disk faults; check nothing is lost, nothing repeated.

1. Kills: a clean uninterrupted run first, polled for its progress events
   (the store's response rows and logged steps, each change a milestone with
   its time), then ``--trials`` trials of the same run in fresh stores, each
   SIGKILLed ``kills / trials`` times and then resumed to the end. Every kill
   is planned in the time of the run it kills, not of the clean run (a resumed
   run skips finished LLM calls, so a moment of the clean run may lie after
   its end): wait until the run reaches a milestone, then a random delay within
   the clean run's time to the next milestone, which a resumed run still has to
   do. A kill is "inside a question step" when it lands after the run's
   set-up (the run is registered) and before its last step is logged, in a
   process that got there itself (not while reloading what an earlier one
   saved); ``--inside`` sets their share (the others hit start-up, backstories, the
   demographic survey and the final report). After every kill the store's
   integrity check must pass; after the resume the report files must equal the
   clean run's byte for byte, and no answer saved before a kill may be computed
   again ("repeated engine calls": a response row rewritten by the resume).
2. ``--vllm``: the same run through a strict vLLM server (float32, no prefix
   caching), whose server is SIGKILLed mid-run: the run must stop with one line
   and exit 2; after a restart the resume makes exactly the missing calls.
3. Disk faults: a store that is not SQLite, a store in a read-only folder, an
   output folder that cannot be written (as ``nobody`` via setpriv when root):
   each must give one line on stderr and exit 2.

    python benchmarks/faults.py [--kills 20 --trials 10 --seed 0 --inside 0.5 --jobs 1 --vllm]

``--kills 0`` skips the kills (e.g. to run only ``--vllm``). ``--jobs`` runs
trials side by side; with ``--work`` the clean run is kept (``clean.json``)
and ``--reuse-clean`` starts a campaign from it. Delays are scaled by each killed
run's own pace (never lengthened): before that, a run twice as fast as its clean
run finished before kills planned late in a long gap (measured: 3 of 22 kills
landed when the clean run was timed at load ~6 and the trials ran on an idle machine;
with the pace, 12 of 12 landed under the same kind of mismatch). Prints kills
planned, landed and survived, reports identical out of N, repeated engine calls.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A small gss_spending run: backstories (generation) then questions, one per step.
SMALL = ["population.size=4", "population.conditions=[anthology, qa]", "population.backstories.max_tokens=24",
         "population.backstories.interview_questions=1", "human.sample=6", "human.lower_bound_splits=10",
         "questionnaire.questions=[natspac, natenvir, natheal, natcity]"]


def query(db: Path, sql: str, default=0):
    try:
        with closing(sqlite3.connect(db, timeout=30)) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return default


def answers(db: Path) -> dict[str, float]:
    try:
        with closing(sqlite3.connect(db, timeout=30)) as con:
            return dict(con.execute("select key, created from responses"))
    except sqlite3.OperationalError:
        return {}


def command(store: Path, out: Path, extra: list[str], settings: list[str] = SMALL) -> list[str]:
    sets = [x for a in [f"store={store}", f"output={out}", *settings, *extra] for x in ("--set", a)]
    return [sys.executable, str(ROOT / "run.py"), "scenarios/gss_spending.yaml", "--plain", *sets]


def finish(cmd: list[str], timeout: float = 1800, in_process: bool = False) -> tuple[int, str, str, float]:
    """Run ``cmd`` (a run.py command line) to its end: (exit code, stdout, stderr, seconds).
    ``in_process``: through ``run.main`` in this process, reusing its loaded model."""
    t0 = time.monotonic()
    if in_process:
        import contextlib
        import io

        import run as cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(cmd[2:])
        return rc, out.getvalue(), err.getvalue(), time.monotonic() - t0
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def calls_of(stdout: str) -> int:
    m = re.search(r"(\d+) engine calls, (\d+) answered from the store", stdout)
    return int(m.group(1)) if m else -1


def progress(db: Path) -> tuple[int, int, int]:
    """The store's progress: (response rows, logged steps, runs registered: the
    runner registers a run once its set-up is done, before the first step)."""
    return (query(db, "select count(*) from responses"), query(db, "select count(distinct step) from event_blocks"),
            query(db, "select count(*) from runs"))


def reached(state: tuple[int, ...], mark: tuple[int, ...]) -> bool:
    return all(a >= b for a, b in zip(state, mark))


@dataclass(frozen=True)
class Milestone:
    """A progress event of the clean run: the store reached ``state``
    (``progress``) ``t`` s after the start; the next one followed ``gap`` s
    later (the end of the process for the last one)."""
    state: tuple[int, int, int]
    t: float
    gap: float
    inside: bool  # set-up done, a question step still to log: the work up to the next one is a step


def watch(db: Path, run) -> tuple[object, list[Milestone]]:
    """Call ``run()`` while polling ``db`` every 50 ms: (its result, the milestones).
    The first milestone is the start (nothing saved)."""
    seen, stop, t0 = [((0, 0, 0), 0.0)], threading.Event(), time.monotonic()

    def poll():
        while not stop.wait(0.05):
            state = progress(db)
            if state != seen[-1][0]:
                seen.append((state, time.monotonic() - t0))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        result = run()
    finally:
        stop.set()
        poller.join()
    end = time.monotonic() - t0
    times = [t for _, t in seen[1:]] + [end]
    steps = seen[-1][0][1]
    return result, [Milestone(state, t, nt - t, state[2] > 0 and state[1] < steps)
                    for (state, t), nt in zip(seen, times)]


def plan(rng: random.Random, marks: list[Milestone], kills: int, inside: int) -> list[int]:
    """The milestones (indices, ascending, distinct) after which one trial's
    kills fall, ``inside`` of them inside question steps (more when the others
    run out): each kill lands in what remains of the run after the previous one."""
    # Not after the last step: those gaps are the report writing (seconds), which a
    # faster run may have finished before the kill, leaving the later kills no run.
    steps = marks[-1].state[1]
    early = [i for i, m in enumerate(marks) if not (m.state[2] > 0 and m.state[1] >= steps)]
    ins = [i for i in early if marks[i].inside]
    out = [i for i in early if not marks[i].inside]
    picked = rng.sample(ins, min(inside, len(ins)))
    picked += rng.sample(out, min(kills - len(picked), len(out)))
    rest = [i for i in ins if i not in picked]
    picked += rng.sample(rest, min(kills - len(picked), len(rest)))
    return sorted(picked)


def kill_at(cmd: list[str], db: Path, marks: list[Milestone], at: int, delay: float, pace: float = 1.0,
            timeout: float = 1800) -> dict:
    """Start ``cmd``; SIGKILL it ``delay`` s (clean-run time) after its store reaches
    ``marks[at]``. The delay is scaled by the run's pace: its own time between the
    first milestone it completed and ``marks[at]``, over the clean run's (``pace``,
    e.g. an earlier kill's, when that span is too short to time), never lengthened:
    a faster run would otherwise finish before a kill planned late in a long gap.
    Returns what the kill hit: alive (it landed), the progress
    after it, whether inside a question step (at a step's milestone, reached by this
    process itself, not while it reloads what an earlier one saved), integrity, pace."""
    start = progress(db)
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, deadline = time.monotonic(), time.monotonic() + timeout
    # (clean-run time, our time) of the first milestone this process completed: the
    # one it started in was partly done by the run before, so timing starts after it.
    first, begun = None, last_reached(marks, start)
    while p.poll() is None and time.monotonic() < deadline:
        state = progress(db)
        if reached(state, marks[at].state):
            break
        if first is None and last_reached(marks, state) > begun:
            first = (marks[last_reached(marks, state)].t, time.monotonic() - t0)
        time.sleep(0.02)
    if first is not None and marks[at].t - first[0] >= PACE_SPAN:
        pace = (time.monotonic() - t0 - first[1]) / (marks[at].t - first[0])
    try:  # the delay, cut short if the run ends first
        p.wait(timeout=delay * min(1.0, pace))
    except subprocess.TimeoutExpired:
        pass
    alive = p.poll() is None
    if alive:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    state = progress(db)
    return {"alive": alive, "state": state, "inside": marks[last_reached(marks, state)].inside and state != start,
            "seconds": time.monotonic() - t0, "pace": pace,
            "integrity": query(db, "pragma integrity_check", "ok") == "ok"}


def last_reached(marks: list[Milestone], state: tuple[int, ...]) -> int:
    return max(i for i, m in enumerate(marks) if reached(state, m.state))


def report_files(out: Path) -> dict[str, Path]:
    run = next(p for p in out.iterdir() if p.is_dir())
    return {str(f.relative_to(run)): f for f in sorted(run.rglob("*")) if f.is_file() and "replay" not in f.parts}


def differing(clean: dict[str, Path], other: dict[str, Path]) -> list[str]:
    return [k for k, f in clean.items() if k not in other or not filecmp.cmp(f, other[k], shallow=False)] + \
        [k for k in other if k not in clean]


@dataclass
class Campaign:
    planned: int = 0
    kills: int = 0  # SIGKILLs that landed while the run was alive
    inside: int = 0  # of which inside a question step (the next progress event logs a step)
    survived: int = 0  # kills after which the store was intact and the run resumed to the end
    trials: int = 0
    identical: int = 0
    repeated: int = 0  # answers saved before a kill and computed again
    missing_equal: int = 0  # trials whose resume made exactly the missing calls
    differences: list[str] = field(default_factory=list)


# A kill falls within this share of the clean run's time to the next milestone:
# the killed run, slower or faster under another load, is then still short of it.
WINDOW = 0.7
# The shortest clean-run span over which a killed run's pace is timed (shorter ones
# are mostly polling and start-up noise).
PACE_SPAN = 5.0


def clean_run(work: Path, extra: list[str], settings: list[str], in_process: bool, reuse: bool, log) -> tuple[float, int, list[Milestone]]:
    """The uninterrupted run, watched for its milestones: (seconds, engine calls,
    milestones), also kept in ``clean.json``; ``reuse``: read them from there."""
    record = work / "clean.json"
    if reuse and record.exists():
        r = json.loads(record.read_text())
        return r["seconds"], r["calls"], [Milestone(tuple(m["state"]), m["t"], m["gap"], m["inside"]) for m in r["milestones"]]
    clean_cmd = command(work / "clean.db", work / "clean-runs", extra, settings)
    (rc, out, err, seconds), marks = watch(work / "clean.db", lambda: finish(clean_cmd, in_process=in_process))
    if rc != 0:
        raise SystemExit(f"clean run failed: {err.strip()[-300:]}")
    record.write_text(json.dumps({"seconds": seconds, "calls": calls_of(out), "milestones": [asdict(m) for m in marks]}))
    return seconds, calls_of(out), marks


def trial(work: Path, t: int, cmd: list[str], marks: list[Milestone], kills: list[tuple[int, float]], in_process: bool) -> dict:
    """One trial in a fresh store: the planned kills (milestone, delay), then the resume to the end."""
    db, outdir = work / f"t{t}.db", work / f"t{t}-runs"
    for f in [db, Path(f"{db}-wal"), Path(f"{db}-shm")]:
        f.unlink(missing_ok=True)
    shutil.rmtree(outdir, ignore_errors=True)
    hits, pace = [], 1.0
    for i, delay in kills:  # a resumed run whose pace cannot be timed keeps the last one measured
        hits.append(kill_at(cmd, db, marks, i, delay, pace))
        pace = hits[-1]["pace"]
    before = answers(db)
    rc, out, err, _ = finish(cmd, in_process=in_process)
    after = answers(db)
    return {"hits": hits, "rc": rc, "err": err, "calls": calls_of(out), "saved": len(before), "outdir": outdir,
            "repeated": sum(1 for key, created in before.items() if after.get(key) != created)}


def kill_campaign(work: Path, kills: int, trials: int, seed: int, extra: list[str] = (), log=print,
                  settings: list[str] = SMALL, inside_share: float = 0.5, in_process: bool = False,
                  jobs: int = 1, reuse_clean: bool = False) -> Campaign:
    """``in_process``: the clean run and the resumes run in this process (the
    killed runs are always subprocesses); the test suite uses it to load the model once.
    ``jobs``: trials run side by side (subprocesses only); ``reuse_clean``: the
    clean run of an earlier campaign in ``work`` (its report files and clean.json)."""
    rng = random.Random(seed)
    clean_s, total_calls, marks = clean_run(work, list(extra), settings, in_process, reuse_clean, log)
    steps = query(work / "clean.db", "select count(distinct step) from event_blocks")
    clean = report_files(work / "clean-runs")
    log(f"clean run: {clean_s:.0f} s, {total_calls} engine calls, {steps} question steps, {len(clean)} report files; "
        f"milestones (rows, steps, runs: s): {[(*m.state, round(m.t, 1)) for m in marks]}")
    res = Campaign(planned=kills)
    per = [kills // trials + (1 if i < kills % trials else 0) for i in range(trials)]
    inside_total = math.ceil(kills * inside_share)
    per_inside = [min(k, inside_total * (i + 1) // trials - inside_total * i // trials) for i, k in enumerate(per)]
    # Every random choice drawn up front, in trial order: the plan does not depend on ``jobs``.
    plans = []
    for t, (k, k_in) in enumerate(zip(per, per_inside)):
        at = plan(rng, marks, k, k_in)
        if len(at) < k:
            log(f"trial {t}: only {len(at)} milestones for {k} kills")
        plans.append([(i, rng.uniform(0.0, WINDOW * marks[i].gap)) for i in at])
    cmds = [command(work / f"t{t}.db", work / f"t{t}-runs", list(extra), settings) for t in range(trials)]
    run_one = lambda t: trial(work, t, cmds[t], marks, plans[t], in_process)  # noqa: E731
    if jobs > 1 and not in_process:
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(run_one, range(trials)))
    else:
        results = [run_one(t) for t in range(trials)]
    for t, r in enumerate(results):
        hits, rc, calls = r["hits"], r["rc"], r["calls"]
        live = [h for h in hits if h["alive"]]
        res.kills += len(live)
        res.inside += sum(1 for h in live if h["inside"])
        ok = rc == 0 and all(h["integrity"] for h in hits)
        res.survived += len(live) if ok else 0
        res.repeated += r["repeated"]
        res.missing_equal += int(calls == total_calls - r["saved"])
        res.trials += 1
        diff = differing(clean, report_files(r["outdir"])) if rc == 0 else ["(resume failed: " + r["err"].strip()[-200:] + ")"]
        res.identical += not diff
        if diff:
            res.differences.append(f"trial {t}: {', '.join(diff)}")
        log(f"trial {t}: {len(live)}/{len(hits)} kills landed at (rows, steps, runs) "
            f"{[(*h['state'], 'step' if h['inside'] else 'other') for h in hits]}, "
            f"pace {[round(h['pace'], 2) for h in hits]}, "
            f"resume {'ok' if rc == 0 else 'FAILED'}, {calls} calls (missing {total_calls - r['saved']}), "
            f"repeated {r['repeated']}, report {'identical' if not diff else 'differs: ' + ', '.join(diff)}")
    return res


# ------------------------------------------------------------------ vLLM server killed mid-run


def vllm_campaign(work: Path, log=print) -> dict:
    from agents.llm import vllm_server as vs
    from agents.llm.embedded import EMBEDDED_NAME, hf_folder

    port = vs.free_port()

    def start():
        return vs.serve(model=hf_folder(), name=EMBEDDED_NAME, port=port, timeout=600, extra_args=["--enforce-eager"],
                        dtype="float32", prefix_caching=False)

    extra = ["engine.kind=openai", f"engine.endpoints=[http://127.0.0.1:{port}/v1]", "engine.strict=true", "engine.retries=2"]
    server = start()
    try:
        clean_db, clean_out = work / "v-clean.db", work / "v-clean-runs"
        rc, out, err, clean_s = finish(command(clean_db, clean_out, extra))
        total = calls_of(out)
        db, outdir = work / "v.db", work / "v-runs"
        p = subprocess.Popen(command(db, outdir, extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while p.poll() is None and query(db, "select count(*) from responses") < max(1, total // 3):
            time.sleep(0.05)
        os.killpg(server.proc.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        _, err = p.communicate(timeout=300)
        stopped_s = time.monotonic() - t_kill
        lines = err.strip().splitlines()
        saved = query(db, "select count(*) from responses")
        server.proc.wait()
        server = start()
        rc2, out2, err2, _ = finish(command(db, outdir, extra))
        result = {
            "exit": p.returncode, "one_line": len(lines) == 1, "line": lines[-1] if lines else "",
            "stopped_within_s": round(stopped_s, 1), "resume_calls": calls_of(out2), "missing": total - saved,
            "identical": rc2 == 0 and not differing(report_files(clean_out), report_files(outdir)),
        }
        log(f"vLLM killed mid-run: exit {result['exit']} in {stopped_s:.1f} s, one line: {result['one_line']} "
            f"({result['line'][:120]}); resume made {result['resume_calls']} calls for {result['missing']} missing; "
            f"report identical: {result['identical']}")
        return result
    finally:
        server.stop()


# ------------------------------------------------------------------ disk faults


def disk_faults(work: Path, log=print) -> list[tuple[str, bool, str]]:
    """Each fault: (name, one line and exit 2, the line)."""
    pub = Path(tempfile.mkdtemp(prefix="personae-faults-"))
    pub.chmod(0o755)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    junk = work / "junk.db"
    junk.write_text("not a database\n")
    (work / "a-file").write_text("x")
    ro = pub / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cases = [
        ("store is not SQLite", [], command(junk, work / "r1", [])),
        ("store under a regular file", [], command(work / "a-file" / "p.db", work / "r2", [])),
        ("store in a read-only folder", drop, command(ro / "p.db", pub / "r3", [])),
        ("output folder not writable", [], command(work / "ok.db", work / "a-file" / "runs", [])),
        ("output folder read-only", drop, command(pub / "ok.db", ro / "runs", [])),
        ("runs on a store that is not SQLite", [], [sys.executable, str(ROOT / "run.py"), "runs", "--store", str(junk)]),
    ]
    pub.chmod(0o777)
    found = []
    try:
        for name, prefix, cmd in cases:
            p = subprocess.run(prefix + cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
            lines = p.stderr.strip().splitlines()
            ok = p.returncode == 2 and len(lines) == 1
            found.append((name, ok, lines[0] if lines else ""))
            log(f"{name}: {'one line, exit 2' if ok else f'exit {p.returncode}, {len(lines)} lines'}: {lines[0] if lines else ''}")
    finally:
        ro.chmod(0o755)
        shutil.rmtree(pub, ignore_errors=True)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inside", type=float, default=0.5, help="share of the kills inside question steps")
    ap.add_argument("--jobs", type=int, default=1, help="trials run side by side")
    ap.add_argument("--reuse-clean", action="store_true", help="reuse the clean run kept in --work by an earlier campaign")
    ap.add_argument("--vllm", action="store_true", help="also kill a vLLM server mid-run (needs .venv-vllm)")
    ap.add_argument("--work", help="working folder (default: a temporary one, removed after)")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="personae-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        faults = disk_faults(work)
        res = kill_campaign(work, args.kills, args.trials, args.seed, inside_share=args.inside, jobs=args.jobs,
                            reuse_clean=args.reuse_clean) if args.kills else None
        v = vllm_campaign(work) if args.vllm else None
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if res:
        print(f"kills planned: {res.planned}, landed: {res.kills}, inside question steps: {res.inside}, "
              f"survived: {res.survived}/{res.kills}")
        print(f"reports identical: {res.identical}/{res.trials}")
        print(f"repeated engine calls: {res.repeated}; resumes making exactly the missing calls: {res.missing_equal}/{res.trials}")
        for d in res.differences:
            print("  differs:", d)
    print(f"disk faults as one line, exit 2: {sum(ok for _, ok, _ in faults)}/{len(faults)}")
    if v:
        print(f"vLLM server killed: one line {v['one_line']}, exit {v['exit']}, resume calls {v['resume_calls']}/{v['missing']} missing, identical {v['identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
