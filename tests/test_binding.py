"""Higher-order binding on the real embedded model (tiny budgets): interview
length budgets with the whole transcript in context, resume after kill -9 at
answer granularity, the consistency critic over whole transcripts, and the
Anthology (DP) and Generative Agent conditions in a scenario report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from killing import count, kill_when

from agents import bank as banks
from agents import critic
from agents.backstories import INTERVIEW_QUESTIONS, GenerationParams, answer_budgets
from agents.llm.cache import CachedEngine
from core.store import Store
from scenarios.config import load_config
from simulation.runner import run

ROOT = Path(__file__).resolve().parent.parent


def cached(store, engine):
    return CachedEngine(store, engine.fingerprint(), lambda: engine)


def stored_requests(db: Path, op: str) -> list[dict]:
    return Store(db, readonly=True).requests(op)  # long texts are stored once: the store expands them


@pytest.mark.fast
def test_default_budgets_add_up_to_the_talks_interview_length():
    budgets = GenerationParams().budgets()
    assert len(budgets) == 10 and budgets[0] == max(budgets)  # the life story gets the most room
    words = sum(budgets) / 1.33
    assert 2400 <= words <= 2600
    assert answer_budgets(100, 3, (7, 5)) == [7, 5, 5]


def test_interview_follows_budgets_with_the_whole_transcript_in_context(store, engine):
    eng = cached(store, engine)
    params = GenerationParams(interview_questions=3, answer_tokens=(20, 8, 8), critic=False, consistency_rounds=0)
    people = banks.generate(eng, store, "intv", "interview", 2, seed=4, params=params)
    prompts = {r["prompt"]: r["max_tokens"] for r in stored_requests(store.path, "generate")}
    hit_budget = 0
    for p in people:
        assert p.prompts["answer_tokens"] == [20, 8, 8]
        lengths = p.prompts["answer_lengths"]
        assert len(lengths) == 3 and all(0 < n <= b for n, b in zip(lengths, [20, 8, 8]))
        hit_budget += sum(n == b for n, b in zip(lengths, [20, 8, 8]))
        # Answer k was generated after every earlier question and answer, with its own budget.
        text = p.conditioning
        assert text.count("Question: ") == 3
        for k, question in enumerate(INTERVIEW_QUESTIONS[:3]):
            ask = f"Question: {question}\nAnswer:"
            head = text[: text.index(ask)]
            assert head.count("Question: ") == k  # every earlier question and answer, verbatim
            assert prompts[head + ask] == [20, 8, 8][k]
    assert hit_budget > 0, "no answer used its whole budget: budgets are not what limits the length"


def test_killed_interview_resumes_without_regenerating_finished_answers(tmp_path, engine):
    db = tmp_path / "kill.db"
    cmd = [sys.executable, str(ROOT / "run.py"), "personas", "generate", "--bank", "k", "--method", "interview", "-n", "2",
           "--chunk", "2", "--interview-questions", "3", "--answer-tokens", "10", "6", "--no-critic",
           "--consistency-rounds", "0", "--seed", "5", "--store", str(db)]
    sql = "select count(*) from responses where op = 'generate'"
    done = kill_when(cmd, ROOT, db, sql, 2)
    assert 2 <= done < 6, "the kill must land between two answers (of six)"
    assert count(db, "select count(*) from personas") == 0  # killed mid-interview: no persona written yet
    before = {json.dumps(r, sort_keys=True) for r in stored_requests(db, "generate")}

    store = Store(db)
    eng = cached(store, engine)
    params = GenerationParams(interview_questions=3, answer_tokens=(10, 6), critic=False, consistency_rounds=0)
    people = banks.generate(eng, store, "k", "interview", 2, seed=5, chunk=2, params=params)
    assert len(people) == 2
    clean = Store(tmp_path / "clean.db")
    banks.generate(cached(clean, engine), clean, "k", "interview", 2, seed=5, chunk=2, params=params)
    assert [p.conditioning for p in clean.personas("k")] == [p.conditioning for p in store.personas("k")]
    total = len(stored_requests(clean.path, "generate"))  # 6, more if an empty answer was resampled
    # Only the unfinished answers went to the model; the finished ones were read back.
    assert eng.misses == total - done and eng.hits == done
    after = {json.dumps(r, sort_keys=True) for r in stored_requests(db, "generate")}
    assert before < after and len(after) == total


QUESTIONS = [
    "To start, tell me the story of your life.",
    "Tell me about anyone else in your life who is important to you.",
    "How would you describe your political views?",
]
PLANTED = [
    critic.Turn(QUESTIONS[0], "I am 72 years old. I retired in 2015 after forty years as a nurse in Dayton, Ohio."),
    critic.Turn(QUESTIONS[1], "My husband Tom and I have three grandchildren who visit every Sunday."),
    critic.Turn(QUESTIONS[2], "I am 19 years old, I have never had a job and I have never been married."),
]
CLEAN = PLANTED[:2] + [critic.Turn(QUESTIONS[2], "I vote for Democrats, mostly because of health care; as a nurse I saw patients without insurance.")]


def test_dp_and_generative_agent_conditions_in_a_scenario_report(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "runs"
    cfg = load_config(
        ROOT / "scenarios" / "partisan_hostility.yaml",
        [
            "population.conditions=[anthology_dp, generative_agent, qa]",
            "population.size=2",
            "population.backstories.max_tokens=10",
            "population.backstories.interview_questions=2",
            "population.backstories.answer_tokens=[8]",
            "population.generative_agent.reflection_tokens=8",
            "population.generative_agent.reasoning_tokens=6",
            "population.generative_agent.experts=[psychologist]",
            "human.sample=4",
            "questionnaire.questions=[moral_democrat, moral_republican]",
            "analysis.position_bias_personas=0",
            f"store={db}",
            f"output={out}",
        ],
    )
    result = run(cfg)
    binding = pd.read_csv(result.output_dir / "critic_and_spread.csv")
    assert list(binding["condition"]) == ["anthology_dp", "generative_agent (greedy)", "qa"]
    assert binding["answer_variance"].between(0, 0.25).all() and binding["extreme_share"].between(0, 1).all()
    rows = binding.set_index("condition")
    # The Generative Agent's backstories are interviews, each read by the consistency critic.
    assert 0 <= rows.loc["generative_agent (greedy)", "critic_flagged"] <= 1
    assert pd.isna(rows.loc["qa", "critic_flagged"])
    summary = (result.output_dir / "summary.md").read_text()
    assert "anthology_dp" in summary and "generative_agent (greedy)" in summary and "critic_flagged" in summary

    store = Store(db)
    dp_bank = next(b for b in store.banks() if b.startswith("anthology_dp-"))
    for p in store.personas(dp_bank):  # one backstory per respondent, written from their demographics
        assert p.profile and p.conditioning.startswith("Question: Tell me about yourself.")
        assert "I am " in p.conditioning.split("Answer:", 1)[1][:40]
    ga_bank = next(b for b in store.banks() if b.startswith("ga-"))
    for p in store.personas(ga_bank):
        assert "Expert reflections on the person above:\nPsychologist: " in p.conditioning
        assert p.prompts["source"].startswith("interview-")
    reasoning = [r for r in stored_requests(db, "generate") if r["prompt"].endswith("Reasoning:")]
    # two items, four agents (identical requests -- one persona matched twice -- are stored once)
    assert 2 <= len(reasoning) <= 2 * 4
    read_after = [r for r in stored_requests(db, "option_probs") if "\nReasoning: " in r["suffix"]]
    assert len(read_after) == len(reasoning)  # each distribution is read after its reasoning


def test_consistency_critic_reads_whole_transcripts_and_stores_revisions(store, engine):
    """Mechanics on hand-made transcripts: the real 135M critic puts P(yes) just
    above 0.5 on every answer (it cannot tell the planted contradiction from
    the clean transcript); the flagged path runs on its real verdicts, the
    unflagged one with a threshold above them."""
    eng = cached(store, engine)
    planted, clean = list(PLANTED), list(CLEAN)
    settings = critic.CriticSettings(rounds=1, threshold=0.5, max_flags=1, explanation_tokens=12)
    [review] = critic.revise(eng, [planted], [10, 10, 10], settings, [7])
    sent = stored_requests(store.path, "option_probs")
    first = [r for r in sent if r["prefix"] == critic.render_transcript(PLANTED) and r["suffix"].startswith("Reviewer's question: Does")]
    assert len(first) == 2 * 3  # every answer asked about, both option orders, whole transcript as prefix
    assert all(t.answer in first[0]["prefix"] for t in PLANTED)
    which = [r for r in sent if r["prefix"] == critic.render_transcript(PLANTED) and r["suffix"].startswith("Reviewer's question: Which")]
    assert len(which) == len(review.verdicts[0].inconsistencies) == settings.max_flags  # one per flagged answer

    verdict = review.verdicts[0]
    assert len(verdict.p_yes) == 3 and all(0 <= p <= 1 for p in verdict.p_yes)
    assert review.flagged and verdict.inconsistencies
    for inc in verdict.inconsistencies:
        assert inc.answer != inc.contradicts and inc.p_yes > settings.threshold
    rewritten = [a for a, _ in critic.to_rewrite(verdict)]
    assert [r.answer for r in review.revisions] == rewritten
    for r in review.revisions:  # stored as a revision, the transcript now holds the new answer
        assert r.before == PLANTED[r.answer].answer and planted[r.answer].answer == r.after
    revise_prompts = [q["prompt"] for q in stored_requests(store.path, "generate") if "Interviewer's note" in q["prompt"]]
    assert len(revise_prompts) == len(rewritten)
    assert all(p.startswith(critic.interview_text(PLANTED[:1])) for p in revise_prompts if rewritten)
    # The second reading is of the revised transcript.
    assert len(review.verdicts) == (2 if review.revisions else 1)
    if len(review.verdicts) == 2:
        assert any(r["prefix"] == critic.render_transcript(planted) for r in stored_requests(store.path, "option_probs"))
    record = review.to_json()
    assert record["check"] == "consistency" and record["flagged"] is True and len(record["revisions"]) == len(rewritten)
    json.dumps(record)  # stored with the persona as JSON

    strict = critic.CriticSettings(rounds=1, threshold=0.99, max_flags=1, explanation_tokens=12)
    [quiet] = critic.revise(eng, [clean], [10, 10, 10], strict, [8])
    assert not quiet.flagged and not quiet.fixed and quiet.revisions == [] and clean == CLEAN
    assert len(quiet.verdicts) == 1 and len(quiet.verdicts[0].p_yes) == 3


def test_ablation_yamls_sweep_valid_factors_and_plot_them(tmp_path):
    """Every ablation point is a valid configuration, and the factor plot is
    drawn from a sweep table (the laptop-size runs themselves: run.py)."""
    from scenarios.config import apply_override, validate_config
    from simulation.sweep import plot_factor

    factors = {}
    for name in ("quantity", "depth", "consistency"):
        path = ROOT / "scenarios" / "ablations" / f"{name}.yaml"
        cfg = load_config(path)
        [(key, values)] = cfg.sweep.items()
        factors[name] = key
        for v in values:
            data = cfg.model_dump(mode="json")
            data.pop("sweep")
            apply_override(data, key.split("."), v, str(path))
            point = validate_config(data, str(path))
            assert point.population.conditions == ["interview"]
    assert factors == {"quantity": "population.per_human", "depth": "population.backstories.interview_words",
                       "consistency": "population.backstories.consistency_rounds"}
    table = pd.DataFrame({
        "run_id": ["a", "a", "b", "b"], "population.per_human": [1, 1, 2, 2], "condition": ["interview (greedy)"] * 4,
        "party": ["Democrat", "Republican"] * 2, "persona_delta": [0.1, 0.2, 0.3, 0.4],
        "persona_ci_low": [0.0, 0.1, 0.2, 0.3], "persona_ci_high": [0.2, 0.3, 0.4, 0.5], "wd": [0.3, 0.2, 0.2, 0.1],
    })
    png = plot_factor(table, {"population.per_human": [1, 2]}, tmp_path)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_factor(table, {"seed": [0, 1]}, tmp_path) is None  # no factor besides repetitions: no plot
