"""Store bytes per interview persona against the simulated server (issue 24, item 2).

Generates ``-n`` interview personas (the talk's "Ours": ten questions, a
whole-interview word budget, the per-answer format critic, one consistency-critic
round) through ``OpenAIEngine`` and ``CachedEngine`` into a fresh SQLite store,
against ``agents.llm.simulated_server`` (a simulator, not a model: its answers
mean nothing; ``--mean-tokens`` sets how long they run, ``--yes-rate`` how often a
critic check says "yes" and forces a resample). Then prints, per persona: the
persona's own text (the transcript it is conditioned on), the store file after
VACUUM and as the run left it, and their ratio to that text (the issue's target:
at most 3x; the simulator writes pseudo-words as compressible as English prose
unless ``--text sentences``), the bytes of
each table and index (SQLite's ``dbstat``), and the requests by kind with their
average stored request and response sizes -- what each persona costs and where
the bytes go.

    python benchmarks/bench_store.py [-n 12 --mean-tokens 300 --words 2500 --questions 10]
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import zlib
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import bank as banks  # noqa: E402
from agents.backstories import GenerationParams  # noqa: E402
from agents.llm.cache import CachedEngine  # noqa: E402
from agents.llm.openai_engine import OpenAIEngine  # noqa: E402
from agents.llm.simulated_server import SimulatedServer  # noqa: E402
from core.store import Store  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=12, help="interview personas")
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--words", type=int, default=2500, help="whole-interview word budget")
    ap.add_argument("--mean-tokens", type=int, default=300, help="the simulator's mean answer length in tokens")
    ap.add_argument("--yes-rate", type=float, default=0.1, help="the simulator's P(yes) for a critic check")
    ap.add_argument("--consistency-rounds", type=int, default=1)
    ap.add_argument("--text", choices=("prose", "sentences"), default="prose",
                    help="the simulator's texts: Zipf-drawn pseudo-words, as compressible as English prose (default), "
                         "or its few fixed sentences (which zlib packs ~6x and would flatter the store)")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "store.db"
        store = Store(path)
        params = GenerationParams(interview_questions=a.questions, interview_words=a.words, critic=True,
                                  consistency_rounds=a.consistency_rounds)
        with SimulatedServer(mean_tokens=a.mean_tokens, yes_rate=a.yes_rate, text=a.text) as sim:
            engine = OpenAIEngine.from_server(sim, concurrency=16)
            cached = CachedEngine(store, engine.fingerprint(), lambda: engine)
            people = banks.generate(cached, store, "i", "interview", a.n, seed=1, params=params, chunk=max(1, a.n // 2))
            engine.close()
        n = len(people)
        own = sum(len(p.conditioning.encode()) for p in people) / n
        packs = sum(len(p.conditioning.encode()) / len(zlib.compress(p.conditioning.encode(), 6)) for p in people) / n
        with closing(sqlite3.connect(path)) as con:
            con.execute("pragma wal_checkpoint(truncate)")
            written = path.stat().st_size / n  # as the run left it (pages part-filled by random keys)
            con.execute("vacuum")
            con.execute("pragma wal_checkpoint(truncate)")  # in WAL mode the vacuumed pages land in the WAL first
            size = path.stat().st_size / n
            tables = con.execute("select name, sum(pgsize) from dbstat group by name order by 2 desc").fetchall()
            ops = con.execute("select op, count(*), avg(length(request)), avg(length(response)) from responses group by op").fetchall()
    print(f"{n} interview personas ({a.questions} questions, {a.words}-word budget, format critic, "
          f"{a.consistency_rounds} consistency round(s); simulator mean {a.mean_tokens} tokens, yes-rate {a.yes_rate})")
    print(f"simulator texts: {a.text} (zlib packs the transcripts {packs:.1f}x; English prose 2.4-3x)")
    print(f"own text {own / 1024:.1f} KB/persona; store {size / 1024:.1f} KB/persona = {size / own:.1f}x after VACUUM, "
          f"{written / 1024:.1f} KB = {written / own:.1f}x as written (target <= 3x)")
    for name, nbytes in tables:
        if nbytes / n >= 1024:  # empty tables (one page each) left out
            print(f"  {name:32s} {nbytes / n / 1024:7.1f} KB/persona")
    for op, count, req, resp in ops:
        print(f"  {op:14s} {count / n:6.1f} requests/persona, stored request {req:.0f} B, response {resp:.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
