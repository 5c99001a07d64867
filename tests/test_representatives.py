"""Fine-tuned digital representatives on a deliberation set played by personas
(real embedded model, real LoRA training in a subprocess killed mid-way)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from killing import kill_on

from mechanisms.budget import GenerationBudget
from mechanisms.finetuned_representatives import deliberations as dl
from mechanisms.finetuned_representatives import evaluation as ev
from mechanisms.finetuned_representatives.splits import Split, split_examples
from mechanisms.finetuned_representatives.synthetic import generate, participant_cards

ROOT = Path(__file__).resolve().parent.parent
# Short texts keep the module's generation, training and payoff episodes quick on CPU.
BUDGET = GenerationBudget(opinion=24, critique=24, statement=24)
TRAIN = {"subset": "C", "max_items": 1, "max_steps": 8, "eval_steps": 4, "batch_size": 4, "learning_rate": 0.001, "patience": 10, "max_length": 320}


@pytest.fixture(scope="session")  # session: the vllm test runs last, after other modules
def deliberation(tmp_path_factory):
    """3 groups x 3 personas x 2 questions: 6 consensus episodes on the fake
    engine (the data only feed training and evaluation, which run on the real
    model; each persona's critiques open with its signature, a style to learn)."""
    from agents.llm.fake_engine import FakeEngine

    d = tmp_path_factory.mktemp("delib")
    episodes, cards = generate(FakeEngine(), groups=3, group_size=3, questions_per_group=2, seed=0, budget=BUDGET)
    path = dl.write_parquet(episodes, d / "deliberations.parquet", cards)
    return d, path, episodes, cards


def config(tmp: Path, parquet: Path, **extra) -> Path:
    cfg = {
        "name": "rep", "seed": 0, "store": str(tmp / "store.db"), "output": str(tmp / "runs"),
        "budget": BUDGET.model_dump(), "data": {"path": str(parquet)}, "split": {"validation": 0.34}, "train": dict(TRAIN),
        "eval": {"subsets": ["C"], "payoff_episodes": 1},
    }
    for k, v in extra.items():
        cfg[k] = v if not isinstance(v, dict) else {**cfg.get(k, {}), **v}
    path = tmp / "rep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def represent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "represent", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)


def keys(data: dl.Deliberations):
    return sorted((e.participant, e.question_id, e.opinion, e.draft, e.critique) for e in data.examples)


def test_parquet_and_episode_logs_give_the_same_examples_and_split_does_not_leak(deliberation, tmp_path):
    _, path, episodes, cards = deliberation
    data = dl.load(path)
    jsonl = tmp_path / "episodes.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in episodes))
    assert keys(data) == keys(dl.load(jsonl)) == keys(dl.from_episodes(episodes))
    assert len(data.examples) == 3 * 3 * 2
    # the known style: every critique opens with its persona's signature
    for ex in data.examples:
        job_state = cards[ex.participant].split("You are ")[1].split(".")[0]
        assert ex.critique.startswith(f"As {job_state},")
    split = split_examples(data.examples, 0.34, seed=0)
    train, val = [data.examples[i] for i in split.train], [data.examples[i] for i in split.validation]
    assert train and val
    assert not {e.participant for e in train} & {e.participant for e in val}
    assert not {e.question_id for e in train} & {e.question_id for e in val}
    assert split_examples(data.examples, 0.34, seed=0).to_json() == split.to_json()  # seeded
    # a representative's prompt never contains the critique it must produce
    for ex in val:
        prompt, _ = data.prompt(ex, "DOCP")
        assert ex.critique not in prompt and ex.opinion in prompt


def test_bad_deliberation_files_are_one_line(deliberation, tmp_path):
    _, path, _, _ = deliberation
    df = pd.read_parquet(path)
    broken = tmp_path / "broken.parquet"
    df.drop(columns=["critique.text", "worker_id"]).to_parquet(broken)
    r = represent("train", str(config(tmp_path, broken)))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "broken.parquet" in r.stderr and "worker_id" in r.stderr and "critique.text" in r.stderr

    one_group = tmp_path / "one_group.parquet"
    df[df["launch_id"] == "g0"].to_parquet(one_group)
    r = represent("train", str(config(tmp_path, one_group)))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "one_group.parquet" in r.stderr and "split" in r.stderr

    not_parquet = tmp_path / "junk.parquet"
    not_parquet.write_text("not parquet")
    r = represent("train", str(config(tmp_path, not_parquet)))
    assert r.returncode == 2 and "junk.parquet: not a readable parquet file" in r.stderr

    r = represent("train", str(config(tmp_path, path, split={"validation": 1.5})))
    assert r.returncode == 2 and "rep.yaml: split.validation" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="session")  # session: the vllm test runs last, after other modules
def trained(deliberation):
    """Train through the CLI, killed (SIGKILL) once the first checkpoint exists, then resumed."""
    d, path, _, _ = deliberation
    tmp = d / "train"
    tmp.mkdir()
    cfg = config(tmp, path)
    ckpts = tmp / "runs" / "rep" / "adapters" / "C" / "checkpoints"
    first = ckpts / f"checkpoint-{TRAIN['eval_steps']}" / "trainer_state.json"
    alive = kill_on([sys.executable, "run.py", "represent", "train", str(cfg)], ROOT, first.exists, timeout=1200)
    record_file = tmp / "runs" / "rep" / "adapters" / "C" / "training_record.json"
    killed_early = alive and not record_file.exists()
    r = represent("train", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp, cfg, json.loads(record_file.read_text()), killed_early


def test_training_killed_midway_resumes_from_its_checkpoint(trained):
    _, _, record, killed_early = trained
    assert killed_early, "the kill must land before training finished"
    assert record["resumed_from_step"] >= TRAIN["eval_steps"]
    assert record["global_step"] == TRAIN["max_steps"]
    steps = [e["step"] for e in record["evaluations"]]
    assert steps == sorted(set(steps)) and steps[-1] == TRAIN["max_steps"]  # no step evaluated twice
    assert record["best_step"] in steps
    assert record["best_val_perplexity"] == min(e["val_perplexity"] for e in record["evaluations"])
    assert record["settings"]["subset"] == "C" and record["truncated_examples"] == record["history_dropped_examples"] + record["tokens_cut_examples"]
    split = Split.from_json(record["split"])
    split.check()


def test_fine_tuning_lowers_heldout_critique_nll(trained, engine):
    from agents.llm.transformers_engine import TransformersEngine

    tmp, _, record, _ = trained
    data = dl.load(record["data"]["source"])
    split = Split.from_json(record["split"])
    tuned = TransformersEngine.embedded(lora=str(tmp / "runs" / "rep" / "adapters" / "C"))
    vanilla = ev.critique_nll(engine, data, split.validation, "C", engine.tok, 1)
    fine = ev.critique_nll(tuned, data, split.validation, "C", engine.tok, 1)
    print(f"held-out critique NLL/token: vanilla {vanilla.mean:.3f} (ppl {vanilla.perplexity:.2f}), fine-tuned {fine.mean:.3f} (ppl {fine.perplexity:.2f})")
    assert fine.mean < vanilla.mean - 0.01
    assert record["best_val_perplexity"] < math.exp(record["initial_val_loss"])  # early stopping kept a better checkpoint
    # the held-out participants are new to the adapter: the gain is in how
    # critiques are written, learnt from other participants
    assert not set(split.validation_participants) & set(split.train_participants)


def test_payoff_model_and_eval_from_the_cli(trained):
    """``represent payoff`` trains the payoff model on the data's agreement ratings
    (the personas' payoffs written in the HM layout); one ``represent eval`` with
    ``eval.payoff: model`` then scores the set's own adapter against the base
    model (critique NLL, autorater) and computes eq. 21 from the payoff model's
    scores (real model throughout; the self-rating path runs on the fake engine below)."""
    tmp, cfg, _, _ = trained
    small = ["--set", "payoff.train.max_steps=2", "--set", "payoff.train.eval_steps=2", "--set", "payoff.train.batch_size=4", "--set", "payoff.train.max_length=256"]
    r = represent("payoff", str(cfg), *small)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = tmp / "runs" / "rep" / "payoff_model"
    table = pd.read_csv(folder / "payoff_model.csv")
    assert table["ratings"].iloc[0] > 0 and 0 <= table["mae"].iloc[0] <= 6 and table["best_step"].iloc[0] == 2
    assert json.loads((folder / "training_record.json").read_text())["kind"] == "payoff"

    r = represent("eval", str(cfg), "--set", "eval.payoff=model")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp / "runs" / "rep" / "eval"
    nll = pd.read_csv(out / "critique_nll.csv")
    assert set(nll["model"]) == {"vanilla", "fine-tuned"} and set(nll["subset"]) == {"C"}
    assert (nll["sequence_loglik"] < 0).all() and (abs(nll["perplexity"] / nll["nll_per_token"].map(math.exp) - 1) < 1e-5).all()
    assert nll.loc[nll["model"] == "fine-tuned", "adapter"].iloc[0].endswith("adapters/C")  # the set's own representative
    v, f = (float(nll[nll["model"] == m]["nll_per_token"].iloc[0]) for m in ("vanilla", "fine-tuned"))
    assert f < v
    judge = pd.read_csv(out / "autorater.csv")
    assert judge["win_rate"].between(0, 1).all() and len(judge) == 2
    pay = pd.read_csv(out / "payoff_discrepancy.csv")
    assert set(pay["mode"]) == {"one", "all"} and set(pay["model"]) == {"vanilla", "fine-tuned"} and pay["gap"].between(0, 6).all()
    assert set(pay["payoff_source"]) == {"payoff model"}  # written by the code path that scored with the model
    assert ((pay["ci_low"] <= pay["gap"] + 1e-9) & (pay["gap"] <= pay["ci_high"] + 1e-9)).all()
    assert ((pay["signed_ci_low"] <= pay["signed_gap"] + 1e-9) & (pay["signed_gap"] <= pay["signed_ci_high"] + 1e-9)).all()
    assert "warning: the autorater's judge is the representatives' own model" in r.stdout
    assert (out / "representatives.png").stat().st_size > 1000
    text = (out / "summary.md").read_text()
    assert "critique nll" in text and "payoff discrepancy" in text and "eq. 22" in text and "scored by the payoff model" in text


def test_eval_with_self_ratings_reports_each_set_beside_the_null_row(deliberation, tmp_path, capsys):
    """``represent eval`` with the personas' self-ratings (the default), in process on
    the fake engine (base and served representative): the report's tables, intervals
    and the null row. The real model runs this command in the test above."""
    from simulation import represent_cli as cli
    from simulation.console import RunConsole

    _, path, _, _ = deliberation
    fake = {"kind": "fake", "model": "embedded", "endpoints": []}
    raw = yaml.safe_load(config(tmp_path, path).read_text())
    raw["engine"] = fake
    raw["eval"] = {**raw["eval"], "finetuned_engine": {**fake, "model": "rep-{set}"}}
    cfg = cli.RepresentConfig.model_validate(raw)
    assert cli.cmd_eval(cfg, RunConsole(live=False)) == 0
    out = cfg.folder / "eval"
    nll = pd.read_csv(out / "critique_nll.csv")
    assert set(nll["model"]) == {"vanilla", "fine-tuned"} and set(nll["adapter"].dropna()) == {"served rep-C"}
    assert (nll["sequence_loglik"] < 0).all()
    pay = pd.read_csv(out / "payoff_discrepancy.csv")
    assert set(pay["payoff_source"]) == {"self-rating"} and set(pay["subset"]) == {"C", "self (null)"}  # beside the null row
    assert set(pay["mode"]) == {"one", "all"} and set(pay["model"]) == {"vanilla", "fine-tuned"}
    assert ((pay["signed_ci_low"] <= pay["signed_gap"] + 1e-9) & (pay["signed_gap"] <= pay["signed_ci_high"] + 1e-9)).all()
    # R = 2 rollouts per episode: a bootstrap interval around each gap
    assert ((pay["ci_low"] <= pay["gap"] + 1e-9) & (pay["gap"] <= pay["ci_high"] + 1e-9)).all() and pay["gap"].between(0, 6).all()
    assert pay["win_rate"].between(0, 1).all()
    assert "warning: the autorater's judge is the representatives' own model" in capsys.readouterr().out
    text = (out / "summary.md").read_text()
    assert "payoff discrepancy" in text and "self-ratings" in text
def hm_frame(**extra) -> pd.DataFrame:
    """Two participants, two questions, in the Habermas Machine layout."""
    rows = []
    for w in ("w1", "w2"):
        for q in ("Should we tax sugar?", "Should we ban cars?"):
            base = {"launch_id": "L1", "worker_id": w, "question.text": q, "top_candidate.text": "Draft.", **extra.get(w, {})}
            rows.append({**base, "iteration_index": 0, "own_opinion.text": f"{w} on {q}", "critique.text": None})
            rows.append({**base, "iteration_index": 1, "own_opinion.text": f"{w} on {q}", "critique.text": f"{w} critique"})
    return pd.DataFrame(rows)


def test_hm_data_gives_D_only_from_its_demographic_columns():
    from mechanisms.representatives import ConditioningError

    data = dl.from_frame(hm_frame(), "hm.parquet")
    data.require(["", "O", "C", "OC"])  # opinions and critiques on other questions are there
    with pytest.raises(ConditioningError) as err:
        data.require(["OC", "DOCP"])
    msg = str(err.value)
    assert "\n" not in msg and "hm.parquet: conditioning set 'DOCP'" in msg and "demographics" in msg
    with_demo = dl.from_frame(hm_frame(w1={"demographics.Age (in decades)": "50 to 59"}, w2={"demographics.Age (in decades)": "20 to 29"}))
    with_demo.require(["D"])
    ex = next(e for e in with_demo.examples if e.participant == "w1")
    prompt, _ = with_demo.prompt(ex, "D")
    assert "You represent a participant with the following demographic profile. Age (in decades): 50 to 59." in prompt


def test_cards_are_seeded_and_distinct():
    a, b = participant_cards(6, seed=1), participant_cards(6, seed=1)
    assert a == b and len(set(a.values())) == 6


@pytest.mark.vllm
def test_vllm_serves_the_trained_adapter_like_the_inprocess_engine(trained, engine, vllm_server):
    """The test run's vLLM server takes the adapter at run time (--enable-lora,
    /v1/load_lora_adapter); critique log-likelihoods agree with transformers +
    adapter within a bound derived from float32 arithmetic (both sides float32:
    tests/tolerances.py), and differ from the base model's."""
    from tolerances import nll_per_token_bound

    from agents.llm.embedded import EMBEDDED_NAME
    from agents.llm.openai_engine import OpenAIEngine
    from agents.llm.transformers_engine import TransformersEngine

    tmp, _, record, _ = trained
    adapter = tmp / "runs" / "rep" / "adapters" / "C"
    data = dl.load(record["data"]["source"])
    split = Split.from_json(record["split"])
    name = f"rep-{tmp.name}"  # a name of its own: the server outlives this test
    vllm_server.load_lora(name, adapter)
    try:
        served = OpenAIEngine(name, [vllm_server.base_url], concurrency=4)
        base = OpenAIEngine(EMBEDDED_NAME, [vllm_server.base_url], concurrency=4)
        tuned = TransformersEngine.embedded(lora=str(adapter))
        idx = split.validation[:4]
        a = ev.critique_nll(served, data, idx, "C", engine.tok, 1)
        b = ev.critique_nll(tuned, data, idx, "C", engine.tok, 1)
        c = ev.critique_nll(base, data, idx, "C", engine.tok, 1)
    finally:
        vllm_server.unload_lora(name)
    diff = [abs(x - y) for x, y in zip(a.per_token, b.per_token)]
    print(f"vLLM adapter vs in-process adapter NLL/token: max |diff| {max(diff):.4f}; base {c.mean:.3f} vs adapter {a.mean:.3f}")
    bounds = [nll_per_token_bound(data.examples[i].critique, n) for i, n in zip(idx, a.tokens)]
    assert all(d <= bound for d, bound in zip(diff, bounds)), (diff, bounds)
    # the server really applies the adapter: its scores sit closer to the
    # in-process adapter's than the base model's do
    base_gap = [abs(x - y) for x, y in zip(c.per_token, b.per_token)]
    assert sum(diff) / len(diff) < sum(base_gap) / len(base_gap)
