"""Sweeps: a YAML's ``sweep:`` section lists values to vary (conditioning
methods, matching methods, seeds, any setting); every combination runs through
Mesa's ``batch_run`` and the headline results land in one table.

Each combination is an ordinary run (own run id, resumable, replayable); the
sweep model below only wraps it so ``batch_run`` can drive it.
"""
from __future__ import annotations

import gc
import json
from pathlib import Path

import mesa
import pandas as pd

from core.store import Store
from scenarios.config import ScenarioConfig, apply_override, validate_config
from simulation.runner import build_model, output_dir, stored_run_id, write_outputs


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
        self.run_id = stored_run_id(self.cfg, self.store)
        self.inner = build_model(self.cfg, self.store, self.run_id)
        self.store.start_run(self.run_id, self.cfg.scenario, self.cfg.model_dump(mode="json"), str(output_dir(self.cfg, self.run_id)))
        self.values = values
        self.headline = ""
        self.engine_calls = 0
        self.datacollector = mesa.DataCollector(
            model_reporters={"run_id": "run_id", "headline": "headline",
                             "engine_calls": lambda m: m.inner.engine.misses if m.inner is not None else m.engine_calls}
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
            self.engine_calls = self.inner.engine.misses
            release(self.inner)
            self.inner = None
            gc.collect()  # its agents, personas and answers, before the next point is built
            trim_heap()
        self.datacollector.collect(self)


def release(model: mesa.Model) -> None:
    """Let a finished model be freed. Mesa 3.3 keeps every model that ever made
    an agent as a key of the class-level ``mesa.Agent._ids`` (its unique-id
    counters; mesa issue #3179): a sweep held every earlier point's agents,
    personas, histories and answers while the next point ran (measured: all
    three waves of anthology_atp_main alive at the end). Later mesa releases
    number agents in the model itself (mesa PR #3180): nothing to do there."""
    ids = getattr(mesa.Agent, "_ids", None)
    if isinstance(ids, dict):
        ids.pop(model, None)


def trim_heap() -> None:
    """Hand the freed heap back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere). glibc keeps freed small blocks mapped: without this the next
    point's largest allocation (the max-weight matrix, mapped on its own) came
    on top of the previous point's freed heap instead of reusing it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_sweep(cfg: ScenarioConfig, label: str, *, console=None) -> Path:
    base = cfg.model_dump(mode="json")
    parameters = {_key(k): v for k, v in cfg.sweep.items()}
    parameters.update(base_config=json.dumps(base), label=label)
    results = mesa.batch_run(SweepPoint, parameters, number_processes=1, iterations=1, data_collection_period=-1, display_progress=False)
    frames = []
    for row in results:
        if not row.get("headline"):
            continue
        df = _with_words(_with_individual(_with_wd(pd.read_csv(row["headline"]), Path(row["headline"])), Path(row["headline"])), Path(row["headline"]))
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
    from analysis.report_tables import markdown_table

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


def _with_words(df: pd.DataFrame, headline: Path) -> pd.DataFrame:
    """Each condition's realized backstory length (mean words the personas wrote,
    ``critic_and_spread.csv``), so a length sweep (H2) shows what its budgets gave."""
    path = headline.parent / "critic_and_spread.csv"
    if not path.exists() or "condition" not in df.columns:
        return df
    words = pd.read_csv(path)
    if "backstory_words" not in words.columns:
        return df
    return df.drop(columns=["backstory_words"], errors="ignore").merge(words[["condition", "backstory_words"]], on="condition", how="left")


def _with_individual(df: pd.DataFrame, headline: Path) -> pd.DataFrame:
    """Each condition's individual-level agreement (persona vs its own
    respondent, analysis.individual) with its bootstrap CI, from the run's
    ``individual_level.jsonl``; unchanged when the run has none."""
    path = headline.parent / "individual_level.jsonl"
    if not path.exists() or "condition" not in df.columns:
        return df
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ind = pd.DataFrame(
        [{"condition": r["condition"], "individual_agreement": r["agreement"], "individual_agreement_low": r["agreement_low"],
          "individual_agreement_high": r["agreement_high"], "individual_vs_cell": r["vs_cell"]} for r in records]
    )
    if ind.empty:
        return df
    return df.drop(columns=[c for c in ind.columns if c != "condition" and c in df.columns]).merge(ind, on="condition", how="left")


def plot_factor(table: pd.DataFrame, sweep: dict, out: Path) -> Path | None:
    """WD, the gaps and the individual-level agreement against the swept
    factor (the first non-seed sweep key; ``seed`` values are repetitions), one
    line per condition and party (per condition for the agreement, which is
    not split by party). Gap and agreement bars: the report's bootstrap CI,
    averaged over seeds; WD bars: 95% normal interval over seeds (none with one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    factor = next((k for k in sweep if k != "seed"), None)
    metrics = [m for m in ("persona_delta", "wd", "individual_agreement") if m in table.columns and table[m].notna().any()]
    if factor is None or not metrics or factor not in table.columns:
        return None
    series = [c for c in ("condition", "party") if c in table.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    xs = {v: i for i, v in enumerate(dict.fromkeys(table[factor]))}
    ci = {"persona_delta": ("persona_ci_low", "persona_ci_high"), "individual_agreement": ("individual_agreement_low", "individual_agreement_high")}
    for ax, metric in zip(axes[0], metrics):
        # The agreement is per condition: one line each, not one per party.
        by = [c for c in series if c != "party"] if metric == "individual_agreement" else series
        data = table.drop_duplicates(["run_id", *by]) if metric == "individual_agreement" and "run_id" in table.columns else table
        for name, g in data.groupby(by, sort=False) if by else [("", data)]:
            pts = g.groupby(factor, sort=False)
            x = np.array([xs[v] for v in pts.groups])
            mean = pts[metric].mean().to_numpy(dtype=float)
            if metric in ci and set(ci[metric]) <= set(g.columns):
                low, high = pts[ci[metric][0]].mean().to_numpy(dtype=float), pts[ci[metric][1]].mean().to_numpy(dtype=float)
            else:
                half = (1.96 * pts[metric].sem()).fillna(0).to_numpy(dtype=float)
                low, high = mean - half, mean + half
            err = np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])
            ax.errorbar(x, mean, yerr=np.nan_to_num(err), marker="o", capsize=3, label=" / ".join(map(str, name if isinstance(name, tuple) else (name,))))
        if "backstory_words" in table.columns and table["backstory_words"].notna().any():
            # A length budget is not a length: each level's realized mean words under it.
            realized = table.groupby(factor, sort=False)["backstory_words"].mean()
            ax.set_xticks(list(xs.values()), [f"{v}\n({realized[v]:.0f} words)" for v in xs])
            ax.set_xlabel(f"{factor} (realized words per persona)")
        else:
            ax.set_xticks(list(xs.values()), [str(v) for v in xs])
            ax.set_xlabel(factor)
        ax.set_ylabel({"persona_delta": "gap (persona delta, 95% CI)", "wd": "Wasserstein distance",
                       "individual_agreement": "agreement with own respondent (95% CI)"}[metric])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "factor.png"
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path
