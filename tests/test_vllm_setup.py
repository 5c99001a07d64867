"""Waiting for the vLLM environment that the test command builds in the background."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from agents.llm import vllm_server as vs

pytestmark = pytest.mark.fast  # needs no model: part of `make check`


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


def test_strict_mode_is_float32_without_prefix_caching_and_cached_apart(tmp_path):
    """engine.strict: the vLLM flags it stands for, its own cache entries, float32 only."""
    from scenarios.config import ConfigError, load_config

    assert vs.STRICT_FLAGS == ("--dtype", "float32", "--no-enable-prefix-caching")
    base = ["store=s.db", "output=runs", "engine.kind=openai", "engine.endpoints=[http://127.0.0.1:1/v1]"]
    plain = load_config("scenarios/gss_spending.yaml", base)
    strict = load_config("scenarios/gss_spending.yaml", base + ["engine.strict=true"])
    assert strict.engine.strict and strict.engine.fingerprint() == {**plain.engine.fingerprint(), "strict": True}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nscenario: gss_spending\nengine: {kind: vllm, dtype: bfloat16, strict: true}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, [])
    assert "\n" not in str(err.value) and "engine.strict" in str(err.value) and "float32" in str(err.value)
