"""One representative per conditioning set, truncation that keeps the
conditioning, eq. 19's two forms and P from position ratings (no model: the
trainer is stubbed, the tokenizer splits words)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mechanisms.finetuned_representatives import deliberations as dl
from mechanisms.finetuned_representatives.evaluation import NLL
from mechanisms.finetuned_representatives.training import FITS, HISTORY_DROPPED, RECORD, TOKENS_CUT, tokenize_example
from mechanisms.representatives import ParticipantRecord
from simulation import represent_cli as cli
from simulation.console import RunConsole


def hm_frame() -> pd.DataFrame:
    """Three groups of two, two questions each (a leak-free split exists)."""
    rows = []
    for k, g in enumerate(("L1", "L2", "L3")):
        for w, q in [(f"w{2 * k + a}", q) for a in (1, 2) for q in (f"Should we do {g}a?", f"Should we do {g}b?")]:
            if k == 0 and q.endswith("a?"):
                q = "Should we tax sugar?"
            base = {"launch_id": g, "worker_id": w, "question.text": q, "top_candidate.text": "Draft."}
            rows.append({**base, "iteration_index": 0, "own_opinion.text": f"{w} on {q}", "critique.text": None})
            rows.append({**base, "iteration_index": 1, "own_opinion.text": f"{w} on {q}", "critique.text": f"{w} critique of {q}"})
    return pd.DataFrame(rows)


def _cfg(tmp_path: Path, **train) -> cli.RepresentConfig:
    parquet = tmp_path / "hm.parquet"
    hm_frame().to_parquet(parquet)
    return cli.RepresentConfig.model_validate({
        "name": "rep", "store": str(tmp_path / "s.db"), "output": str(tmp_path / "runs"), "data": {"path": str(parquet)},
        "split": {"validation": 0.5}, "train": {"max_steps": 2, "eval_steps": 2, **train}, "eval": {"subsets": ["", "OC"]},
    })


@pytest.mark.fast
def test_train_fits_one_adapter_per_set_each_with_its_record_and_skips_finished_ones(tmp_path, monkeypatch):
    calls = []

    def fake_train(data, split, adapter, settings, progress=True):
        calls.append((settings.subset, Path(adapter)))
        Path(adapter).mkdir(parents=True, exist_ok=True)
        (Path(adapter) / "adapter_config.json").write_text("{}")
        rec = {"settings": settings.model_dump(), "data": {"fingerprint": data.fingerprint()}, "best_step": 2, "initial_val_loss": 1.0,
               "best_val_perplexity": 2.0, "steps_per_second": 1.0, "resumed_from_step": 0, "truncated_examples": 0}
        (Path(adapter) / RECORD).write_text(json.dumps(rec))
        return rec

    monkeypatch.setattr(cli, "train", fake_train)
    cfg = _cfg(tmp_path)
    assert cli.cmd_train(cfg, RunConsole(live=False)) == 0
    assert calls == [("", cfg.folder / "adapters" / "none"), ("OC", cfg.folder / "adapters" / "OC")]
    for name in ("none", "OC"):
        record = json.loads((cfg.folder / "adapters" / name / RECORD).read_text())
        assert record["settings"]["subset"] == ("" if name == "none" else "OC")
    calls.clear()
    assert cli.cmd_train(cfg, RunConsole(live=False)) == 0 and calls == []  # finished sets are not trained again
    assert cli.cmd_train(_cfg(tmp_path, max_steps=4), RunConsole(live=False)) == 0 and len(calls) == 2  # new settings: again

    # eval scores each set with its own representative
    ft, about = cli.finetuned_config(cfg, "OC")
    assert ft.lora == str(cfg.folder / "adapters" / "OC") and about == ft.lora
    served = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"finetuned_engine": cfg.engine.model_copy(update={"kind": "openai", "model": "rep-{set}"})})})
    assert cli.finetuned_config(served, "")[0].model == "rep-none" and cli.finetuned_config(served, "OC")[0].model == "rep-OC"
    one = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"finetuned_engine": cfg.engine.model_copy(update={"kind": "openai", "model": "rep"})})})
    assert "one adapter for every set" in cli.finetuned_config(one, "OC")[1]


@pytest.mark.fast
def test_eval_stops_in_one_line_when_a_set_has_no_adapter(tmp_path):
    cfg = _cfg(tmp_path)
    (cfg.folder / "adapters" / "none").mkdir(parents=True)
    (cfg.folder / "adapters" / "none" / "adapter_config.json").write_text("{}")
    with pytest.raises(dl.DeliberationError) as err:
        cli.cmd_eval(cfg, RunConsole(live=False))
    assert "\n" not in str(err.value) and "no trained adapter for set 'OC'" in str(err.value)


class WordTokenizer:
    eos_token = "<eos>"

    def __call__(self, text, add_special_tokens=False):
        class Out:
            input_ids = [hash(w) % 1000 for w in text.split()]
        return Out()


@pytest.mark.fast
def test_too_long_prompts_lose_their_oldest_history_first():
    rec = ParticipantRecord("w", {}, [(f"Past question {k}?", f"opinion {k} " * 5) for k in range(3)], [], [])
    data = dl.Deliberations([], {"w": rec}, "x")
    ex = dl.CritiqueExample("w", "e", "g", "q", "Now?", "my opinion", "the draft", "my critique")
    variants = data.prompt_variants(ex, "O", max_items=3)
    assert len(variants) == 4 and all(len(a) > len(b) for a, b in zip(variants, variants[1:]))
    assert "Past question 0?" in variants[0] and "Past question 0?" not in variants[1] and "Past question 2?" in variants[2]
    assert all("my opinion" in v and "the draft" in v and "Now?" in v for v in variants)  # the base information stays
    tok = WordTokenizer()
    sizes = [len(v.split()) for v in variants]
    target = len("my critique<eos>".split())
    row, status = tokenize_example(tok, variants, "my critique", sizes[0] + target)
    assert status == FITS and len(row["input_ids"]) == sizes[0] + target
    row, status = tokenize_example(tok, variants, "my critique", sizes[1] + target)
    assert status == HISTORY_DROPPED and row["labels"].count(-100) == sizes[1]
    row, status = tokenize_example(tok, variants, "my critique", sizes[3] + target - 2)
    assert status == TOKENS_CUT and len(row["input_ids"]) == sizes[3] + target - 2 and row["labels"][-target:] != [-100] * target


@pytest.mark.fast
def test_critique_nll_reports_sequence_loglik_and_one_perplexity():
    nll = NLL(per_token=[1.0, 2.0], tokens=[4, 2], loglik=[-4.0, -4.0])
    out = nll.to_json()
    assert out["sequence_loglik"] == -4.0 and out["nll_per_token"] == 1.5 and out["perplexity"] == pytest.approx(2.718281828 ** 1.5)


@pytest.mark.fast
def test_P_comes_from_the_position_statement_ratings(tmp_path):
    from mechanisms.representatives import ConditioningError

    data = dl.from_frame(hm_frame(), "hm.parquet")
    with pytest.raises(ConditioningError):
        data.require(["P"])  # the comparisons file holds no positions
    ratings = pd.DataFrame([
        {"worker_id": "w1", "question.text": "Should we tax sugar?", "question.affirming_statement": "We should tax sugar.",
         "question.negating_statement": "We should not tax sugar.", "candidates.text": ["We should tax sugar.", "We should not tax sugar."],
         "ratings.agreement": ["AGREE", "DISAGREE"]},
        {"worker_id": "w2", "question.text": "Should we tax sugar?", "question.affirming_statement": "We should tax sugar.",
         "question.negating_statement": "We should not tax sugar.", "candidates.text": ["We should not tax sugar."], "ratings.agreement": ["STRONGLY_AGREE"]},
    ])
    assert dl.position_ratings(ratings, "r") == {("w1", "Should we tax sugar?"): 6.0, ("w2", "Should we tax sugar?"): 1.0}
    path = tmp_path / dl.POSITIONS_FILE
    ratings.to_parquet(path)
    hm_frame().to_parquet(tmp_path / "hm.parquet")
    data = dl.load(tmp_path / "hm.parquet", path)
    data.require(["P"])
    assert data.records["w1"].positions == [("Should we tax sugar?", "agree")]
    assert data.records["w2"].positions == [("Should we tax sugar?", "strongly disagree")]
    with pytest.raises(dl.DeliberationError, match="missing column"):
        dl.position_ratings(ratings.drop(columns=["question.negating_statement"]), "r")
