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
            files = write_outputs(self.inner, output_dir(self.cfg, self.run_id))
            self.store.finish_run(self.run_id)
            # The report's first table is its headline (a study's conditions
            # table, a scenario's first table, else the answers).
            self.headline = next((str(f) for f in files if f.suffix == ".csv"), "")
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
        df = _with_wd(pd.read_csv(row["headline"]), Path(row["headline"]))
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

    plot = plot_factor(table, cfg.sweep, out) if len(table) else None
    link = f"\n![{plot.stem}]({plot.name})\n" if plot else ""
    (out / "summary.md").write_text(f"# {cfg.name}: sweep over {', '.join(cfg.sweep)}\n\n{markdown_table(table.set_index('run_id')) if len(table) else '(no results)'}\n{link}", encoding="utf-8")
    return out


def _with_wd(df: pd.DataFrame, headline: Path) -> pd.DataFrame:
    """When the headline table has no WD (its items are not in the human study,
    e.g. meta-perceptions), take each condition and party's WD from the run's
    first other table that has one (named in ``wd_from``)."""
    if "wd" in df.columns and df["wd"].notna().any() or not {"condition", "party"} <= set(df.columns):
        return df
    for path in sorted(headline.parent.glob("*.csv")):
        other = pd.read_csv(path) if path != headline else None
        if other is not None and {"condition", "party", "wd"} <= set(other.columns) and "item" not in other.columns and other["wd"].notna().any():
            wd = other[["condition", "party", "wd"]].assign(wd_from=path.stem)
            return df.drop(columns=[c for c in ("wd", "wd_from") if c in df.columns]).merge(wd, on=["condition", "party"], how="left")
    return df


def plot_factor(table: pd.DataFrame, sweep: dict, out: Path) -> Path | None:
    """WD and the gaps against the swept factor (the first non-seed sweep key;
    ``seed`` values are repetitions), one line per condition and party.
    Gap bars: the report's bootstrap CI (``persona_ci_low/high``), averaged over
    seeds; WD bars: 95% normal interval over seeds (none with one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    factor = next((k for k in sweep if k != "seed"), None)
    metrics = [m for m in ("persona_delta", "wd") if m in table.columns]
    if factor is None or not metrics or factor not in table.columns:
        return None
    series = [c for c in ("condition", "party") if c in table.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    xs = {v: i for i, v in enumerate(dict.fromkeys(table[factor]))}
    for ax, metric in zip(axes[0], metrics):
        for name, g in table.groupby(series, sort=False) if series else [("", table)]:
            pts = g.groupby(factor, sort=False)
            x = np.array([xs[v] for v in pts.groups])
            mean = pts[metric].mean().to_numpy(dtype=float)
            if metric == "persona_delta" and {"persona_ci_low", "persona_ci_high"} <= set(g.columns):
                low, high = pts["persona_ci_low"].mean().to_numpy(dtype=float), pts["persona_ci_high"].mean().to_numpy(dtype=float)
            else:
                half = (1.96 * pts[metric].sem()).fillna(0).to_numpy(dtype=float)
                low, high = mean - half, mean + half
            err = np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])
            ax.errorbar(x, mean, yerr=np.nan_to_num(err), marker="o", capsize=3, label=" / ".join(map(str, name if isinstance(name, tuple) else (name,))))
        ax.set_xticks(list(xs.values()), [str(v) for v in xs])
        ax.set_xlabel(factor)
        ax.set_ylabel({"persona_delta": "gap (persona delta, 95% CI)", "wd": "Wasserstein distance"}[metric])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "factor.png"
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path
