"""Client throughput against the simulated OpenAI-compatible server (issue 24).

Starts ``agents.llm.simulated_server`` (answering at once) on 127.0.0.1 and, in
the same run, measures:

1. the simulator's raw rate: a bare ``http.client`` keep-alive loop posting
   pre-encoded requests (1 prompt and 32 prompts per request) -- what the
   server costs with next to no client;
2. ``OpenAIEngine``: option distributions/s, generations/s (16 tokens; distinct
   derived seeds, the project's pattern, one HTTP request each; and one prompt
   with consecutive seeds, sent with ``n``) and log-likelihoods/s, with one prompt
   per request and with ``prompts_per_request``;
3. the same through ``CachedEngine`` over a real SQLite ``Store``: cold (every
   request a miss, written to the store) and warm (every request a hit);
4. the sampled demographic survey's unit (40 samples of one prompt): samples/s
   stored as one answer per prompt (``CachedEngine.sample``) and, as before
   December 2026, one stored generation per sample (``Engine.sample``: the
   samples expanded into generations, each cached on its own).

Prints the rates, the ratios to the simulator's raw rate, and the HTTP requests
each operation took (engine side and server side). Targets on 2 cores: >= 1,000
option distributions/s and >= 300 short generations/s through the cache.

    python benchmarks/bench_client.py [--n 4000 --concurrency 8 --ppr 32]
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.llm.base import Engine, GenerateRequest, LoglikRequest, OptionRequest, SampleRequest  # noqa: E402
from agents.llm.cache import CachedEngine  # noqa: E402
from agents.llm.openai_engine import OpenAIEngine  # noqa: E402
from agents.llm.simulated_server import SimulatedServer  # noqa: E402
from core.seeds import derive_seed  # noqa: E402
from core.store import Store  # noqa: E402

# A short Anthology-style backstory (~120 words) and a four-option question.
BACKSTORY = (
    "Question: Tell me about yourself.\nAnswer: I am {i} and grew up on a dairy farm in Wisconsin. "
    + "I worked as a machinist for thirty years, I go to church most Sundays, and I worry about prices. " * 6
    + "\n\nPlease answer the following question keeping in mind your previous answers.\n"
)
QUESTION = "Question: How often do you attend religious services?\n(A) Never\n(B) A few times a year\n(C) Once a month\n(D) Every week\nAnswer with (A), (B), (C) or (D).\nAnswer: ("


def options(n: int, tag: str) -> list[OptionRequest]:
    return [OptionRequest(BACKSTORY.format(i=f"{tag}-{i}"), QUESTION, ("A", "B", "C", "D")) for i in range(n)]


def generations(n: int, tag: str, same_prompt: bool = False) -> list[GenerateRequest]:
    if same_prompt:  # backstory sampling: one prompt, seeds s, s+1, ...
        return [GenerateRequest(f"[{tag}] Question: Tell me about yourself.\nAnswer:", 16, 1.0, ("\nQuestion:",), 1000 + i) for i in range(n)]
    return [GenerateRequest(BACKSTORY.format(i=f"{tag}-{i}") + "Question: What do you do on weekends?\nAnswer:", 16, 1.0,
                            ("\nQuestion:",), derive_seed(tag, i)) for i in range(n)]


def logliks(n: int, tag: str) -> list[LoglikRequest]:
    return [LoglikRequest(BACKSTORY.format(i=f"{tag}-{i}") + "Question: Do you own a car?\nAnswer:", " Yes, a pickup truck.") for i in range(n)]


def surveys(n: int, tag: str, samples: int = 40) -> list[SampleRequest]:
    """The sampled demographic survey's requests: ``samples`` answers to one prompt each."""
    return [SampleRequest(BACKSTORY.format(i=f"{tag}-{i}") + QUESTION, samples, 2, 1.0, derive_seed(tag, i), len(BACKSTORY)) for i in range(n)]


def raw_rate(port: int, prompts_per_request: int, seconds: float = 1.5) -> float:
    """Prompts per second a bare keep-alive client gets (one connection, sequential)."""
    body = json.dumps({"model": "simulated", "prompt": [b.prompt for b in options(prompts_per_request, "raw")],
                       "max_tokens": 1, "temperature": 0.0, "logprobs": 20}).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    conn = http.client.HTTPConnection("127.0.0.1", port)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        conn.request("POST", "/v1/completions", body, headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        n += 1
    dt = time.perf_counter() - t0
    conn.close()
    return n * prompts_per_request / dt


def timed(fn, reqs) -> float:
    t0 = time.perf_counter()
    out = fn(reqs)
    dt = time.perf_counter() - t0
    assert len(out) == len(reqs)
    return len(reqs) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="option requests per measurement (generations: n/4)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--ppr", type=int, default=32, help="prompts per HTTP request")
    a = ap.parse_args()
    n_opt, n_gen = a.n, max(100, a.n // 4)
    rows: list[tuple[str, float, str]] = []
    with SimulatedServer() as srv:
        raw1 = raw_rate(srv.port, 1)
        raw32 = raw_rate(srv.port, 32)
        print(f"simulator raw rate (http.client, 1 connection): {raw1:,.0f} prompts/s at 1 per request, "
              f"{raw32:,.0f} prompts/s at 32 per request")
        for ppr in (1, a.ppr):
            eng = OpenAIEngine.from_server(srv, concurrency=a.concurrency, prompts_per_request=ppr)
            eng.option_probs(options(64, f"warm{ppr}"))  # connections open, code paths warm
            srv.reset()
            before = dict(eng.http_requests)
            label = f"engine ppr={ppr}"
            rows.append((f"{label}: option distributions/s", timed(eng.option_probs, options(n_opt if ppr > 1 else n_opt // 4, f"o{ppr}")), "opt"))
            rows.append((f"{label}: generations/s (distinct seeds)", timed(eng.generate, generations(n_gen, f"g{ppr}")), "gen"))
            rows.append((f"{label}: generations/s (one prompt, consecutive seeds)", timed(eng.generate, generations(n_gen, f"s{ppr}", True)), "gen"))
            rows.append((f"{label}: log-likelihoods/s", timed(eng.loglikelihood, logliks(n_gen, f"l{ppr}")), "opt"))
            sent = {k: v - before.get(k, 0) for k, v in eng.http_requests.items()}
            print(f"  {label}: HTTP requests per operation {sent}; engine requests {eng.stats.by_op}")
            print(f"  {label}: server saw {json.dumps(srv.stats()['by_kind'])}")
            eng.close()
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "store.db")
            eng = OpenAIEngine.from_server(srv, concurrency=a.concurrency, prompts_per_request=a.ppr)
            cached = CachedEngine(store, {"kind": "openai", "model": srv.name}, lambda: eng)
            cached.option_probs(options(64, "cwarm"))
            o, g = options(n_opt, "c"), generations(n_gen, "c")
            s = generations(n_gen, "cs", True)
            rows.append((f"cached ppr={a.ppr} cold: option distributions/s", timed(cached.option_probs, o), "opt"))
            rows.append((f"cached ppr={a.ppr} cold: generations/s (distinct seeds)", timed(cached.generate, g), "gen"))
            rows.append((f"cached ppr={a.ppr} cold: generations/s (one prompt, consecutive seeds)", timed(cached.generate, s), "gen"))
            rows.append((f"cached ppr={a.ppr} warm: option distributions/s", timed(cached.option_probs, o), "opt"))
            rows.append((f"cached ppr={a.ppr} warm: generations/s", timed(cached.generate, g), "gen"))
            print(f"  cached: hits {cached.hits}, misses {cached.misses}; HTTP requests {eng.http_requests}")
            n_prompts = max(10, n_gen // 10)
            one = surveys(n_prompts, "one")
            rows.append((f"cached ppr={a.ppr} cold: survey samples/s (40 per prompt, one answer each prompt)",
                         timed(cached.sample, one) * one[0].n, "gen"))
            rows.append((f"cached ppr={a.ppr} cold: survey samples/s (40 per prompt, one answer each sample)",
                         timed(lambda r: Engine.sample(cached, r), surveys(n_prompts, "each")) * one[0].n, "gen"))
            cached.close()
    print()
    for name, rate, kind in rows:
        ratio = rate / (raw32 if kind == "opt" else raw1)
        print(f"{name:<62} {rate:>9,.0f}   {ratio:5.2f} x raw ({'32' if kind == 'opt' else '1'}/request)")
    cold_opt = next(r for n, r, _ in rows if n.startswith("cached") and "cold: option" in n)
    cold_gen = next(r for n, r, _ in rows if n.startswith("cached") and "cold: generations/s (distinct" in n)
    print(f"\ntargets through the cache (cold, every request computed): option distributions/s {cold_opt:,.0f} "
          f"({'ok' if cold_opt >= 1000 else 'BELOW'} >= 1,000); generations/s {cold_gen:,.0f} "
          f"({'ok' if cold_gen >= 300 else 'BELOW'} >= 300, distinct seeds: one HTTP request each)")


if __name__ == "__main__":
    main()
