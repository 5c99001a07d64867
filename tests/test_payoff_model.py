"""The payoff model (eq. 21's scalar agreement model): trained with the LoRA
pipeline on Habermas-format ratings (real embedded model, a few steps),
scored on held-out groups against the ratings and a constant baseline."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agents.llm.fake_engine import FakeEngine
from mechanisms.budget import GenerationBudget
from mechanisms.finetuned_representatives import deliberations as dl
from mechanisms.finetuned_representatives import evaluation as ev
from mechanisms.finetuned_representatives.splits import split_examples
from mechanisms.finetuned_representatives.training import TrainSettings
from mechanisms.payoff_model import (
    PayoffItem,
    PayoffModel,
    PayoffModelError,
    evaluate_payoff_model,
    load_payoff_model,
    mean_absolute_error,
    split_ratings,
    train_payoff_model,
)
from mechanisms.value_equivalence import INTERVAL_ROLLOUTS, NULL_SET

TOPICS = ["tax sugar", "ban cars in city centres", "raise the pension age", "fund more libraries", "lower the voting age", "build more prisons", "subsidise rail fares", "close coal plants"]


def hm_ratings_frame(groups: int = 4) -> pd.DataFrame:
    """Habermas layout with agreement ratings aligned to candidates: a group
    that agrees with most statements, supporters of a policy a little more with
    "We should ..." (a model that learnt nothing sits far from 6)."""
    rows = []
    for g in range(groups):
        for q in range(2):
            topic = TOPICS[(2 * g + q) % len(TOPICS)]
            cands = [f"We should {topic}.", f"We should not {topic}."]
            for w in range(3):
                pro = (w + g) % 2 == 0
                opinion = f"I strongly support that we {topic}." if pro else f"I am firmly against the plan to {topic}."
                ratings = ["STRONGLY_AGREE", "AGREE"] if pro else ["SOMEWHAT_AGREE", "AGREE"]
                base = {"launch_id": f"L{g}", "round_id": f"r{q}", "worker_id": f"w{g}{w}", "question.text": f"Should we {topic}?",
                        "own_opinion.text": opinion, "candidates.text": cands, "ratings.agreement": ratings}
                rows.append({**base, "iteration_index": 0, "critique.text": None, "top_candidate.text": None})
                rows.append({**base, "iteration_index": 1, "critique.text": f"w{g}{w} critique of {topic}", "top_candidate.text": cands[0]})
    return pd.DataFrame(rows)


def test_payoff_model_trains_and_scores_heldout_groups(engine, tmp_path):
    data = dl.from_frame(hm_ratings_frame(), "hm.parquet")
    assert len(data.ratings) == 4 * 2 * 3 * 2 * 2  # groups x questions x workers x iterations x candidates
    split = split_examples(data.examples, 0.34, seed=0)
    train, held = split_ratings(data.ratings, split)
    assert {data.ratings[i].group for i in held} == set(split.validation_groups)
    assert not {data.ratings[i].participant for i in train} & {data.ratings[i].participant for i in held}
    settings = TrainSettings(subset="", max_steps=6, eval_steps=6, batch_size=4, learning_rate=2e-3, patience=10, max_length=192)
    record = train_payoff_model(data, split, tmp_path / "payoff", settings, progress=False)
    assert record["kind"] == "payoff" and record["global_step"] == 6 and record["train_ratings"] == len(train)

    tuned = load_payoff_model(tmp_path / "payoff")
    res = evaluate_payoff_model(tuned, data, held, record["train_mean_rating"])
    vanilla = evaluate_payoff_model(PayoffModel(engine), data, held, record["train_mean_rating"])
    print(f"held-out payoff MAE: trained {res.mae:.3f} (r = {res.pearson:.3f}), vanilla {vanilla.mae:.3f}, constant baseline {res.baseline_mae:.3f}")
    assert res.n == len(held) and all(1 <= s <= 7 for s in res.scores)
    assert res.mae == pytest.approx(mean_absolute_error(np.array(res.scores), np.array(res.ratings)))
    assert res.mae < vanilla.mae - 0.2  # training on the ratings moved the scores towards them
    # the same item gets the same score: a scalar per (question, statement, participant)
    item = PayoffItem("Should we tax sugar?", "We should tax sugar.", tuned.participant("I strongly support that we tax sugar."))
    assert tuned.score([item, item])[0] == pytest.approx(tuned.score([item])[0], abs=1e-9)

    # eq. 21 on human-format data (no persona to ask): payoffs from the trained payoff model
    # (the episodes are replayed by the fake engine: the real model replays them in
    # tests/test_representatives.py; here what matters is who scores them)
    fake = FakeEngine()
    samples = ev.payoff_discrepancy(
        fake, None, data, split.validation, [""], seed=0, max_episodes=1, budget=GenerationBudget(opinion=16, critique=16, statement=16),
        rollouts=2, judge=fake, payoff_model=tuned,
    )
    rows = ev.discrepancy_rows(samples, 0, "payoff model")
    assert {(r["subset"], r["mode"]) for r in rows} == {(s, m) for s in ("", NULL_SET) for m in ("one", "all")}
    assert {r["payoff_source"] for r in rows} == {"payoff model"}
    for r in rows:
        assert 0 <= r["gap"] <= 6 and r["ci_low"] <= r["gap"] + 1e-9 <= r["ci_high"] + 2e-9 and 0 <= r["win_rate"] <= 1
        assert r["signed_ci_low"] <= r["signed_gap"] <= r["signed_ci_high"] and abs(r["signed_gap"]) <= r["gap"] + 1e-9
        assert r["interval"] == INTERVAL_ROLLOUTS  # one held-out episode: no groups to resample, and the row says so
    assert next(r for r in rows if r["mode"] == "all" and r["subset"] == "")["n_substituted"] == 3


def test_bad_payoff_input_is_one_line(engine, tmp_path):
    model = PayoffModel(engine)
    with pytest.raises(PayoffModelError) as err:
        model.score([("Should we?", "We should.", "me")])
    assert "\n" not in str(err.value) and "item 0" in str(err.value) and "PayoffItem" in str(err.value)

    df = hm_ratings_frame(2)
    df.loc[0, "ratings.agreement"] = ["AGREE"]  # one rating for two candidates
    with pytest.raises(dl.DeliberationError) as err:
        dl.from_frame(df, "short.parquet")
    assert "\n" not in str(err.value) and "short.parquet" in str(err.value) and "ratings.agreement" in str(err.value)
    df = hm_ratings_frame(2)
    df.at[0, "ratings.agreement"] = ["VERY_AGREE", "AGREE"]
    with pytest.raises(dl.DeliberationError, match=r"bad.parquet: column ratings.agreement has 'VERY_AGREE'"):
        dl.from_frame(df, "bad.parquet")

    with pytest.raises(PayoffModelError, match="no trained payoff model"):
        load_payoff_model(tmp_path / "nothing")
    (tmp_path / "critique").mkdir()
    (tmp_path / "critique" / "adapter_config.json").write_text("{}")
    (tmp_path / "critique" / "training_record.json").write_text(json.dumps({"settings": {}}))
    with pytest.raises(PayoffModelError, match="field 'kind'.*expected 'payoff'"):
        load_payoff_model(tmp_path / "critique")


def test_persona_ratings_survive_the_hm_layout(tmp_path):
    """The personas' self-ratings in episode logs become HM ``ratings.agreement``
    aligned with the candidates, and read back as the same (rounded) ratings."""
    episodes = [{
        "group": f"g{g}", "question": {"id": f"q{g}", "question": f"Should we do {g}?", "affirming_statement": f"We should do {g}."},
        "participants": [f"p{g}a", f"p{g}b"], "opinions": ["Yes, do it.", "No, never."], "positions": [6.2, 1.4],
        "critiques": [["Good start.", "Too vague."]], "statements": [f"Draft {g}.", f"Revision {g}."],
        "mediations": [{"candidates": [f"Other {g}.", f"Draft {g}."]}, {"candidates": [f"Revision {g}.", f"Else {g}."]}],
        "payoff": {"agreement": [[5.6, 2.2], [6.4, 3.49]]},
    } for g in range(2)]
    from_log = dl.from_episodes(episodes)
    back = dl.load(dl.write_parquet(episodes, tmp_path / "d.parquet"))
    key = lambda r: (r.participant, r.question_id, r.statement, r.opinion)  # noqa: E731
    assert sorted((key(r), round(r.rating)) for r in from_log.ratings) == sorted((key(r), r.rating) for r in back.ratings)
    assert len(back.ratings) == 2 * 2 * 2 and {r.rating for r in back.ratings} == {6, 2, 3}
    df = pd.read_parquet(tmp_path / "d.parquet")
    row = df[(df["worker_id"] == "p0a") & (df["iteration_index"] == 0)].iloc[0]
    assert list(row["ratings.agreement"]) == [None, "AGREE"]  # the winner rated, the other candidate not


def test_represent_payoff_without_ratings_stops_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    parquet = tmp_path / "no_ratings.parquet"
    hm_ratings_frame(2).drop(columns=["ratings.agreement"]).to_parquet(parquet)
    cfg = tmp_path / "rep.yaml"
    cfg.write_text(yaml.safe_dump({"name": "rep", "store": str(tmp_path / "s.db"), "output": str(tmp_path / "runs"), "data": {"path": str(parquet)}}))
    r = subprocess.run([sys.executable, "run.py", "represent", "payoff", str(cfg)], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no_ratings.parquet: no agreement ratings" in r.stderr
