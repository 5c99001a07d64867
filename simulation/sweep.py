"""Sweeps: a YAML's ``sweep:`` section lists values to vary (conditioning
methods, matching methods, seeds, any setting); every combination runs through
Mesa's ``batch_run`` and the headline results land in one table.

Each combination is an ordinary run (own run id, resumable, replayable); the
sweep model below only wraps it so ``batch_run`` can drive it.
"""
from __future__ import annotations

import json
from pathlib import Path

import mesa
import pandas as pd

from simulation.config import ScenarioConfig, apply_override, validate_config
from simulation.runner import build_model, output_dir, write_outputs
from simulation.store import Store

HEADLINE = ("conditions.csv", "meta_perception.csv", "hostility.csv", "subversion.csv", "consensus.csv", "answers.csv")


def _key(path: str) -> str:
    return path.replace(".", "__")


class SweepPoint(mesa.Model):
    """One combination of a sweep, steppable by ``mesa.batch_run``."""

    def __init__(self, base_config: str = "{}", label: str = "sweep", **values) -> None:
        super().__init__()
        data = json.loads(base_config)
        data.pop("sweep", None)
        for key, value in values.items():
            apply_override(data, key.split("__"), value, label)
        self.cfg: ScenarioConfig = validate_config(data, label)
        self.store = Store(self.cfg.store)
        self.run_id = self.cfg.run_id()
        self.inner = build_model(self.cfg, self.store, self.run_id)
        self.store.start_run(self.run_id, self.cfg.scenario, self.cfg.model_dump(mode="json"), str(output_dir(self.cfg, self.run_id)))
        self.values = values
        self.headline = ""
        self.datacollector = mesa.DataCollector(
            model_reporters={"run_id": "run_id", "headline": "headline", "engine_calls": lambda m: m.inner.engine.misses}
        )
        self.running = self.inner.running

    def step(self) -> None:
        self.inner.step()
        if not self.inner.running:
            out = output_dir(self.cfg, self.run_id)
            write_outputs(self.inner, out)
            self.store.finish_run(self.run_id)
            self.headline = next((str(out / n) for n in HEADLINE if (out / n).exists()), "")
            self.running = False
        self.datacollector.collect(self)


def run_sweep(cfg: ScenarioConfig, label: str, *, console=None) -> Path:
    base = cfg.model_dump(mode="json")
    parameters = {_key(k): v for k, v in cfg.sweep.items()}
    parameters.update(base_config=json.dumps(base), label=label)
    results = mesa.batch_run(SweepPoint, parameters, number_processes=1, iterations=1, data_collection_period=-1, display_progress=False)
    frames = []
    for row in results:
        if not row.get("headline"):
            continue
        df = pd.read_csv(row["headline"])
        for k in cfg.sweep:
            v = row[_key(k)]
            df.insert(0, k, json.dumps(v) if isinstance(v, (list, dict)) else v)
        df.insert(0, "run_id", row["run_id"])
        frames.append(df)
        if console:
            console.line(f"sweep point {row['run_id']}: {', '.join(f'{k}={row[_key(k)]}' for k in cfg.sweep)}")
    out = Path(cfg.output) / f"{cfg.name}-sweep"
    out.mkdir(parents=True, exist_ok=True)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.to_csv(out / "sweep.csv", index=False, float_format="%.6f", lineterminator="\n")
    from analysis.report import markdown_table

    (out / "summary.md").write_text(f"# {cfg.name}: sweep over {', '.join(cfg.sweep)}\n\n{markdown_table(table.set_index('run_id')) if len(table) else '(no results)'}\n", encoding="utf-8")
    return out
