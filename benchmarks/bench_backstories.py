"""Backstory generation throughput, batched vs one at a time (issue 3).

In-process engine by default; ``--base-url http://127.0.0.1:P/v1 --model NAME``
measures an OpenAI-compatible (vLLM) server, whose client sends 8 requests
concurrently in batched mode. Prints generated tokens per second and the ratio,
both measured in one run.

    python benchmarks/bench_backstories.py [-n 8 --max-tokens 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.backstories import ANTHOLOGY_PROMPT  # noqa: E402
from agents.llm.base import GenerateRequest  # noqa: E402
from core.seeds import derive_seed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    if args.base_url:
        from agents.llm.openai_engine import OpenAIEngine

        engine = OpenAIEngine(args.model, [args.base_url], concurrency=8)
        where = f"vLLM server {args.base_url} (8 concurrent)"
    else:
        from agents.llm.transformers_engine import TransformersEngine

        engine = TransformersEngine.embedded()
        where = "in-process transformers"

    def reqs(tag: str) -> list[GenerateRequest]:
        return [GenerateRequest(ANTHOLOGY_PROMPT, max_tokens=args.max_tokens, temperature=1.0, seed=derive_seed(tag, i)) for i in range(args.n)]

    engine.generate(reqs("warm")[:1])
    t0 = time.perf_counter()
    batched = engine.generate(reqs("a"))
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    serial = [engine.generate([r])[0] for r in reqs("b")]
    t_serial = time.perf_counter() - t0
    rate_b = sum(g.n_tokens for g in batched) / t_batched
    rate_s = sum(g.n_tokens for g in serial) / t_serial
    print(f"{where}: {args.n} backstories x <= {args.max_tokens} tokens")
    print(f"  batched {rate_b:.1f} tok/s, one at a time {rate_s:.1f} tok/s -> {rate_b / rate_s:.2f}x (target >= 3x on vLLM)")


if __name__ == "__main__":
    main()
