"""Waiting for the vLLM environment that the test command builds in the background."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from agents.llm import vllm_server as vs


@pytest.fixture()
def venv(tmp_path, monkeypatch):
    path = tmp_path / ".venv-vllm"
    monkeypatch.setenv("PERSONAE_VLLM_VENV", str(path))
    return path


def test_missing_environment_is_one_line_naming_the_command(venv):
    with pytest.raises(vs.ServerError) as err:
        vs.wait_for_setup(timeout=5)
    msg = str(err.value)
    assert "\n" not in msg and "never set up" in msg and "vllm_server setup" in msg


def test_a_set_up_that_died_is_reported_not_waited_for(venv):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    vs._status_file(venv).write_text(json.dumps({"state": "running", "pid": dead.pid}))
    t0 = time.monotonic()
    with pytest.raises(vs.ServerError, match="the set-up stopped"):
        vs.wait_for_setup(timeout=60)
    assert time.monotonic() - t0 < 10


def test_a_failed_set_up_reports_its_error(venv):
    vs._status_file(venv).write_text(json.dumps({"state": "failed", "error": "pip could not reach the index"}))
    with pytest.raises(vs.ServerError, match="pip could not reach the index"):
        vs.wait_for_setup(timeout=5)


def test_waits_while_the_set_up_runs_then_returns(venv):
    """A live set-up process: the wait lasts until the environment's marker appears."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        vs._status_file(venv).write_text(json.dumps({"state": "running", "pid": worker.pid}))

        def finish():  # what setup() does last: a python in the venv, then the marker
            time.sleep(3)
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").symlink_to(sys.executable)
            (venv / vs.MARKER).write_text(json.dumps(vs._wanted()))

        threading.Thread(target=finish).start()
        t0 = time.monotonic()
        vs.wait_for_setup(timeout=60)
        assert 2.5 < time.monotonic() - t0 < 30 and vs.is_setup()
    finally:
        worker.kill()


def test_a_running_set_up_is_not_started_twice(venv):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        vs._status_file(venv).write_text(json.dumps({"state": "running", "pid": worker.pid}))
        assert vs.setup_in_background() == worker.pid
        assert not vs.setup_log(venv).exists()  # no second pip was launched
    finally:
        worker.kill()
