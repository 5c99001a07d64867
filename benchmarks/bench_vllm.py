"""vLLM server benchmark: continuous batching and prefix caching, measured in one run.

    python benchmarks/bench_vllm.py                 # starts the embedded model's server
    python benchmarks/bench_vllm.py --url http://127.0.0.1:8011/v1 --model smollm2-135m-instruct
    python benchmarks/bench_vllm.py --json out.json

1. Generation throughput (generated tokens per second, from the server's usage
   counts) with 1 request in flight versus 8 concurrent requests. On 2 CPU
   cores the target is >= 3x: vLLM batches the 8 decodes in one forward pass.
2. Prefix caching: one long backstory (~1,500 tokens, made unique per run so
   no earlier run warmed the cache) then questions asked one by one. Time of the
   first question (evaluates the backstory) versus each extra question (only the
   question suffix is evaluated), with the server's cached-token counts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.llm.base import GenerateRequest, OptionRequest, option_letters  # noqa: E402
from agents.llm.openai_engine import OpenAIEngine  # noqa: E402

STORY_SENTENCES = [
    "I grew up in a small town in Ohio where my father worked at the steel mill and my mother taught second grade.",
    "We went to the Methodist church every Sunday, and after the service we ate with my grandparents.",
    "When the mill closed in the eighties, half of our street moved away looking for work.",
    "I was the first in my family to go to college; I studied nursing at a state school and paid for it by waiting tables.",
    "I married young, had two children, and divorced after twelve years, which taught me to stand on my own feet.",
    "For twenty years I worked night shifts in an emergency room, and I saw what addiction did to our county.",
    "I care about my neighbours, my garden, fishing with my grandson and keeping my independence.",
    "I do not trust politicians much, but I vote in every election because my mother said it was our duty.",
]

QUESTIONS = [
    ("How often do you attend religious services?", ["Never", "A few times a year", "Once a month", "Every week"]),
    ("Do you think the country is headed in the right direction?", ["Right direction", "Wrong track", "Not sure"]),
    ("How much do you trust the federal government?", ["A lot", "Some", "Not much", "Not at all"]),
    ("How would you rate the economy today?", ["Excellent", "Good", "Fair", "Poor"]),
    ("How important is religion in your life?", ["Very", "Somewhat", "Not too", "Not at all"]),
    ("Should the government do more to solve problems?", ["Do more", "Doing too much", "About right"]),
    ("How worried are you about climate change?", ["Very", "Somewhat", "Not too", "Not at all"]),
]


def backstory(target_tokens: int = 1500) -> str:
    # A unique first line: the server's prefix cache must not know this text yet.
    text = f"[respondent {uuid.uuid4().hex}]\nQuestion: Tell me about yourself.\nAnswer:"
    i = 0
    while len(text) < target_tokens * 4.3:  # ~4.3 characters per token for English prose
        text += " " + STORY_SENTENCES[i % len(STORY_SENTENCES)]
        i += 1
    return text + "\n\nPlease answer the following question keeping in mind your previous answers.\n"


def question(prefix: str, q: str, opts: list[str]) -> OptionRequest:
    letters = option_letters(len(opts))
    body = "".join(f"({l}) {o}\n" for l, o in zip(letters, opts))
    return OptionRequest(prefix=prefix, suffix=f"Question: {q}\n{body}Answer:", options=letters)


def throughput(engine: OpenAIEngine, n: int, max_tokens: int, seed0: int) -> dict:
    prompts = [f"Write a long story about a lighthouse keeper named Ada, chapter {seed0 + i}.\n" for i in range(n)]
    reqs = [GenerateRequest(p, max_tokens=max_tokens, temperature=1.0, seed=seed0 + i) for i, p in enumerate(prompts)]
    before = engine.stats.generated_tokens
    t0 = time.perf_counter()
    engine.generate(reqs)
    dt = time.perf_counter() - t0
    toks = engine.stats.generated_tokens - before
    return {"requests": n, "seconds": dt, "tokens": toks, "tok_per_s": toks / dt}


def run(url: str, model: str, max_tokens: int = 64) -> dict:
    out: dict = {"url": url, "model": model}
    single = OpenAIEngine(model, url, concurrency=1)
    multi = OpenAIEngine(model, url, concurrency=8)
    try:
        single.generate([GenerateRequest("Hello", max_tokens=8, seed=0)])  # warm-up (first request compiles kernels)
        one = [throughput(single, 1, max_tokens, 100 + i) for i in range(3)]
        eight = throughput(multi, 8, max_tokens, 200)
        tps1 = sum(r["tokens"] for r in one) / sum(r["seconds"] for r in one)
        out["generation"] = {"tok_per_s_1": tps1, "tok_per_s_8": eight["tok_per_s"], "ratio_8_over_1": eight["tok_per_s"] / tps1,
                             "max_tokens": max_tokens}

        story = backstory()
        first_stats = single.stats.cached_prompt_tokens, single.stats.prompt_tokens
        times, cached, evaluated = [], [], []
        for q, opts in QUESTIONS:
            c0, p0 = single.stats.cached_prompt_tokens, single.stats.prompt_tokens
            t0 = time.perf_counter()
            single.option_probs([question(story, q, opts)])
            times.append(time.perf_counter() - t0)
            cached.append(single.stats.cached_prompt_tokens - c0)
            evaluated.append(single.stats.prompt_tokens - p0)
        del first_stats
        extra = statistics.median(times[1:])
        out["prefix_cache"] = {
            "backstory_tokens": evaluated[0] + cached[0],
            "first_s": times[0], "extra_median_s": extra, "extra_s": times[1:],
            "first_over_extra": times[0] / extra,
            "cached_tokens_per_extra": cached[1:], "evaluated_tokens_per_extra": evaluated[1:],
        }
    finally:
        single.close()
        multi.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an OpenAI-compatible base URL already serving (default: start the embedded model)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    server = None
    if args.url:
        url, model = args.url, args.model or "smollm2-135m-instruct"
    else:
        from agents.llm.vllm_server import serve

        server = serve()
        print(f"server ready in {server.start_seconds:.0f} s at {server.base_url}")
        url, model = server.base_url, server.name
    try:
        res = run(url, model, args.max_tokens)
    finally:
        if server is not None:
            server.stop()
    if server is not None:
        res["server_start_s"] = server.start_seconds
    g, p = res["generation"], res["prefix_cache"]
    print(f"generation: {g['tok_per_s_1']:.1f} tok/s with 1 request, {g['tok_per_s_8']:.1f} tok/s with 8 concurrent "
          f"-> x{g['ratio_8_over_1']:.2f} (target >= 3)")
    print(f"prefix cache: backstory {p['backstory_tokens']} tokens; first question {p['first_s']:.3f} s, "
          f"extra question {p['extra_median_s']:.3f} s (median of {len(p['extra_s'])}) -> first/extra x{p['first_over_extra']:.1f}; "
          f"cached tokens per extra question {p['cached_tokens_per_extra']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
