"""``python run.py represent generate|train|payoff|eval CONFIG.yaml [--set key=value]``.

One YAML (see mechanisms/finetuned_representatives/demo.yaml) describes the study: the deliberation
data (a Habermas Machine parquet file, a Personae ``episodes.jsonl``, or a set
played by personas), the leak-free split, LoRA training and the evaluation.
Everything lands in ``<output>/<name>/``: the data (when generated),
``split.json``, ``adapters/<set>/`` (one representative per conditioning set of
``eval.subsets``, each with its ``training_record.json``; ``none`` = the base
information only), ``payoff_model/``
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

from agents.llm.factory import EngineConfig, cached_engine
from core.config import StrictModel
from core.store import Store
from mechanisms import payoff_model as pm
from mechanisms.budget import GenerationBudget
from mechanisms.finetuned_representatives import deliberations as dl
from mechanisms.finetuned_representatives import evaluation as ev
from mechanisms.finetuned_representatives.splits import Split, split_examples
from mechanisms.finetuned_representatives.synthetic import generate
from mechanisms.finetuned_representatives.training import RECORD, TrainSettings, base_model_path, train
from scenarios.config import load_config
from simulation.console import RunConsole


class GenerateSettings(StrictModel):
    groups: int = Field(3, ge=2)
    group_size: int = Field(4, ge=2, le=8)
    questions_per_group: int = Field(2, ge=1)
    mediator: Literal["llm", "habermas", "opinion"] = "llm"


class DataSettings(StrictModel):
    path: str | None = None  # .parquet (HM layout) or episodes .jsonl; None = generate
    # P on the public HM release: its hm_all_position_statement_ratings.parquet
    # (the comparisons file holds no positions).
    positions: str | None = None
    generate: GenerateSettings = GenerateSettings()


class SplitSettings(StrictModel):
    validation: float = Field(0.34, gt=0, lt=1)


class EvalSettings(StrictModel):
    # Conditioning sets compared (letters of DOCP); represent train fits one adapter per set.
    subsets: list[str] = ["", "OC"]
    # Served adapters instead of in-process ones, e.g. a vLLM server: "{set}" in its model
    # name becomes each set's name (rep-{set} -> rep-none, rep-OC); without it every set is
    # scored with the one served adapter, and the report says so.
    finetuned_engine: EngineConfig | None = None
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

    def adapter(self, subset: str) -> Path:
        """The representative fine-tuned on conditioning set ``subset``."""
        return self.folder / "adapters" / set_name(subset)

    @property
    def payoff_adapter(self) -> Path:
        return self.folder / "payoff_model"


def set_name(subset: str) -> str:
    return subset or "none"


def finetuned_config(cfg: RepresentConfig, subset: str) -> tuple[EngineConfig, str]:
    """(engine config, what it is) of set ``subset``'s representative: its own
    adapter in process, or the served one (``{set}`` in the model name)."""
    served = cfg.eval.finetuned_engine
    if served is None:
        return cfg.engine.model_copy(update={"lora": str(cfg.adapter(subset))}), str(cfg.adapter(subset))
    if "{set}" in served.model:
        model = served.model.replace("{set}", set_name(subset))
        return served.model_copy(update={"model": model}), f"served {model}"
    return served, f"served {served.model} (one adapter for every set)"


def load_data(cfg: RepresentConfig, store: Store, console: RunConsole) -> dl.Deliberations:
    if cfg.data.path:
        return dl.load(cfg.data.path, cfg.data.positions)
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


def trained_already(adapter: Path, settings: TrainSettings, fingerprint: str) -> dict | None:
    """The finished training record in ``adapter`` for these settings and data, or None."""
    path = adapter / RECORD
    if not path.is_file() or not (adapter / "adapter_config.json").is_file():
        return None
    rec = json.loads(path.read_text())
    same = rec.get("settings") == settings.model_dump() and rec.get("data", {}).get("fingerprint") == fingerprint
    return rec if same else None


def cmd_train(cfg: RepresentConfig, console: RunConsole) -> int:
    """One representative per conditioning set of ``eval.subsets`` (the paper
    fine-tunes each variant on its own conditioning; App. B, Fig. 4), each
    resumable from its checkpoints; a set already trained with these settings on
    this data is skipped."""
    store = Store(cfg.store)
    data = load_data(cfg, store, console)
    data.require(cfg.eval.subsets)
    split = load_split(cfg, data)
    console.line(
        f"split: {len(split.train)} training / {len(split.validation)} validation examples "
        f"({len(split.train_participants)}/{len(split.validation_participants)} participants, "
        f"{len(split.train_questions)}/{len(split.validation_questions)} questions; {len(split.dropped)} dropped to avoid leakage)"
    )
    for k, subset in enumerate(cfg.eval.subsets, start=1):
        settings = cfg.train.model_copy(update={"seed": cfg.seed, "subset": subset})
        adapter = cfg.adapter(subset)
        rec = trained_already(adapter, settings, data.fingerprint())
        if rec is not None:
            console.line(f"set {k}/{len(cfg.eval.subsets)} {set_name(subset)}: trained already ({adapter}/, best step {rec['best_step']})")
            continue
        rec = train(data, split, adapter, settings)
        console.line(
            f"set {k}/{len(cfg.eval.subsets)} {set_name(subset)}: adapter written to {adapter}/: best step {rec['best_step']}, validation perplexity "
            f"{_ppl(rec['initial_val_loss'])} -> {rec['best_val_perplexity']:.2f}; {rec['steps_per_second']} steps/s; "
            f"{rec['truncated_examples']} example(s) truncated"
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
    if cfg.eval.finetuned_engine is None:
        for subset in cfg.eval.subsets:
            if not (cfg.adapter(subset) / "adapter_config.json").exists():
                raise dl.DeliberationError(f"{cfg.adapter(subset)}: no trained adapter for set '{set_name(subset)}' "
                                           "(run 'python run.py represent train' first, or set eval.finetuned_engine)")
    vanilla = cached_engine(cfg.engine, store)
    ft_cfg = finetuned_config(cfg, cfg.eval.subsets[0])[0] if cfg.eval.subsets else cfg.engine
    data.require(cfg.eval.subsets)
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
    nll_rows, judge_rows = [], []
    samples: dict[str, list] = {"vanilla": [], "fine-tuned": []}
    for k, subset in enumerate(cfg.eval.subsets):
        ft_cfg, adapter = finetuned_config(cfg, subset)
        finetuned = cached_engine(ft_cfg, store)  # this set's own representative
        for label, engine in (("vanilla", vanilla), ("fine-tuned", finetuned)):
            nll = ev.critique_nll(engine, data, val, subset, tok, cfg.train.max_items)
            nll_rows.append({"subset": subset or "none", "model": label, "adapter": adapter if label == "fine-tuned" else "",
                             "examples": len(val), **nll.to_json()})
            sampled = ev.sample_critiques(engine, data, val, subset, cfg.seed, cfg.budget.critique, cfg.eval.temperature, cfg.train.max_items)
            won = ev.autorater(judge, examples, sampled)
            judge_rows.append({"subset": subset or "none", "model": label, "win_rate": won["win_rate"], "wins": won["wins"]})
            # the null row (originals as their own representatives) does not depend on the set: played once
            samples[label] += ev.payoff_discrepancy(
                vanilla, None if label == "vanilla" else finetuned, data, val, [subset], cfg.seed, cfg.eval.mediator,
                cfg.eval.payoff_episodes, cfg.train.max_items, "vanilla" if label == "vanilla" else "ft",
                cfg.budget,
                cfg.eval.rollouts, judge, payoff_model, cfg.eval.temperature, null=k == 0,
            )
            console.line(f"  {subset or 'none':>5} {label:>10}: NLL/token {nll.mean:.3f} (perplexity {nll.perplexity:.2f}), autorater win rate {won['win_rate']:.3f}")
    source = "payoff model" if cfg.eval.payoff == "model" else "self-rating"
    payoff_rows = [{"model": label, **r, "subset": r["subset"] or "none"} for label, got in samples.items() for r in ev.discrepancy_rows(got, cfg.seed, source)]
    out = cfg.folder / "eval"
    files = write_eval_report(out, cfg, split, pd.DataFrame(nll_rows), pd.DataFrame(judge_rows), pd.DataFrame(payoff_rows))
    console.line(f"report written to {out}/ ({', '.join(f.name for f in files)})")
    return 0


def _mediator_note(cfg: RepresentConfig) -> str:
    """Which mediator replayed the episodes and who ranked its candidates."""
    med = "llm" if cfg.eval.payoff == "model" else cfg.eval.mediator  # the payoff-model replay revises with the LLM mediator
    if med == "habermas":
        return ("\n> mediator: habermas; candidates ranked by an assistant from each participant's words only (question, opinion, "
                "statement under revision, critique; the Habermas Machine's ranker).\n")
    return f"\n> mediator: {med}; nothing ranked.\n"


def write_eval_report(out: Path, cfg: RepresentConfig, split: Split, nll: pd.DataFrame, judge: pd.DataFrame, payoff: pd.DataFrame) -> list[Path]:
    from analysis.report_plots import new_figure, save_png
    from analysis.report_tables import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    files = []
    tables = {"critique_nll": nll, "autorater": judge}
    if len(payoff):
        tables["payoff_discrepancy"] = payoff
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
        "\n> payoff discrepancy (eq. 21): d_i = E[payoff with representatives] - E[payoff of the originals] for each substituted "
        f"participant, who critiques through the representative (one at a time, or all) (1-7 agreement, {PAYOFF_SOURCES[cfg.eval.payoff]}), "
        f"expectations over {cfg.eval.rollouts} seeded rollouts; signed_gap = mean d_i, gap = mean |d_i| over every held-out "
        "episode's substituted participants; ci = 95% expanded-percentile bootstrap resampling held-out groups (column interval); "
        "the 'self (null)' row re-plays the originals as their own representatives under other seeds: null_gap is the "
        "estimator's noise floor and excess_over_null = gap - null_gap; win_rate = consensus autorater (eq. 22), the judge's "
        "preference for the final statement reached with representatives over the originals' (0.5 = indistinguishable), "
        "pooled the same way. The estimator is the consensus scenario's (mechanisms.value_equivalence).\n"
        + _mediator_note(cfg)
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
