"""The consensus scenario's representatives evaluation on the fake engine (no
model): who ranks, the mediator's retries and fallbacks, and the pooled eq. 21 /
eq. 22 table with its null row."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mechanisms.mediators import HabermasMediator
from mechanisms.value_equivalence import INTERVAL_GROUPS, NULL_SET

ROOT = Path(__file__).resolve().parent.parent
MARK = "BACKSTORY-MARK"


def _run(tmp_path: Path, options: str, *extra: str):
    from scenarios.config import load_config
    from simulation.runner import run

    tmp_path.mkdir(parents=True, exist_ok=True)
    bank = tmp_path / "personas.jsonl"
    bank.write_text("".join(json.dumps({"id": f"p{i}", "conditioning": f"I am persona {i}. {MARK}-{i}."}) + "\n" for i in range(6)))
    cfg = load_config(ROOT / "scenarios" / "consensus.yaml", [
        "engine={kind: fake}", "population.size=6", "population.conditions=[imported]", f"population.import_path={bank}",
        f"options={{groups: 3, group_size: 2, rounds: 1, mediator: habermas, candidates: 2, history: 1, rollouts: 2, "
        f"budget: {{opinion: 6, critique: 6, statement: 8}}, {options}}}",
        f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}", *extra,
    ])
    return cfg, run(cfg)


def _rank_prompts(cfg, result) -> list[str]:
    from core.store import Store

    logged = [e["payload"] for e in Store(cfg.store).events(result.run_id) if e["kind"] == "utterance"]
    episodes = [json.loads(line) for line in (result.output_dir / "episodes.jsonl").read_text().splitlines()]
    logged += [r for ep in episodes for r in ep["log"]]
    return [r["prompt"] for r in logged if r.get("act") == "rank" and r.get("prompt")]


@pytest.mark.fast
def test_the_ranker_sees_only_what_participants_said_when_representatives_are_evaluated(tmp_path):
    cfg, res = _run(tmp_path, "ranking: cot, representatives: [OC]")
    prompts = _rank_prompts(cfg, res)
    assert len(prompts) > 50 and not any(MARK in p for p in prompts)  # history, main and every substituted episode
    assert all("articipant's opinion" in p for p in prompts)  # CoT or its rating fallback, third person
    summary = (res.output_dir / "summary.md").read_text()
    assert "ranker = words" in summary and "no backstory or record in the prompt" in summary
    table = pd.read_csv(res.output_dir / "representativity.csv")
    assert set(table["ranker"]) == {"words"}

    # The persona ranker stays available by name, and says so.
    cfg2, res2 = _run(tmp_path / "persona", "ranking: rating, representatives: [OC], ranker: persona, null_row: false")
    prompts = _rank_prompts(cfg2, res2)
    assert prompts and all(MARK in p for p in prompts)
    assert "ranker = persona" in (res2.output_dir / "summary.md").read_text()


@pytest.mark.fast
def test_pooled_table_has_signed_and_absolute_gaps_over_groups_beside_the_null_row(tmp_path):
    _, res = _run(tmp_path, "ranking: rating, representatives: ['', OC]")
    table = pd.read_csv(res.output_dir / "representativity.csv")
    assert [(r.subset, r.mode) for r in table.itertuples()] == [(s, m) for s in ("none", "OC", NULL_SET) for m in ("one", "all")]
    assert (table["clusters"] == 3).all() and (table["interval"] == INTERVAL_GROUPS).all()
    assert (table["units"] == [6, 6, 6, 6, 6, 6]).all()
    for r in table.itertuples():
        assert r.signed_ci_low <= r.signed_gap <= r.signed_ci_high and r.ci_low <= r.payoff_gap <= r.ci_high
        assert abs(r.signed_gap) <= r.payoff_gap + 1e-9
        null = table[(table["subset"] == NULL_SET) & (table["mode"] == r.mode)].iloc[0]
        assert r.null_gap == pytest.approx(null.payoff_gap, abs=1e-6)
        if r.subset != NULL_SET:
            assert r.excess_over_null == pytest.approx(r.payoff_gap - null.payoff_gap, abs=1e-5)
    # The pooled gap is the mean over every group's substituted participants.
    by_group = pd.read_csv(res.output_dir / "representativity_by_group.csv")
    for (subset, mode), rows in by_group.groupby(["subset", "mode"]):
        pooled = table[(table["subset"] == subset) & (table["mode"] == mode)].iloc[0]
        weights = rows["n_substituted"]
        assert pooled.payoff_gap == pytest.approx((rows["payoff_gap"] * weights).sum() / weights.sum(), abs=1e-5)
        assert pooled.signed_gap == pytest.approx((rows["signed_gap"] * weights).sum() / weights.sum(), abs=1e-5)


@pytest.mark.fast
def test_cot_rankings_are_retried_as_options_say_and_fallbacks_are_counted(tmp_path):
    """The fake engine never writes a parseable ranking: every CoT ranking is
    asked 1 + retries times, then replaced by ratings, and the report counts it."""
    cfg, res = _run(tmp_path, "ranking: cot, retries: 2, representatives: []")
    episodes = [json.loads(line) for line in (res.output_dir / "episodes.jsonl").read_text().splitlines()]
    cot = [r for ep in episodes for r in ep["log"] if r.get("act") == "rank" and r.get("kind") == "generate"]
    assert cot and max(r.get("attempt", 0) for r in cot) == 2
    fallbacks = sum(len(m.get("ranking_fallbacks", {})) for ep in episodes for m in ep["mediations"])
    table = pd.read_csv(res.output_dir / "mediation.csv").set_index("phase")
    assert table.loc[["history", "main"], "ranking_fallbacks"].sum() == fallbacks == 3 * 2 * 2 * 2  # groups x episodes x mediations x slots
    assert (table["cot_retries"] == 2).all() and (table["retries"] == 2).all()


@pytest.mark.fast
def test_the_representatives_preset_runs_the_habermas_machine_mediator():
    """The Habermas Machine's public code (machine.py, cot_ranking_model.py):
    16 candidates, num_retries_on_error 8 for statements and rankings, a CoT
    ranking model that sees question, opinion, previous winner and critique,
    Schulze. The preset must build exactly that mediator."""
    from scenarios.consensus import ConsensusOptions, build_mediator

    assert HabermasMediator.HM_SETTINGS == {"num_candidates": 16, "ranking": "cot", "retries": 8, "cot_retries": 8, "ranker": "words", "method": "schulze"}
    preset = yaml.safe_load((ROOT / "scenarios" / "paper" / "representatives.yaml").read_text())
    med = build_mediator(ConsensusOptions.model_validate(preset["options"]))
    described = med.describe()
    assert {k: described[k] for k in HabermasMediator.HM_SETTINGS} == HabermasMediator.HM_SETTINGS
    assert described == HabermasMediator.habermas_machine(max_tokens=med.max_tokens).describe()


@pytest.mark.fast
def test_fine_tuned_representatives_play_beside_prompted_ones(tmp_path):
    """options.finetuned: a set whose representatives speak through their own
    engine (a served or in-process adapter; here a second fake engine)."""
    from core.store import Store
    from scenarios.config import load_config
    from simulation.runner import build_model

    tmp_path.mkdir(parents=True, exist_ok=True)
    bank = tmp_path / "personas.jsonl"
    bank.write_text("".join(json.dumps({"id": f"p{i}", "conditioning": f"I am persona {i}."}) + "\n" for i in range(4)))
    cfg = load_config(ROOT / "scenarios" / "consensus.yaml", [
        "engine={kind: fake}", "population.size=4", "population.conditions=[imported]", f"population.import_path={bank}",
        "options={groups: 2, group_size: 2, rounds: 1, mediator: llm, history: 1, rollouts: 2, representatives: [C], "
        "finetuned: {C: {kind: fake, model: adapter-C}}, budget: {opinion: 6, critique: 6, statement: 8}}",
        f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}",
    ])
    model = build_model(cfg, Store(cfg.store), "ft-run")
    while model.running:
        model.step()
    assert model.representatives.sets == ["C", "C (fine-tuned)", NULL_SET]
    assert model.ft_engines["C"].misses > 0  # the fine-tuned set's critiques came from its own engine
    pooled, by_group = model.representatives.tables("n/a")
    assert list(pooled["subset"]) == ["C", "C", "C (fine-tuned)", "C (fine-tuned)", NULL_SET, NULL_SET]
    subs = [s for s in model.representatives.substitutions[0] if s.subset == "C (fine-tuned)"]
    assert subs and all(p.id.startswith("ft:") and p.engine is model.ft_engines["C"] for s in subs for p in s.stand_ins.values())
