"""Fine-tuned representatives (issue 8): LoRA training speed and held-out gain.

Generates (or reuses from the store) the persona-played deliberation set,
trains a fresh adapter on the embedded model, and prints training steps per
second and the held-out critique NLL per token, vanilla vs fine-tuned, both
measured in this run.

    python benchmarks/bench_representatives.py [--groups 3 --group-size 4 --steps 20 --subset OC]
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
from mechanisms.finetuned_representatives import deliberations as dl  # noqa: E402
from mechanisms.finetuned_representatives import evaluation as ev  # noqa: E402
from mechanisms.finetuned_representatives.splits import split_examples  # noqa: E402
from mechanisms.finetuned_representatives.synthetic import generate  # noqa: E402
from mechanisms.finetuned_representatives.training import TrainSettings, train  # noqa: E402
from simulation.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--subset", default="OC")
    ap.add_argument("--store", default="bench-representatives.db")
    args = ap.parse_args()
    store = Store(args.store)
    episodes, cards = generate(cached_engine(EngineConfig(), store), args.groups, args.group_size, args.questions, seed=0)
    work = Path(tempfile.mkdtemp(prefix="bench-rep-"))
    try:
        data = dl.load(dl.write_parquet(episodes, work / "d.parquet", cards))
        split = split_examples(data.examples, 0.34, seed=0)
        settings = TrainSettings(subset=args.subset, max_steps=args.steps, eval_steps=max(1, args.steps // 4), patience=10)
        rec = train(data, split, work / "adapter", settings, progress=False)
        vanilla = TransformersEngine.embedded()
        tuned = TransformersEngine.embedded(lora=str(work / "adapter"))
        v = ev.critique_nll(vanilla, data, split.validation, args.subset, vanilla.tok, settings.max_items)
        f = ev.critique_nll(tuned, data, split.validation, args.subset, vanilla.tok, settings.max_items)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"LoRA r={settings.lora_r} on the embedded model, {len(split.train)} training / {len(split.validation)} held-out critiques, batch {settings.batch_size}")
    print(f"  training: {rec['global_step']} steps in {rec['train_seconds']:.1f} s = {rec['steps_per_second']:.3f} steps/s (evaluations included); best step {rec['best_step']}")
    print(f"  held-out critique NLL/token ({args.subset or 'none'}): vanilla {v.mean:.3f} (ppl {v.perplexity:.2f}) -> fine-tuned {f.mean:.3f} (ppl {f.perplexity:.2f}); gain {v.mean - f.mean:.3f} nats/token")


if __name__ == "__main__":
    main()
