"""A small slice of benchmarks/paper_scale.py (issue 24, item 4) in the suite:
one paper preset whose data cannot ship (Pew ATP W110: synthetic respondents
stand in) at 1/1000 of its published size against the simulator (a simulated
server, not a model), through the benchmark's own functions: it completes, the
simulator served requests, the synthetic data are flagged, and a run killed
half-way and resumed asks for exactly the missing answers and writes the same
report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import paper_scale as ps  # noqa: E402

PRESET = "hostility_w110"
SCALE = 0.001  # 10 generated personas, 20 synthetic respondents (the floor)


def test_paper_preset_at_tiny_scale_completes_and_resumes_exactly(tmp_path):
    ports = (ps.free_port(), ps.free_port())
    rec, plan, outcome, work = ps.measure(PRESET, SCALE, tmp_path, tmp_path / "synthetic", ports, log=lambda *_: None)
    assert rec["completed"], rec["error"]
    assert rec["requests"] > 0 and rec["prompts"] > rec["answers"] >= rec["requests"]  # 40 samples of a survey prompt in one
    assert rec["store_rows"] == rec["answers"]  # every prompt answered once, every answer stored (a prompt's samples: one)
    assert rec["synthetic"] and "SYNTHETIC DATA" in rec["synthetic"][0]
    assert "SYNTHETIC" in ps.table([rec])
    assert rec["peak_rss_mb"] > 0 and rec["wall_s"] > 0 and rec["report_s"] >= 0

    # Recorded as it finishes; a second invocation skips it.
    results = tmp_path / "results.jsonl"
    ps.append_record(results, rec)
    assert ps.load_records(results)[rec["key"]]["completed"]

    kr = ps.kill_and_resume(plan, outcome, work, tmp_path / "killed", ports, log=lambda *_: None)
    assert not kr.error, kr.error
    assert 0 < kr.killed_at_rows < kr.clean_rows
    assert kr.resume_completed
    assert kr.repeated == 0, json.dumps(kr.__dict__)
    assert kr.identical, kr.differing


@pytest.mark.fast
def test_a_benchmark_started_again_serves_the_same_urls_so_an_unfinished_preset_resumes_its_run(tmp_path):
    """The simulators' ports are part of every run id: a second start on the same
    folder keeps them (the unfinished preset's run and step log go on), unless one
    is taken, then both are new."""
    import socket

    first = ps.stable_ports(tmp_path)
    assert ps.stable_ports(tmp_path) == first and json.loads((tmp_path / "ports.json").read_text()) == list(first)
    with socket.socket() as held:
        held.bind(("127.0.0.1", first[0]))
        other = ps.stable_ports(tmp_path)
    assert first[0] not in other and ps.stable_ports(tmp_path) == other


@pytest.mark.fast
def test_a_record_at_another_rank_rate_is_another_record(tmp_path):
    """Figures measured with the simulator answering rankings at another rate are
    not "done earlier": the record's key names a rate other than the default
    (records at the default keep their keys), and a started benchmark skips only
    the record of its own rate."""
    default = ps._key(PRESET, 1, None, ["x=1"])
    assert default == f"{PRESET}@1/x=1"
    assert ps._key(PRESET, 1, None, ["x=1"], ps.DEFAULT_RANK_RATE) == default
    worst = ps._key(PRESET, 1, None, ["x=1"], 0.0)
    assert worst != default and "rank-rate0" in worst
    ps.append_record(tmp_path / "results.jsonl", {"key": default, "completed": True})
    done = ps.load_records(tmp_path / "results.jsonl")
    assert done.get(default, {}).get("completed") and worst not in done
