"""Fine-tune a digital representative: LoRA (peft) + the transformers Trainer.

Supervised fine-tuning on demonstrations, as in the paper: the loss is the
negative log-likelihood of the participant's critique (plus the end of the
turn) given the representative's prompt; prompt tokens are masked (-100).
Validation perplexity = exp(mean per-token NLL on the validation critiques)
is evaluated every ``eval_steps`` for early stopping, and the best checkpoint
is the one kept (the paper fine-tunes all weights of 1B/30B models; LoRA on
the embedded 135M model is what a laptop CPU affords, and the same code
trains any HF causal LM on a GPU).

A prompt too long for ``max_length`` loses whole past-question blocks of its
conditioning, oldest first (the base information -- question, own opinion,
draft -- and D always stay); only if that is not enough are tokens cut from the
prompt's start. ``training_record.json`` counts both kinds.

Validation perplexity is exp(mean over critiques of the per-token NLL): the
evaluation batch holds one example, so the Trainer's eval_loss is that mean
(the same definition as ``represent eval``'s critique NLL; the training target
also holds the end-of-turn token).

Resumable: checkpoints go to ``<adapter>/checkpoints``; a rerun continues from
the last one (optimizer, scheduler and data order included). The adapter and
``training_record.json`` (settings, data fingerprint, split, validation
perplexity per evaluation, timings) are written to ``<adapter>/``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import Field

from core.config import StrictModel

from .deliberations import CritiqueExample, Deliberations
from .splits import Split

RECORD = "training_record.json"


class TrainSettings(StrictModel):
    base_model: str = "embedded"  # "embedded" or an HF model folder / id
    subset: str = "OC"  # conditioning of the representative: letters of DOCP
    max_items: int = Field(2, ge=0)  # past questions in the conditioning
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_steps: int = Field(40, gt=0)
    eval_steps: int = Field(10, gt=0)
    patience: int = Field(3, gt=0)  # evaluations without improvement before stopping
    max_length: int = Field(512, gt=16)
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on a GPU
    seed: int = 0


def base_model_path(name: str) -> str:
    if name == "embedded":
        from agents.llm.embedded import hf_folder

        return str(hf_folder())
    return name


def _device_dtype(settings: TrainSettings):
    import torch

    cuda = torch.cuda.is_available()
    if settings.dtype == "auto":
        return cuda, (torch.bfloat16 if cuda else torch.float32)
    return cuda, getattr(torch, settings.dtype)


FITS, HISTORY_DROPPED, TOKENS_CUT = "fits", "history dropped", "tokens cut"


def tokenize_example(tok, prompt: str | list[str], target: str, max_length: int) -> tuple[dict, str]:
    """input_ids = prompt + target + end of turn; labels mask the prompt.
    ``prompt``: one text, or variants from longest to shortest (see
    :meth:`Deliberations.prompt_variants`): the first that fits is used
    (``HISTORY_DROPPED`` if not the first); if none fits, the last loses tokens
    from its start (``TOKENS_CUT``). The target is always kept."""
    end = tok.eos_token or ""
    variants = [prompt] if isinstance(prompt, str) else list(prompt)
    t = tok(target + end, add_special_tokens=False).input_ids
    status = FITS
    for k, text in enumerate(variants):
        p = tok(text, add_special_tokens=False).input_ids
        if len(p) + len(t) <= max_length:
            status = FITS if k == 0 else HISTORY_DROPPED
            break
    else:
        p = p[max(0, len(p) + len(t) - max_length) :]
        status = TOKENS_CUT
    ids = p + t
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(p) + t}, status


class _ListDataset:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def last_checkpoint(adapter: Path) -> Path | None:
    ckpts = sorted((adapter / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def train(
    data: Deliberations,
    split: Split,
    adapter: str | os.PathLike,
    settings: TrainSettings | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume training) a critique LoRA adapter; return the training record."""
    settings = settings or TrainSettings()

    def pairs(indices: list[int]) -> list[tuple[list[str], str]]:
        out = []
        for i in indices:
            ex: CritiqueExample = data.examples[i]
            out.append((data.prompt_variants(ex, settings.subset, settings.max_items), ex.critique))
        return out

    about = {"data": {"source": data.source, "fingerprint": data.fingerprint(), "examples": len(data.examples)}, "split": split.to_json()}
    return fit(pairs(split.train), pairs(split.validation), adapter, settings, about, progress)


def fit(
    train_pairs: list[tuple[str | list[str], str]],
    val_pairs: list[tuple[str | list[str], str]],
    adapter: str | os.PathLike,
    settings: TrainSettings,
    about: dict,
    progress: bool = True,
) -> dict:
    """Supervised LoRA fine-tuning on (prompt, target) pairs (loss on the
    target only), resumable from ``<adapter>/checkpoints``; ``about`` (data,
    split) goes into ``training_record.json`` next to the adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    adapter = Path(adapter)
    adapter.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()
    cuda, dtype = _device_dtype(settings)
    path = base_model_path(settings.base_model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    def rows(pairs) -> tuple[list[dict], dict[str, int]]:
        out, counts = [], {HISTORY_DROPPED: 0, TOKENS_CUT: 0}
        for prompt, target in pairs:
            row, status = tokenize_example(tok, prompt, target, settings.max_length)
            out.append(row)
            if status in counts:
                counts[status] += 1
        return out, counts

    train_rows, cut_train = rows(train_pairs)
    val_rows, cut_val = rows(val_pairs)
    torch.manual_seed(settings.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model = get_peft_model(
        model,
        LoraConfig(
            r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
            target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
        ),
    )
    args = TrainingArguments(
        output_dir=str(adapter / "checkpoints"),
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=1,  # eval_loss = mean over critiques of the per-token NLL (see the module docstring)
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",  # the paper: constant learning rate, AdamW
        optim="adamw_torch",
        max_steps=settings.max_steps,
        eval_strategy="steps",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=max(1, settings.eval_steps // 2),
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=not cuda,
        bf16=cuda and dtype == torch.bfloat16,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_ListDataset(train_rows),
        eval_dataset=_ListDataset(val_rows),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=settings.patience)],
    )
    resume = last_checkpoint(adapter)
    initial_file = adapter / "checkpoints" / "initial_eval.json"
    if resume is None:
        initial = trainer.evaluate()  # the vanilla model (adapter starts as identity)
        initial_file.parent.mkdir(parents=True, exist_ok=True)
        initial_file.write_text(json.dumps(initial))
    else:
        initial = json.loads(initial_file.read_text()) if initial_file.exists() else {}
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(str(adapter))
    tok.save_pretrained(str(adapter))
    state = trainer.state
    evals = [
        {"step": h["step"], "val_loss": h["eval_loss"], "val_perplexity": float(torch.exp(torch.tensor(h["eval_loss"])))}
        for h in state.log_history if "eval_loss" in h
    ]
    resumed_from = int(resume.name.split("-")[1]) if resume else 0
    steps_run = state.global_step - resumed_from
    best = min(evals, key=lambda e: e["val_loss"]) if evals else None
    record = {
        "base_model": settings.base_model,
        "settings": settings.model_dump(),
        **about,
        "train_examples": len(train_rows),
        "validation_examples": len(val_rows),
        # Examples longer than max_length: shortened by dropping past-question blocks
        # (oldest first), or -- when the base information alone is too long -- cut.
        "truncated_examples": sum(cut_train.values()) + sum(cut_val.values()),
        "history_dropped_examples": cut_train[HISTORY_DROPPED] + cut_val[HISTORY_DROPPED],
        "tokens_cut_examples": cut_train[TOKENS_CUT] + cut_val[TOKENS_CUT],
        "initial_val_loss": initial.get("eval_loss"),
        "evaluations": evals,
        "best_step": best["step"] if best else None,
        "best_val_perplexity": best["val_perplexity"] if best else None,
        "global_step": state.global_step,
        "resumed_from_step": resumed_from,
        "stopped_early": state.global_step < settings.max_steps,
        "train_seconds": round(seconds, 3),
        "steps_per_second": round(steps_run / seconds, 4) if seconds > 0 and steps_run > 0 else None,
        "train_loss": out.training_loss,
        "train_tokens": sum(len(r["input_ids"]) for r in train_rows),
    }
    (adapter / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    return record
