"""The one real-model end-to-end run of the shipped panel study (British Social Attitudes
1983-1984, analysis/studies/bsa_panel.yaml) on the embedded model, kept tiny: eight QA
personas, one question, no position-bias probe (about 30 s on 2 cores). The logic is tested
on planted data and the fake engine in tests/test_individual.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scenarios.config import load_config
from simulation.runner import run

ROOT = Path(__file__).resolve().parent.parent


def test_the_panel_study_on_the_embedded_model_reports_persona_baselines_and_ceiling(tmp_path):
    cfg = load_config(ROOT / "scenarios/survey.yaml", [
        "human.study=bsa_panel", "human.sample=8", "population.conditions=[qa]", "human.subgroups=[]",
        "human.lower_bound_splits=4", "analysis.position_bias_personas=0",
        f"store={tmp_path / 'p.db'}", f"output={tmp_path / 'runs'}",
    ])
    out = run(cfg).output_dir
    table = pd.read_csv(out / "individual_level.csv")
    print("\n" + table.to_string())
    (record,) = [json.loads(line) for line in (out / "individual_level.jsonl").read_text().splitlines()]
    assert record["people"] == 8 and record["people_with_retest"] == 8
    for name in ("agreement", "cell", "marginal", "shuffled", "retest", "normalized"):
        assert record[f"{name}_low"] <= record[name] <= record[f"{name}_high"], name
    assert 0 < record["agreement"] <= 1 and 0 < record["retest"] <= 1
    assert np.isclose(record["normalized"], record["agreement"] / record["retest"])  # one item, everyone re-tested
    summary = (out / "summary.md").read_text()
    alerted = "WARNING individual level" in summary.split("\n## ")[0]
    assert alerted == (not record["beats_cell"])
