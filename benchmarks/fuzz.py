"""Fuzz the loaders at scale: 10,000 generated cases (study YAMLs with data of known
truth -- filter typos and traits emptied by coding among them --, OpinionQA-style
aggregate tables with unknown trait cells, refusal rows and shares, scenario YAMLs,
``--set`` overrides; no model) and a count of outcomes by kind.

The suite runs the same generators on 1,000 cases (tests/test_fuzz.py); this runs
more and prints every bug it finds (traceback, silently_wrong, bad_message) with
the case, then the counts. Exit status 1 if any bug was found.

    python benchmarks/fuzz.py                 # 10,000 cases: 4,000 study + 2,000 aggregate + 4,000 scenario
    python benchmarks/fuzz.py --cases 2000 --seed 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fuzz_cases import (  # noqa: E402
    BUGS,
    aggregate_case,
    run_aggregate_case,
    run_scenario_case,
    run_study_case,
    scenario_case,
    study_case,
)
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

SHARES = {"study": 0.4, "aggregate": 0.2, "scenario": 0.4}  # of --cases


def fuzz(kind: str, n: int, seed_value: int, folder: Path) -> tuple[Counter, float]:
    strategy, runner = {
        "study": (study_case(), run_study_case),
        "aggregate": (aggregate_case(), run_aggregate_case),
        "scenario": (scenario_case(), run_scenario_case),
    }[kind]
    counts: Counter = Counter()

    @seed(seed_value)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def check(case):
        outcome = runner(case, folder / kind)
        counts[outcome] += 1
        if outcome in BUGS:
            print(f"{kind}: {outcome}: {case if kind == 'scenario' else case[0]}", flush=True)

    t0 = time.perf_counter()
    check()
    return counts, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000, help="total cases: 40%% study files, 20%% aggregate tables, 40%% scenario files")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    total: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {kind: round(args.cases * share) for kind, share in SHARES.items()}
        sizes["scenario"] = args.cases - sizes["study"] - sizes["aggregate"]  # the total is exactly --cases
        for kind, n_kind in sizes.items():
            counts, seconds = fuzz(kind, n_kind, args.seed, Path(tmp))
            n = sum(counts.values())
            print(f"{kind}: {n} cases in {seconds:.1f} s ({1000 * seconds / max(n, 1):.1f} ms/case): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            total += counts
    print("total: " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())) + f" ({sum(total.values())} cases)")
    bugs = sum(total[k] for k in BUGS)
    print(f"bugs: {bugs}")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
