"""Scale-out on what exists (issue 24, item 7): one run over two endpoints
(two simulators -- simulated servers, not models), one of them killed mid-run.
The run must finish on the other, ask nothing twice and write the same report
as an uninterrupted run over the same two endpoints.

How "nothing twice" is counted exactly: the run process is frozen (SIGSTOP)
once its store shows progress, the doomed simulator is given a moment to answer
whatever it had received (it answers at once), its request count is read --
every request it counted it has answered -- and then it is SIGKILLed and the
run thawed. The run then meets a dead endpoint (refused connections) while
requests it sent are still unread. Prompts served by the killed simulator plus
prompts served by the survivor must equal the uninterrupted run's prompts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.paper_scale import PortServer, differing, free_port, report_files, store_rows  # noqa: E402

SETTINGS = ["engine.kind=openai", "engine.model=simulated", "engine.concurrency=8", "engine.prompts_per_request=4",
            "engine.retries=3", "population.size=16", "population.conditions=[anthology, qa]", "population.chunk=2",
            "population.backstories.max_tokens=48", "human.sample=16", "human.lower_bound_splits=10",
            "questionnaire.questions=[natspac, natenvir, natheal, natcity, natcrime, natdrug]"]


def command(work: Path, ports: tuple[int, int]) -> list[str]:
    urls = ", ".join(f"http://127.0.0.1:{p}/v1" for p in ports)
    sets = [f"store={work / 'store.db'}", f"output={work / 'runs'}", f"engine.endpoints=[{urls}]", *SETTINGS]
    return [sys.executable, str(ROOT / "run.py"), "scenarios/gss_spending.yaml", "--plain", *[x for s in sets for x in ("--set", s)]]


def prompts(stats: dict) -> int:
    """Answers computed (a prompt sampled n times in one request counts n)."""
    return int(stats["completions"])


def test_killed_endpoint_run_finishes_on_the_other_and_repeats_nothing(tmp_path):
    ports = (free_port(), free_port())
    # The uninterrupted run over both endpoints (the same URLs: the same run id and report).
    with PortServer(ports[0]) as a, PortServer(ports[1]) as b:
        done = subprocess.run(command(tmp_path / "clean", ports), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        clean = prompts(a.stats()) + prompts(b.stats())
        assert prompts(a.stats()) > 0 and prompts(b.stats()) > 0  # both endpoints took work
    clean_rows = store_rows(tmp_path / "clean" / "store.db")
    assert clean_rows == clean

    work = tmp_path / "killed"
    a, b = PortServer(ports[0]).start(), PortServer(ports[1]).start()
    try:
        proc = subprocess.Popen(command(work, ports), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and store_rows(work / "store.db") < clean // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the kill"
        os.kill(proc.pid, signal.SIGSTOP)  # freeze the client: nothing new reaches the simulators
        time.sleep(0.5)  # the doomed simulator answers what it already received (it answers at once)
        served_by_killed = prompts(a.stats())
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
        survivor = prompts(b.stats())
    finally:
        if proc.poll() is None:
            proc.kill()
        a.stop()
        b.stop()
    assert proc.returncode == 0, err[-2000:]
    saved_at_kill_lower_bound = clean // 3
    assert 0 < served_by_killed < clean and survivor > 0
    assert served_by_killed + survivor == clean, (served_by_killed, survivor, clean)  # nothing asked twice
    assert store_rows(work / "store.db") == clean_rows >= saved_at_kill_lower_bound
    assert differing(report_files(tmp_path / "clean"), report_files(work)) == []
    print(f"scale-out: clean {clean} prompts; killed simulator served {served_by_killed}, survivor {survivor}; report identical")
