"""Engine benchmarks on the embedded model (issue 2). Prints ratios measured in
one run, so a noisy shared machine affects both sides alike.

1. Prefix reuse: 20 personas x 10 questions with ~600-token backstories,
   cached prefix vs the full prompt per question (target >= 5x).
   Reuse = the persona's backstory evaluated once (declared prefix) and the
   words its questions share (instruction, "Question: ...") once per persona;
   the baseline evaluates every full prompt, sharing nothing.
2. Efficiency: useful prompt tokens per second in that survey run (each
   backstory once plus every question suffix) / the engine's raw
   prompt-evaluation rate on one long prompt (target >= 0.8).

    python benchmarks/bench_engine.py [--personas 20 --questions 10 --tokens 600]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.llm.base import OptionRequest, option_letters  # noqa: E402
from agents.llm.transformers_engine import TransformersEngine  # noqa: E402
from agents.questions import Question, option_request  # noqa: E402

SENTENCES = [
    "I grew up in a small town in {state} where my father repaired tractors and my mother taught third grade.",
    "After high school I worked two jobs to pay for community college, and later I moved to the city for work.",
    "My faith matters to me, though I do not go to church as often as I used to.",
    "I worry about the cost of health care and about what kind of country my grandchildren will inherit.",
    "On weekends I fish, cook for my family, and volunteer at the food bank downtown.",
]
STATES = ["Ohio", "Texas", "Georgia", "Oregon", "Maine", "Iowa", "Nevada", "Utah", "Idaho", "Vermont"]


def backstory(i: int, tokens: int, engine: TransformersEngine) -> str:
    text = f"Question: Tell me about yourself.\nAnswer: I am persona number {i}. "
    k = 0
    while len(engine.tok(text).input_ids) < tokens:
        text += SENTENCES[(i + k) % len(SENTENCES)].format(state=STATES[(i + k) % len(STATES)]) + " "
        k += 1
    return text + "\n\n"


def questions(n: int) -> list[Question]:
    return [
        Question.make(f"q{j}", f"How much do you agree with statement number {j} about public policy?", ["Strongly agree", "Agree", "Disagree", "Strongly disagree"])
        for j in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--personas", type=int, default=20)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=600)
    args = ap.parse_args()
    engine = TransformersEngine.embedded()
    stories = [backstory(i, args.tokens, engine) for i in range(args.personas)]
    qs = questions(args.questions)
    reuse = [option_request(s, q, [0, 1, 2, 3]) for s in stories for q in qs]
    full = [OptionRequest("", r.prefix + r.suffix, option_letters(4)) for r in reuse]
    engine.option_probs(reuse[:2])  # warm-up: thread pools, kernels
    engine._prefixes.clear()

    engine.stats.prompt_tokens = 0
    t0 = time.perf_counter()
    a = engine.option_probs(reuse)
    t_reuse = time.perf_counter() - t0
    reuse_tokens = engine.stats.prompt_tokens
    engine._prefixes.clear()
    engine.share_prefixes = False  # the baseline reuses nothing: every prompt in full
    engine.stats.prompt_tokens = 0
    t0 = time.perf_counter()
    b = engine.option_probs(full)
    t_full = time.perf_counter() - t0
    full_tokens = engine.stats.prompt_tokens
    engine.share_prefixes = True
    drift = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra.probs, rb.probs))

    useful = sum(len(engine.tok(s).input_ids) for s in stories) + sum(len(engine.tok(r.suffix).input_ids) for r in reuse)
    long_prompt = "".join(stories)[: 12000]
    ids = engine.tok(long_prompt).input_ids[:2048]
    engine._prefixes.clear()
    text = engine.tok.decode(ids)
    t0 = time.perf_counter()
    engine.option_probs([OptionRequest("", text + "\nAnswer: (", ("A", "B"))])
    raw_rate = len(ids) / (time.perf_counter() - t0)
    useful_rate = useful / t_reuse

    print(f"prefix reuse: {args.personas} personas x {args.questions} questions, ~{args.tokens}-token backstories")
    print(f"  cached prefix {t_reuse:.1f} s, full prompt per question {t_full:.1f} s -> speed-up {t_full / t_reuse:.2f}x (target >= 5x)")
    print(f"  prompt tokens evaluated: {reuse_tokens:,} with reuse, {full_tokens:,} in full ({full_tokens / reuse_tokens:.2f}x fewer)")
    print(f"  max |p_reuse - p_full| = {drift:.2e}")
    print(f"efficiency: useful prompt tokens/s in the survey {useful_rate:,.0f} / raw prompt rate {raw_rate:,.0f} tok/s (one {len(ids)}-token prompt) = {useful_rate / raw_rate:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
