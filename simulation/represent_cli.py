"""``python run.py represent generate|train|payoff|eval CONFIG.yaml [--set key=value]``.

One YAML (see mechanisms/finetuned_representatives/demo.yaml) describes the study: the deliberation
data (a Habermas Machine parquet file, a Personae ``episodes.jsonl``, or a set
played by personas), the leak-free split, LoRA training and the evaluation.
Everything lands in ``<output>/<name>/``: the data (when generated),
``split.json``, ``adapter/`` (with ``training_record.json``), ``payoff_model/``
(the payoff model's adapter, ``payoff_model.csv``: held-out MAE / correlation
vs a constant baseline) and ``eval/`` (summary.md, CSV tables, representatives.png).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from core.config import StrictModel

from agents.llm.factory import EngineConfig, cached_engine
from mechanisms.budget import GenerationBudget
from mechanisms.finetuned_representatives import deliberations as dl
from mechanisms.finetuned_representatives import evaluation as ev
from mechanisms.finetuned_representatives.splits import Split, split_examples
from mechanisms.finetuned_representatives.synthetic import generate
from mechanisms.finetuned_representatives.training import RECORD, TrainSettings, base_model_path, train
from mechanisms import payoff_model as pm
from simulation.config import load_config
from simulation.console import RunConsole
from simulation.store import Store


class GenerateSettings(StrictModel):
    groups: int = Field(3, ge=2)
    group_size: int = Field(4, ge=2, le=8)
    questions_per_group: int = Field(2, ge=1)
    mediator: Literal["llm", "habermas", "opinion"] = "llm"


class DataSettings(StrictModel):
    path: str | None = None  # .parquet (HM layout) or episodes .jsonl; None = generate
    generate: GenerateSettings = GenerateSettings()


class SplitSettings(StrictModel):
    validation: float = Field(0.34, gt=0, lt=1)


class EvalSettings(StrictModel):
    subsets: list[str] = ["", "OC"]  # conditioning subsets compared (letters of DOCP)
    finetuned_engine: EngineConfig | None = None  # e.g. a vLLM server serving the adapter
    judge: EngineConfig | None = None  # autorater (eqs. 20, 22); default: the base engine, with a warning
    temperature: float = Field(0.8, ge=0)
    payoff_episodes: int = Field(1, ge=0)  # held-out episodes replayed for the payoff gap
    rollouts: int = Field(2, ge=1)  # seeded rollouts per replayed episode (expected payoff, bootstrap CI)
    mediator: Literal["llm", "habermas", "opinion"] = "llm"
    # self_rating: replay with the personas, payoffs = their own ratings (persona-played data only);
    # model: replay from the data, payoffs from the trained payoff model (works on real human data)
    payoff: Literal["self_rating", "model"] = "self_rating"


PAYOFF_SOURCES = {
    "self_rating": "the personas' self-ratings in episodes replayed with the personas",
    "model": "scored by the payoff model in episodes replayed from the data: real opinions, draft and other critiques, LLM mediator revision",
}


class PayoffSettings(StrictModel):
    """The payoff model (eq. 21): LoRA on agreement ratings, held-out groups = the split's validation groups."""

    train: TrainSettings = TrainSettings(subset="", max_items=1, max_steps=40, eval_steps=10, max_length=384)
    engine: EngineConfig | None = None  # e.g. a vLLM endpoint serving payoff_model/ under a name; default in process


class RepresentConfig(StrictModel):
    name: str = "represent"
    seed: int = 0
    store: str = "personae.db"
    output: str = "runs"
    engine: EngineConfig = EngineConfig()
    budget: GenerationBudget = GenerationBudget()  # tokens per opinion, critique, statement (generation and evaluation)
    data: DataSettings = DataSettings()
    split: SplitSettings = SplitSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    payoff: PayoffSettings = PayoffSettings()

    @property
    def folder(self) -> Path:
        return Path(self.output) / self.name

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def payoff_adapter(self) -> Path:
        return self.folder / "payoff_model"


def load_data(cfg: RepresentConfig, store: Store, console: RunConsole) -> dl.Deliberations:
    if cfg.data.path:
        return dl.load(cfg.data.path)
    path = cfg.folder / "deliberations.parquet"
    g = cfg.data.generate
    engine = cached_engine(cfg.engine, store)
    console.line(f"deliberation set: {g.groups} groups x {g.group_size} personas x {g.questions_per_group} questions ({cfg.engine.model_name()})")
    episodes, cards = generate(
        engine, g.groups, g.group_size, g.questions_per_group, cfg.seed, g.mediator, 1,
        cfg.budget,
        progress=lambda k, n: console.line(f"  episode {k}/{n}"),
    )
    dl.write_parquet(episodes, path, cards)
    console.line(f"  written to {path} ({engine.misses} engine calls, {engine.hits} from the store)")
    return dl.load(path)


def load_split(cfg: RepresentConfig, data: dl.Deliberations) -> Split:
    split = split_examples(data.examples, cfg.split.validation, cfg.seed, source=cfg.data.path or "generated data")
    cfg.folder.mkdir(parents=True, exist_ok=True)
    (cfg.folder / "split.json").write_text(json.dumps(split.to_json(), indent=2, sort_keys=True))
    return split


def cmd_train(cfg: RepresentConfig, console: RunConsole) -> int:
    store = Store(cfg.store)
    data = load_data(cfg, store, console)
    data.require([cfg.train.subset])
    split = load_split(cfg, data)
    console.line(
        f"split: {len(split.train)} training / {len(split.validation)} validation examples "
        f"({len(split.train_participants)}/{len(split.validation_participants)} participants, "
        f"{len(split.train_questions)}/{len(split.validation_questions)} questions; {len(split.dropped)} dropped to avoid leakage)"
    )
    rec = train(data, split, cfg.adapter, cfg.train.model_copy(update={"seed": cfg.seed}))
    console.line(
        f"adapter written to {cfg.adapter}/: best step {rec['best_step']}, validation perplexity "
        f"{_ppl(rec['initial_val_loss'])} -> {rec['best_val_perplexity']:.2f}; {rec['steps_per_second']} steps/s"
        + (f"; resumed from step {rec['resumed_from_step']}" if rec["resumed_from_step"] else "")
    )
    return 0


def cmd_payoff(cfg: RepresentConfig, console: RunConsole) -> int:
    """Train (resumable) and evaluate the payoff model on the held-out groups."""
    store = Store(cfg.store)
    data = load_data(cfg, store, console)
    if not data.ratings:
        raise pm.PayoffModelError(f"{data.source}: no agreement ratings to train a payoff model on (expected a ratings.agreement column, or episodes with payoff.agreement)")
    split = load_split(cfg, data)
    train_idx, held = pm.split_ratings(data.ratings, split)
    console.line(f"payoff model: {len(train_idx)} training / {len(held)} held-out ratings ({len(split.validation_groups)} held-out groups)")
    rec = pm.train_payoff_model(data, split, cfg.payoff_adapter, cfg.payoff.train.model_copy(update={"seed": cfg.seed}))
    model = pm.load_payoff_model(cfg.payoff_adapter, cfg.payoff.engine, store)
    res = pm.evaluate_payoff_model(model, data, held, rec["train_mean_rating"])
    table = pd.DataFrame([{"ratings": res.n, "mae": res.mae, "pearson": res.pearson, "baseline_mae": res.baseline_mae,
                           "baseline": res.baseline, "best_step": rec["best_step"], "steps_per_second": rec["steps_per_second"]}])
    table.to_csv(cfg.payoff_adapter / "payoff_model.csv", index=False, float_format="%.6f", lineterminator="\n")
    console.line(
        f"payoff model written to {cfg.payoff_adapter}/: held-out MAE {res.mae:.3f} (r = {res.pearson:.3f}) vs constant "
        f"baseline {res.baseline_mae:.3f} ({res.baseline:.2f}); best step {rec['best_step']}"
        + (f"; resumed from step {rec['resumed_from_step']}" if rec["resumed_from_step"] else "")
    )
    return 0


def _ppl(loss) -> str:
    import math

    return f"{math.exp(loss):.2f}" if loss is not None else "?"


def cmd_eval(cfg: RepresentConfig, console: RunConsole) -> int:
    from transformers import AutoTokenizer

    store = Store(cfg.store)
    data = load_data(cfg, store, console)
    split = load_split(cfg, data)
    if not (cfg.adapter / "adapter_config.json").exists() and cfg.eval.finetuned_engine is None:
        raise dl.DeliberationError(f"{cfg.adapter}: no trained adapter (run 'python run.py represent train' first, or set eval.finetuned_engine)")
    vanilla = cached_engine(cfg.engine, store)
    ft_cfg = cfg.eval.finetuned_engine or cfg.engine.model_copy(update={"lora": str(cfg.adapter)})
    finetuned = cached_engine(ft_cfg, store)
    data.require([*cfg.eval.subsets, cfg.train.subset])
    judge = cached_engine(cfg.eval.judge, store) if cfg.eval.judge else vanilla
    judge_model = (cfg.eval.judge or cfg.engine).model_name()
    if judge_model in (cfg.engine.model_name(), ft_cfg.model_name()):
        console.line(f"warning: the autorater's judge is the representatives' own model ({judge_model}); set eval.judge to a separate (larger) model")
    payoff_model = None
    if cfg.eval.payoff == "model":
        payoff_model = pm.load_payoff_model(cfg.payoff_adapter, cfg.payoff.engine, store)
    elif not data.conditionings:
        console.line("note: no persona texts in the data: the payoff discrepancy needs eval.payoff: model (run 'represent payoff' first)")
    tok = AutoTokenizer.from_pretrained(base_model_path(cfg.train.base_model))
    val = split.validation
    examples = [data.examples[i] for i in val]
    nll_rows, judge_rows, payoff_rows = [], [], []
    for subset in cfg.eval.subsets:
        for label, engine in (("vanilla", vanilla), ("fine-tuned", finetuned)):
            nll = ev.critique_nll(engine, data, val, subset, tok, cfg.train.max_items)
            nll_rows.append({"subset": subset or "none", "model": label, "examples": len(val), "nll_per_token": nll.mean, "perplexity": nll.perplexity})
            sampled = ev.sample_critiques(engine, data, val, subset, cfg.seed, cfg.budget.critique, cfg.eval.temperature, cfg.train.max_items)
            won = ev.autorater(judge, examples, sampled)
            judge_rows.append({"subset": subset or "none", "model": label, "win_rate": won["win_rate"], "wins": won["wins"]})
            rows = ev.payoff_discrepancy(
                vanilla, None if label == "vanilla" else finetuned, data, val, [subset], cfg.seed, cfg.eval.mediator,
                cfg.eval.payoff_episodes, cfg.train.max_items, "vanilla" if label == "vanilla" else "ft",
                cfg.budget,
                cfg.eval.rollouts, judge, payoff_model, cfg.eval.temperature,
            )
            payoff_rows += [{"model": label, **r, "subset": r["subset"] or "none"} for r in rows]
            console.line(f"  {subset or 'none':>5} {label:>10}: NLL/token {nll.mean:.3f} (perplexity {nll.perplexity:.2f}), autorater win rate {won['win_rate']:.3f}")
    out = cfg.folder / "eval"
    files = write_eval_report(out, cfg, split, pd.DataFrame(nll_rows), pd.DataFrame(judge_rows), pd.DataFrame(payoff_rows))
    console.line(f"report written to {out}/ ({', '.join(f.name for f in files)})")
    return 0


def write_eval_report(out: Path, cfg: RepresentConfig, split: Split, nll: pd.DataFrame, judge: pd.DataFrame, payoff: pd.DataFrame) -> list[Path]:
    from analysis.report import markdown_table, new_figure, save_png

    out.mkdir(parents=True, exist_ok=True)
    files = []
    tables = {"critique_nll": nll, "autorater": judge}
    if len(payoff):
        tables["payoff_discrepancy"] = payoff.groupby(["subset", "model", "mode", "payoff_source"], as_index=False, sort=True)[
            ["gap", "ci_low", "ci_high", "win_rate"]
        ].mean()
    text = [f"# {cfg.name}: digital representatives, vanilla vs fine-tuned\n"]
    text.append(
        f"\nHeld out: {len(split.validation)} critiques by {len(split.validation_participants)} participants on "
        f"{len(split.validation_questions)} questions, none seen in training ({len(split.train)} examples).\n"
    )
    for name, df in tables.items():
        path = out / f"{name}.csv"
        df.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
        files.append(path)
        text.append(f"\n## {name.replace('_', ' ')}\n\n{markdown_table(df.set_index(df.columns[0]))}\n")
    text.append(
        "\n> critique NLL: mean over held-out critiques of -(1/T) sum_t log p(c_t | prompt, c_<t); perplexity = exp(mean).\n"
        "\n> autorater: the judge's probability of preferring the representative's sampled critique over the real one, "
        "both orders averaged; 0.5 = indistinguishable.\n"
        f"\n> payoff discrepancy (eq. 21): mean over the substituted participants, who critique through the representative "
        f"(one at a time, or all), of |E[payoff with representatives] - E[payoff of the originals]| (1-7 agreement, "
        f"{PAYOFF_SOURCES[cfg.eval.payoff]}), expectations over {cfg.eval.rollouts} seeded rollouts; ci = 95% bootstrap over rollouts "
        "(mean over episodes); win_rate = consensus autorater (eq. 22), the judge's preference for the final statement "
        "reached with representatives over the originals' (0.5 = indistinguishable).\n"
    )
    summary = out / "summary.md"
    summary.write_text("".join(text), encoding="utf-8")
    files.insert(0, summary)
    panels = [("critique NLL / token (lower is better)", nll, "nll_per_token"), ("autorater win rate vs real critique", judge, "win_rate")]
    if "payoff_discrepancy" in tables:
        one = tables["payoff_discrepancy"]
        panels.append(("payoff discrepancy (lower is better)", one[one["mode"] == "all"], "gap"))
    fig = new_figure(4.2 * len(panels), 3.2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.86, wspace=0.3)
    for k, (title, df, col) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        subsets = list(dict.fromkeys(df["subset"]))
        for j, model in enumerate(("vanilla", "fine-tuned")):
            vals = [float(df[(df["subset"] == s) & (df["model"] == model)][col].mean()) for s in subsets]
            ax.bar([i + 0.38 * j for i in range(len(subsets))], vals, width=0.36, label=model)
        ax.set_xticks([i + 0.19 for i in range(len(subsets))], subsets)
        ax.set_xlabel("conditioning")
        ax.set_title(title, fontsize=9)
        if k == 0:
            ax.legend(fontsize=8)
    files.append(save_png(fig, out / "representatives.png"))
    return files


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py represent", description="Fine-tuned digital representatives: data, LoRA training, evaluation.")
    p.add_argument(
        "cmd", choices=["generate", "train", "payoff", "eval"],
        help="generate: the persona-played deliberation set; train: LoRA fine-tuning (resumable); "
        "payoff: train (resumable) and evaluate the payoff model; eval: vanilla vs fine-tuned report",
    )
    p.add_argument("config", help="YAML file, e.g. mechanisms/finetuned_representatives/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides, RepresentConfig)
    console = RunConsole(live=False)
    if args.cmd == "generate":
        data = load_data(cfg, Store(cfg.store), console)
        console.line(f"{len(data.examples)} critique examples from {len(data.participants)} participants on {len(data.questions)} questions")
        return 0
    if args.cmd == "train":
        return cmd_train(cfg, console)
    if args.cmd == "payoff":
        return cmd_payoff(cfg, console)
    return cmd_eval(cfg, console)


__all__ = ["RepresentConfig", "main", "RECORD"]
