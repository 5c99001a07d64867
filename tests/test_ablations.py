"""The H3 ablation (scenarios/ablations/consistency.yaml) run end to end
through Mesa's batch_run on the fake engine, shrunk with ``--set``-style
overrides: every factor level is a whole run, and the factor plot and its table
are written (the sweep path on the real model: tests/test_scenarios.py; the
interview and its critics on the real model: tests/test_binding.py). The quantity and depth sweeps run the same path (``run_sweep``);
their laptop-size runs are ``python run.py scenarios/ablations/<name>.yaml``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenarios.config import load_config
from simulation.sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = "population.backstories.consistency_rounds"


@pytest.mark.fast
def test_consistency_ablation_runs_through_batch_run_and_plots_wd_and_gaps(tmp_path):
    cfg = load_config(ROOT / "scenarios" / "ablations" / "consistency.yaml", [
        f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}", "engine.kind=fake",
        "human.sample=6", "population.per_human=1",  # at least 2 partisans per party (seed 0): a CI on both sides
        "population.backstories.interview_questions=2", "population.backstories.answer_tokens=[8, 4]",
        "population.backstories.consistency_max_flags=1",
        f"sweep={{{ROUNDS}: [0, 1]}}",
    ])
    out = run_sweep(cfg, "ablation-test")

    png = out / "factor.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "sweep.csv")
    # One row per factor level and party, each from its own run.
    assert sorted(table[ROUNDS]) == [0, 0, 1, 1]
    assert table.groupby(ROUNDS)["run_id"].nunique().tolist() == [1, 1] and table["run_id"].nunique() == 2
    assert table.groupby(ROUNDS)["party"].apply(sorted).tolist() == [["Democrat", "Republican"]] * 2
    assert set(table["condition"]) == {"interview (greedy)"}
    # WD (from the thermometers) and the gap with its bootstrap CI, on every row.
    wd, low, mid, high = (table[c].to_numpy(float) for c in ("wd", "persona_ci_low", "persona_delta", "persona_ci_high"))
    assert np.isfinite(wd).all() and ((0 <= wd) & (wd <= 1)).all()
    assert np.isfinite(low).all() and np.isfinite(high).all() and (low <= mid).all() and (mid <= high).all()
    # The factor reached each run: the critic read transcripts only where it was on.
    critic = {r: pd.read_csv(Path(cfg.output) / rid / "critic_and_spread.csv").iloc[0]
              for r, rid in table.groupby(ROUNDS)["run_id"].first().items()}
    assert np.isnan(critic[0]["critic_flagged"]) and np.isfinite(critic[1]["critic_flagged"])
    # The realized interview length (words the personas wrote) beside the factor: a budget is not a length.
    assert (table["backstory_words"] > 0).all()
    assert f"sweep over {ROUNDS}" in (out / "summary.md").read_text() and "![factor](factor.png)" in (out / "summary.md").read_text()
