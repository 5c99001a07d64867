"""Interview generation throughput (issue 16): 8 personas interviewed
together (each answer batched over the personas, the transcript so far as each
request's prefix) vs one persona at a time; the same budgets both ways.

Measured on the in-process engine and then through a vLLM server (8 requests
in flight, prefix caching on), each printed as generated tokens per second both
ways and their ratio, measured in one run. By default the embedded model's
server is started (wrap the command in ``flock /tmp/personae-vllm.lock``: one
server per machine) and stopped at the end; ``--url`` measures a server you run
instead, ``--no-vllm`` skips it. No store: every request reaches the engine.

    flock /tmp/personae-vllm.lock python benchmarks/bench_interview.py [-n 8 --questions 3 --answer-tokens 48 24]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.backstories import Draft, GenerationParams, interview  # noqa: E402
from agents.llm.base import Engine  # noqa: E402


class Counting(Engine):
    """Passes requests through, counting generated tokens."""

    def __init__(self, inner: Engine) -> None:
        super().__init__()
        self.inner, self.tokens = inner, 0

    def option_probs(self, requests):
        return self.inner.option_probs(requests)

    def generate(self, requests):
        out = self.inner.generate(requests)
        self.tokens += sum(g.n_tokens for g in out)
        return out


def measure(inner: Engine, n: int, params: GenerationParams) -> dict:
    """Tokens per second with ``n`` interviews together, then one at a time
    (different seeds, so no cache of any kind answers the second pass)."""

    def timed(drafts_of) -> tuple[int, float]:
        eng = Counting(inner)
        t0 = time.perf_counter()
        for drafts in drafts_of:
            interview(eng, drafts, params)
        return eng.tokens, time.perf_counter() - t0

    interview(inner, [Draft(idx=0, seed=999)], GenerationParams(interview_questions=1, answer_tokens=(4,), critic=False, consistency_rounds=0))  # warm-up
    tok_t, s_t = timed([[Draft(idx=i, seed=i) for i in range(n)]])
    tok_a, s_a = timed([[Draft(idx=i, seed=1000 + i)] for i in range(n)])
    return {"together_tok_s": tok_t / s_t, "together_tokens": tok_t, "together_s": s_t,
            "alone_tok_s": tok_a / s_a, "alone_tokens": tok_a, "alone_s": s_a, "ratio": (tok_t / s_t) / (tok_a / s_a)}


def show(where: str, r: dict) -> None:
    print(f"{where}: together {r['together_tok_s']:.1f} tok/s ({r['together_tokens']} tokens in {r['together_s']:.1f} s), "
          f"one at a time {r['alone_tok_s']:.1f} tok/s ({r['alone_tokens']} tokens in {r['alone_s']:.1f} s) -> {r['ratio']:.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--answer-tokens", type=int, nargs="+", default=[48, 24])
    ap.add_argument("--url", default=None, help="an OpenAI-compatible (vLLM) server already serving")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--no-inprocess", action="store_true")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    params = GenerationParams(interview_questions=args.questions, answer_tokens=tuple(args.answer_tokens), critic=False, consistency_rounds=0)
    print(f"{args.n} interviews x {args.questions} answers, budgets {params.budgets()}", flush=True)
    res: dict = {"n": args.n, "budgets": params.budgets()}
    if not args.no_inprocess:
        from agents.llm.transformers_engine import TransformersEngine

        res["inprocess"] = measure(TransformersEngine.embedded(), args.n, params)
        show("in-process transformers", res["inprocess"])
    if not args.no_vllm:
        from agents.llm.openai_engine import OpenAIEngine

        server = None
        if args.url:
            url, model = args.url, args.model
        else:
            from agents.llm.vllm_server import serve

            server = serve()
            print(f"vLLM server ready in {server.start_seconds:.0f} s at {server.base_url}", flush=True)
            url, model = server.base_url, server.name
        engine = OpenAIEngine(model, url, concurrency=args.n)
        try:
            res["vllm"] = measure(engine, args.n, params)
        finally:
            engine.close()
            if server is not None:
                server.stop()
        show(f"vLLM server {url} ({args.n} requests in flight)", res["vllm"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
