"""Fault campaign (issue 13): kill a small run at random moments, kill the vLLM
server mid-run, inject disk faults; check nothing is lost, nothing repeated.

1. Kills: a clean uninterrupted run first, then ``--trials`` trials of the same
   run in fresh stores, each SIGKILLed ``kills / trials`` times (half of the
   kills inside the question steps: after a random number of logged steps plus
   a random delay; the others at a random moment of the clean run's duration),
   then resumed to the end. After every kill the store's integrity check must
   pass; after the resume the report files must equal the clean run's byte for
   byte, and no answer saved before a kill may be computed again ("repeated
   engine calls": a response row rewritten by the resume).
2. ``--vllm``: the same run through a strict vLLM server (float32, no prefix
   caching), whose server is SIGKILLed mid-run: the run must stop with one line
   and exit 2; after a restart the resume makes exactly the missing calls.
3. Disk faults: a store that is not SQLite, a store in a read-only folder, an
   output folder that cannot be written (as ``nobody`` via setpriv when root):
   each must give one line on stderr and exit 2.

    python benchmarks/faults.py [--kills 20 --trials 10 --seed 0 --vllm]

Prints kills survived, reports identical out of N, repeated engine calls.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
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


def kill_at(cmd: list[str], db: Path, *, after_steps: int | None, delay: float, timeout: float = 1800) -> dict:
    """Start ``cmd``; SIGKILL it ``delay`` s after ``after_steps`` steps are logged
    (or ``delay`` s after start when None). Returns what the kill hit."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, deadline = time.monotonic(), time.monotonic() + timeout
    if after_steps is not None:
        while p.poll() is None and time.monotonic() < deadline and \
                query(db, "select count(distinct step) from events") < after_steps:
            time.sleep(0.05)
    time.sleep(delay)
    alive = p.poll() is None
    if alive:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    steps = query(db, "select count(distinct step) from events")
    return {"alive": alive, "steps": steps, "seconds": time.monotonic() - t0,
            "integrity": query(db, "pragma integrity_check", "ok") == "ok"}


def report_files(out: Path) -> dict[str, Path]:
    run = next(p for p in out.iterdir() if p.is_dir())
    return {str(f.relative_to(run)): f for f in sorted(run.rglob("*")) if f.is_file() and "replay" not in f.parts}


def differing(clean: dict[str, Path], other: dict[str, Path]) -> list[str]:
    return [k for k, f in clean.items() if k not in other or not filecmp.cmp(f, other[k], shallow=False)] + \
        [k for k in other if k not in clean]


@dataclass
class Campaign:
    kills: int = 0  # SIGKILLs that landed while the run was alive
    inside: int = 0  # of which inside the question steps
    survived: int = 0  # kills after which the store was intact and the run resumed to the end
    trials: int = 0
    identical: int = 0
    repeated: int = 0  # answers saved before a kill and computed again
    missing_equal: int = 0  # trials whose resume made exactly the missing calls
    differences: list[str] = field(default_factory=list)


def kill_campaign(work: Path, kills: int, trials: int, seed: int, extra: list[str] = (), log=print,
                  settings: list[str] = SMALL, inside_share: float = 0.5, in_process: bool = False) -> Campaign:
    """``in_process``: the clean run and the resumes run in this process (the
    killed runs are always subprocesses); the test suite uses it to load the model once."""
    rng = random.Random(seed)
    clean_db, clean_out = work / "clean.db", work / "clean-runs"
    rc, out, err, clean_s = finish(command(clean_db, clean_out, list(extra), settings), in_process=in_process)
    if rc != 0:
        raise SystemExit(f"clean run failed: {err.strip()[-300:]}")
    total_calls = calls_of(out)
    steps = query(clean_db, "select count(distinct step) from events")
    clean = report_files(clean_out)
    log(f"clean run: {clean_s:.0f} s, {total_calls} engine calls, {steps} question steps, {len(clean)} report files")
    res = Campaign()
    per = [kills // trials + (1 if i < kills % trials else 0) for i in range(trials)]
    for t, k in enumerate(per):
        db, outdir = work / f"t{t}.db", work / f"t{t}-runs"
        cmd = command(db, outdir, list(extra), settings)
        hits = []
        for _ in range(k):
            if rng.random() < inside_share and steps > 1:  # inside a question step
                done = query(db, "select count(distinct step) from events")
                at = rng.randint(max(1, done), steps - 1) if done < steps - 1 else None
                hit = kill_at(cmd, db, after_steps=at, delay=rng.uniform(0.0, 1.5))
            else:
                hit = kill_at(cmd, db, after_steps=None, delay=rng.uniform(0.0, clean_s))
            hits.append(hit)
        before = answers(db)
        rc, out, err, _ = finish(cmd, in_process=in_process)
        after = answers(db)
        repeated = sum(1 for key, created in before.items() if after.get(key) != created)
        calls = calls_of(out)
        live = [h for h in hits if h["alive"]]
        res.kills += len(live)
        res.inside += sum(1 for h in live if 0 < h["steps"] < steps)
        ok = rc == 0 and all(h["integrity"] for h in hits)
        res.survived += len(live) if ok else 0
        res.repeated += repeated
        res.missing_equal += int(calls == total_calls - len(before))
        res.trials += 1
        diff = differing(clean, report_files(outdir)) if rc == 0 else ["(resume failed: " + err.strip()[-200:] + ")"]
        res.identical += not diff
        if diff:
            res.differences.append(f"trial {t}: {', '.join(diff)}")
        log(f"trial {t}: kills at steps {[h['steps'] for h in live]}, resume {'ok' if rc == 0 else 'FAILED'}, "
            f"{calls} calls (missing {total_calls - len(before)}), repeated {repeated}, "
            f"report {'identical' if not diff else 'differs: ' + ', '.join(diff)}")
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
    ap.add_argument("--vllm", action="store_true", help="also kill a vLLM server mid-run (needs .venv-vllm)")
    ap.add_argument("--work", help="working folder (default: a temporary one, removed after)")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="personae-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        faults = disk_faults(work)
        res = kill_campaign(work, args.kills, args.trials, args.seed)
        v = vllm_campaign(work) if args.vllm else None
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"kills survived: {res.survived}/{res.kills} ({res.inside} inside question steps)")
    print(f"reports identical: {res.identical}/{res.trials}")
    print(f"repeated engine calls: {res.repeated}; resumes making exactly the missing calls: {res.missing_equal}/{res.trials}")
    print(f"disk faults as one line, exit 2: {sum(ok for _, ok, _ in faults)}/{len(faults)}")
    if v:
        print(f"vLLM server killed: one line {v['one_line']}, exit {v['exit']}, resume calls {v['resume_calls']}/{v['missing']} missing, identical {v['identical']}")
    for d in res.differences:
        print("  differs:", d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
