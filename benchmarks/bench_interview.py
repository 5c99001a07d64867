"""Interview generation throughput (issue 16): 8 personas interviewed
together (each answer batched over the personas, the transcript so far as each
request's prefix) vs one persona at a time; the same budgets both ways.

In-process engine by default; ``--base-url http://127.0.0.1:P/v1 --model NAME``
measures an OpenAI-compatible (vLLM) server, 8 requests in flight. Prints
generated tokens per second both ways and their ratio, measured in one run.
No store: every request reaches the engine.

    python benchmarks/bench_interview.py [-n 8 --questions 3 --answer-tokens 48 24]
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--answer-tokens", type=int, nargs="+", default=[48, 24])
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    if args.base_url:
        from agents.llm.openai_engine import OpenAIEngine

        inner = OpenAIEngine(args.model, [args.base_url], concurrency=8)
        where = f"vLLM server {args.base_url} ({args.n} concurrent)"
    else:
        from agents.llm.transformers_engine import TransformersEngine

        inner = TransformersEngine.embedded()
        where = "in-process transformers"
    params = GenerationParams(interview_questions=args.questions, answer_tokens=tuple(args.answer_tokens), critic=False, consistency_rounds=0)

    def timed(drafts_of) -> float:
        eng = Counting(inner)
        t0 = time.perf_counter()
        for drafts in drafts_of:
            interview(eng, drafts, params)
        return eng.tokens / (time.perf_counter() - t0)

    interview(inner, [Draft(idx=0, seed=999)], GenerationParams(interview_questions=1, answer_tokens=(4,), critic=False, consistency_rounds=0))  # warm-up
    together = timed([[Draft(idx=i, seed=i) for i in range(args.n)]])
    alone = timed([[Draft(idx=i, seed=1000 + i)] for i in range(args.n)])
    print(f"{where}: {args.n} interviews x {args.questions} answers, budgets {params.budgets()}")
    print(f"  {args.n} together {together:.1f} tok/s, one at a time {alone:.1f} tok/s -> {together / alone:.2f}x")


if __name__ == "__main__":
    main()
