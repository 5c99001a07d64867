"""Benchmark persona-human matching at the scale of the papers.

Default: 40,000 personas x 5,000 humans x 9 demographic traits (age 4, gender 2,
education 6, income 9, race 4, religion 12, region 4, party 4, ideology 7
options), greedy and max-weight matching.  Targets: <= 2 minutes and <= 4 GB
peak memory per method.

Each method runs in its own child process so that its peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``, which also counts memory allocated by
scipy's C++ assignment solver, unlike ``tracemalloc``) is measured in isolation.

Synthetic inputs: every persona has a latent category per trait drawn from a
skewed population distribution and a demographic-survey probability vector
estimated from 40 sampled answers, as the Anthology code does (multiples of
1/40, so many exact ties); humans are drawn from the same population, with 3%
refusals per trait.

    python benchmarks/bench_matching.py                # full size
    python benchmarks/bench_matching.py --personas 10000 --humans 2000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAIT_OPTIONS = {"age": 4, "gender": 2, "education": 6, "income": 9, "race": 4, "religion": 12, "region": 4, "party": 4, "ideology": 7}
TARGET_SECONDS = 120.0
TARGET_BYTES = 4 * 2**30


def synthetic_inputs(n_personas: int, n_humans: int, n_traits: int, seed: int):
    rng = np.random.default_rng(seed)
    persona_probs, human_codes = {}, {}
    for name, k in list(TRAIT_OPTIONS.items())[:n_traits]:
        population = rng.dirichlet(np.ones(k))
        latent = rng.choice(k, size=n_personas, p=population)
        # 40 sampled survey answers per persona: mostly its latent category, some noise.
        answer_p = np.full((n_personas, k), 0.15 / k)
        answer_p[np.arange(n_personas), latent] += 0.85
        counts = rng.multinomial(40, answer_p)  # one row of counts per persona
        persona_probs[name] = counts / 40.0
        codes = rng.choice(k, size=n_humans, p=population)
        codes[rng.random(n_humans) < 0.03] = -1
        human_codes[name] = codes
    return persona_probs, human_codes


def _rss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_child(method: str, n_personas: int, n_humans: int, n_traits: int, seed: int) -> dict:
    from analysis.matching import match

    baseline = _rss_bytes()
    t0 = time.perf_counter()
    persona_probs, human_codes = synthetic_inputs(n_personas, n_humans, n_traits, seed)
    build = time.perf_counter() - t0
    inputs_rss = _rss_bytes()
    t0 = time.perf_counter()
    result = match(persona_probs, human_codes, method)
    wall = time.perf_counter() - t0
    stats = result.stats
    return {
        "method": method,
        "seconds": wall,
        "input_seconds": build,
        "peak_rss": _rss_bytes(),
        "rss_before_inputs": baseline,
        "rss_after_inputs": inputs_rss,
        "mean_weight": stats.mean,
        "mean_log_weight": stats.mean_log,
        "distinct_personas": stats.n_unique_personas,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--personas", type=int, default=40_000)
    parser.add_argument("--humans", type=int, default=5_000)
    parser.add_argument("--traits", type=int, default=9, choices=range(1, len(TRAIT_OPTIONS) + 1))
    parser.add_argument("--methods", nargs="+", default=["greedy", "max_weight"], choices=["greedy", "max_weight", "random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(args.child, args.personas, args.humans, args.traits, args.seed)))
        return

    print(
        f"Matching benchmark: {args.personas:,} personas x {args.humans:,} humans x {args.traits} traits "
        f"(targets: <= {TARGET_SECONDS:.0f} s, <= {TARGET_BYTES / 2**30:.0f} GB peak per method); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    header = f"{'method':<11} {'wall s':>8} {'x target':>9} {'peak GB':>8} {'x target':>9} {'inputs GB':>10} {'mean log w':>11} {'personas used':>14}"
    print(header)
    print("-" * len(header))
    for method in args.methods:
        cmd = [sys.executable, __file__, "--child", method, "--personas", str(args.personas), "--humans", str(args.humans), "--traits", str(args.traits), "--seed", str(args.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{method:<11} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{method:<11} {r['seconds']:>8.2f} {r['seconds'] / TARGET_SECONDS:>9.3f} {r['peak_rss'] / 2**30:>8.2f} "
            f"{r['peak_rss'] / TARGET_BYTES:>9.3f} {r['rss_after_inputs'] / 2**30:>10.2f} {r['mean_log_weight']:>11.3f} {r['distinct_personas']:>14,}"
        )
    print("wall s = matching only (inputs are built before timing); peak GB = peak resident memory of the process.")


if __name__ == "__main__":
    main()
