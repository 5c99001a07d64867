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

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.paper_scale import PortServer, differing, free_port, report_files, store_rows  # noqa: E402

SETTINGS = ["engine.kind=openai", "engine.model=simulated", "engine.concurrency=8", "engine.prompts_per_request=4",
            "engine.retries=3", "population.size=16", "population.conditions=[anthology, qa]", "population.chunk=2",
            "population.backstories.max_tokens=48", "human.sample=16", "human.lower_bound_splits=10",
            "questionnaire.questions=[natspac, natenvir, natheal, natcity, natcrime, natdrug]"]


def command(work: Path, ports: tuple[int, ...], *extra: str) -> list[str]:
    urls = ", ".join(f"http://127.0.0.1:{p}/v1" for p in ports)
    sets = [f"store={work / 'store.db'}", f"output={work / 'runs'}", f"engine.endpoints=[{urls}]", *SETTINGS, *extra]
    return [sys.executable, str(ROOT / "run.py"), "scenarios/gss_spending.yaml", "--plain", *[x for s in sets for x in ("--set", s)]]


def prompts(stats: dict) -> int:
    """Answers computed (a prompt sampled n times in one request counts n)."""
    return int(stats["completions"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, int]:
    """The run over two endpoints, uninterrupted: its folder and the prompts it took."""
    work = tmp_path_factory.mktemp("clean")
    ports = (free_port(), free_port())
    with PortServer(ports[0]) as a, PortServer(ports[1]) as b:
        done = subprocess.run(command(work, ports), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        clean = prompts(a.stats()) + prompts(b.stats())
        assert prompts(a.stats()) > 0 and prompts(b.stats()) > 0  # both endpoints took work
    assert store_rows(work / "store.db") == clean
    return work, clean


def start_and_kill_at(work: Path, ports: tuple[int, ...], rows: int) -> int:
    """Start the run and SIGKILL it once its store holds ``rows`` answers; the rows it left."""
    proc = subprocess.Popen(command(work, ports), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and store_rows(work / "store.db") < rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the kill"
    finally:
        proc.kill()
        proc.wait()
    return store_rows(work / "store.db")


def test_a_run_resumed_against_its_server_at_another_address_is_the_same_run(tmp_path, uninterrupted):
    """A rented GPU server comes back elsewhere: the run, killed a third of the way
    on one endpoint, is started again against a server on another port (other
    concurrency). It resumes under its id, asks exactly what it had not stored,
    and writes the uninterrupted run's report, in the same folder."""
    clean_dir, clean = uninterrupted
    with PortServer(free_port()) as first:
        at_kill = start_and_kill_at(tmp_path, (first.port,), clean // 3)
    with PortServer(free_port()) as moved:
        done = subprocess.run(command(tmp_path, (moved.port,), "engine.concurrency=3"), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        asked = prompts(moved.stats())
    (run_id,) = [d.name for d in (clean_dir / "runs").iterdir()]
    assert done.stdout.startswith(f"run {run_id} ")  # killed before it was registered: "(new)", the same id
    assert 0 < at_kill < clean and asked == clean - at_kill == store_rows(tmp_path / "store.db") - at_kill
    assert differing(report_files(clean_dir), report_files(tmp_path)) == []  # the same run id, the same report


def test_killed_endpoint_run_finishes_on_the_other_and_repeats_nothing(tmp_path, uninterrupted):
    clean_dir, clean = uninterrupted
    clean_rows = clean
    ports = (free_port(), free_port())
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
    assert differing(report_files(clean_dir), report_files(work)) == []
    print(f"scale-out: clean {clean} prompts; killed simulator served {served_by_killed}, survivor {survivor}; report identical")
