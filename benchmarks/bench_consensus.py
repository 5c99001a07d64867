"""Consensus episodes per minute: batched per phase vs one call at a time.

Groups of 5 participants, Habermas mediator with K = 8 candidates, 1 critique
round. "batched" sends each phase's requests in one engine call (what
:class:`mechanisms.Episode` does); "serial" wraps the same engine so every
request becomes its own call (what a naive agent loop does). Both modes run
the same episodes (same questions, personas, seeds) on a fresh engine so
neither profits from the other's prefix cache.

    python benchmarks/bench_consensus.py                      # in-process embedded model
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_consensus.py   # on a shared, busy machine
    python benchmarks/bench_consensus.py --no-local --base-url http://127.0.0.1:8011/v1 --model smollm2-135m-instruct
    # the Habermas Machine's settings: groups of 5, 16 candidates, chain-of-thought ranking
    python benchmarks/bench_consensus.py --group 5 --candidates 16 --ranking cot --no-local --base-url ... [--mode batched]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.llm.base import Engine  # noqa: E402
from mechanisms import EpisodeConfig, HabermasMediator, Participant, load_questions, run_episode  # noqa: E402
from mechanisms.budget import GenerationBudget  # noqa: E402

PERSONAS = [
    "I am a 67-year-old retired farmer from Yorkshire. I vote Conservative and distrust big government.",
    "I am a 24-year-old nurse in London. I vote Labour and care most about public services.",
    "I am a 45-year-old shop owner in Manchester. I vote Liberal Democrat and value personal freedom.",
    "I am a 33-year-old software developer in Bristol. I vote Green and worry about climate change.",
    "I am a 52-year-old lorry driver from Kent. I did not vote last time and I want lower fuel prices.",
]


class OneAtATime(Engine):
    """Every request of a batch becomes its own engine call."""

    def __init__(self, inner: Engine):
        super().__init__()
        self.inner = inner
        self.kind, self.model = inner.kind, inner.model

    def option_probs(self, requests):
        return [self.inner.option_probs([r])[0] for r in requests]

    def generate(self, requests):
        return [self.inner.generate([r])[0] for r in requests]


def run(make_engine, mode: str, args) -> dict:
    engine = make_engine()
    wrapped = OneAtATime(engine) if mode == "serial" else engine
    questions = load_questions(n=args.episodes, seed=args.seed)
    group = [Participant(f"p{i}", PERSONAS[i % len(PERSONAS)]) for i in range(args.group)]
    budget = GenerationBudget(opinion=args.opinion_tokens, critique=args.critique_tokens, statement=args.statement_tokens)
    mediator = HabermasMediator(num_candidates=args.candidates, max_tokens=budget.statement, ranking=args.ranking)
    cfg = EpisodeConfig(rounds=args.rounds, seed=args.seed, budget=budget)
    t0 = time.perf_counter()
    tokens = 0
    for q in questions:
        res = run_episode(wrapped, q, group, mediator, cfg)
        tokens += sum(r.n_tokens or 0 for r in res.log if r.kind == "generate")
    secs = time.perf_counter() - t0
    calls = engine.stats.calls
    engine.close()
    return {"mode": mode, "episodes": len(questions), "seconds": secs, "per_minute": 60 * len(questions) / secs,
            "engine_calls": calls, "generated_tokens": tokens}


def report(name: str, make_engine, args) -> None:
    rows = [run(make_engine, mode, args) for mode in (("batched", "serial") if args.mode == "both" else (args.mode,))]
    for r in rows:
        print(
            f"{name:12s} {r['mode']:8s} {r['episodes']} episodes in {r['seconds']:7.1f} s -> "
            f"{r['per_minute']:6.2f} episodes/min ({r['engine_calls']} engine calls, {r['generated_tokens']} tokens generated)"
        )
    if len(rows) == 2:
        print(f"{name:12s} batched / serial = {rows[0]['per_minute'] / rows[1]['per_minute']:.2f}x")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=1)
    ap.add_argument("--group", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--ranking", default="rating", choices=["rating", "choice", "cot"], help="how participants rank candidates (the Habermas Machine: cot)")
    ap.add_argument("--opinion-tokens", type=int, default=GenerationBudget().opinion)
    ap.add_argument("--critique-tokens", type=int, default=GenerationBudget().critique)
    ap.add_argument("--statement-tokens", type=int, default=GenerationBudget().statement)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="both", choices=["both", "batched", "serial"], help="batched only: consensus episodes per minute as Personae runs them")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the in-process engine")
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8011/v1")
    ap.add_argument("--model", default=None, help="model name served at --base-url (default: the first listed)")
    ap.add_argument("--no-local", action="store_true", help="skip the in-process engine")
    args = ap.parse_args(argv)
    print(f"group {args.group}, K = {args.candidates}, ranking {args.ranking}, rounds {args.rounds}, {args.episodes} episodes per mode")

    if not args.no_local:
        from agents.llm.transformers_engine import TransformersEngine

        report("in-process", lambda: TransformersEngine.embedded(dtype=args.dtype, threads=args.threads), args)
    if args.base_url:
        from agents.llm.openai_engine import OpenAIEngine

        def make():
            eng = OpenAIEngine(args.model or "", args.base_url)
            if not args.model:
                eng.model = eng.models()[0]
            return eng

        report("endpoint", make, args)


if __name__ == "__main__":
    main()
