"""Fine-tuned representatives (issue 8) and the payoff model (issue 18) on the CPU.

Generates (or reuses from the store) the persona-played deliberation set,
trains a fresh critique adapter on the embedded model, and prints training
steps per second and the held-out critique NLL per token, vanilla vs
fine-tuned; then trains the payoff model on the personas' agreement ratings
(same split: held-out groups) and prints its training throughput (examples/s,
tokens/s, evaluations included), its scoring throughput (items/s, in-process
engine with the adapter) and its held-out MAE vs a constant baseline -- all
measured in this run.

    python benchmarks/bench_representatives.py [--groups 3 --group-size 4 --steps 20 --subset OC --payoff-steps 20]
    python benchmarks/bench_representatives.py --skip-critique --data hm_with_ratings.parquet   # the payoff model only
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.llm.factory import EngineConfig, cached_engine  # noqa: E402
from agents.llm.transformers_engine import TransformersEngine  # noqa: E402
from core.store import Store  # noqa: E402
from mechanisms import payoff_model as pm  # noqa: E402
from mechanisms.finetuned_representatives import deliberations as dl  # noqa: E402
from mechanisms.finetuned_representatives import evaluation as ev  # noqa: E402
from mechanisms.finetuned_representatives.splits import split_examples  # noqa: E402
from mechanisms.finetuned_representatives.synthetic import generate  # noqa: E402
from mechanisms.finetuned_representatives.training import TrainSettings, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--subset", default="OC")
    ap.add_argument("--payoff-steps", type=int, default=20)
    ap.add_argument("--score-items", type=int, default=64, help="items scored for the payoff model's items/s")
    ap.add_argument("--skip-critique", action="store_true", help="only the payoff model")
    ap.add_argument("--store", default="bench-representatives.db")
    ap.add_argument("--data", help="a deliberation file (HM parquet with ratings.agreement, or episodes.jsonl) instead of generating one")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rep-"))
    try:
        if args.data:
            data = dl.load(args.data)
        else:
            episodes, cards = generate(cached_engine(EngineConfig(), Store(args.store)), args.groups, args.group_size, args.questions, seed=0)
            data = dl.load(dl.write_parquet(episodes, work / "d.parquet", cards))
        split = split_examples(data.examples, 0.34, seed=0)
        settings = TrainSettings(subset=args.subset, max_steps=args.steps, eval_steps=max(1, args.steps // 4), patience=10)
        if not args.skip_critique:
            rec = train(data, split, work / "adapter", settings, progress=False)
            vanilla = TransformersEngine.embedded()
            tuned = TransformersEngine.embedded(lora=str(work / "adapter"))
            v = ev.critique_nll(vanilla, data, split.validation, args.subset, vanilla.tok, settings.max_items)
            f = ev.critique_nll(tuned, data, split.validation, args.subset, vanilla.tok, settings.max_items)
            print(f"LoRA r={settings.lora_r} on the embedded model, {len(split.train)} training / {len(split.validation)} held-out critiques, batch {settings.batch_size}")
            print(f"  training: {rec['global_step']} steps in {rec['train_seconds']:.1f} s = {rec['steps_per_second']:.3f} steps/s (evaluations included); best step {rec['best_step']}")
            print(f"  held-out critique NLL/token ({args.subset or 'none'}): vanilla {v.mean:.3f} (ppl {v.perplexity:.2f}) -> fine-tuned {f.mean:.3f} (ppl {f.perplexity:.2f}); gain {v.mean - f.mean:.3f} nats/token")
        payoff(data, split, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def payoff(data, split, work: Path, args) -> None:
    """The payoff model: training examples/s and tokens/s, scoring items/s, held-out MAE."""
    import time

    import numpy as np

    settings = TrainSettings(subset="", max_steps=args.payoff_steps, eval_steps=max(1, args.payoff_steps // 2), patience=10, max_length=384)
    rec = pm.train_payoff_model(data, split, work / "payoff", settings, progress=False)
    examples = rec["global_step"] * settings.batch_size * settings.grad_accum
    per_example = rec["train_tokens"] / max(1, rec["train_examples"])
    model = pm.load_payoff_model(work / "payoff")
    train_idx, held = pm.split_ratings(data.ratings, split)
    items = [pm.rating_item(data, data.ratings[i % len(data.ratings)], "", 1) for i in range(args.score_items)]
    t0 = time.perf_counter()
    model.score(items)
    secs = time.perf_counter() - t0
    res = pm.evaluate_payoff_model(model, data, held, rec["train_mean_rating"])
    print(f"payoff model: LoRA r={settings.lora_r}, {rec['train_ratings']} training / {rec['heldout_ratings']} held-out ratings "
          f"(mean {np.mean([r.rating for r in data.ratings]):.2f}), batch {settings.batch_size}, {per_example:.0f} tokens per example")
    print(f"  training: {rec['global_step']} steps in {rec['train_seconds']:.1f} s = {examples / rec['train_seconds']:.2f} examples/s, "
          f"{examples * per_example / rec['train_seconds']:.0f} tokens/s (evaluations included)")
    print(f"  scoring: {len(items)} items in {secs:.2f} s = {len(items) / secs:.1f} items/s (one batched option_probs call, adapter merged)")
    print(f"  held-out groups: MAE {res.mae:.3f} (r = {res.pearson:.3f}) vs constant baseline {res.baseline_mae:.3f} ({res.baseline:.2f}) on {res.n} ratings")


if __name__ == "__main__":
    main()
