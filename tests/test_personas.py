"""Persona banks on the real embedded model: generation, critic, survey,
baselines, import/export, seeds and resume after kill -9."""
from __future__ import annotations

import sys
from pathlib import Path

import mesa
import pytest
from killing import count, kill_when

from agents import bank as banks
from agents import baselines
from agents import demographics as demo
from agents.backstories import CRITIC_CHECKS, GenerationParams
from agents.llm.cache import CachedEngine
from agents.persona import PersonaAgent
from agents.questions import Question
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
TINY = GenerationParams(max_tokens=16, temperature=1.0)
PROFILE = {"age": "30-49", "gender": "Female", "party": "Republican", "region": "South"}


def cached(store, engine):
    return CachedEngine(store, engine.fingerprint(), lambda: engine)


def test_anthology_bank_with_citizenship_filter(store, engine):
    eng = cached(store, engine)
    params = GenerationParams(max_tokens=16, citizenship_filter=True, max_attempts=2)
    people = banks.generate(eng, store, "anth", "anthology", 3, seed=3, params=params)
    rows = store.personas("anth")
    assert len(rows) == 3  # kept or rejected, every index is recorded
    for p in people:
        assert p.conditioning.startswith("Question: Tell me about yourself.")
        assert p.method == "anthology" and p.seed > 0
        assert all(c["check"] == "citizenship" for c in p.critic)  # filter verdicts kept
        assert p.critic[-1]["kept"] is True
        assert p.params["citizenship_filter"] is True and p.model
    for r in rows:
        if r.method == "rejected":
            assert len(r.critic) == 2 and not any(c["kept"] for c in r.critic)


def test_interview_bank_records_critic_verdicts(store, engine):
    eng = cached(store, engine)
    params = GenerationParams(answer_tokens=(16,), interview_questions=2, max_attempts=2, critic=True, consistency_rounds=0)
    people = banks.generate(eng, store, "intv", "interview", 2, seed=1, params=params)
    assert len(people) == 2
    for p in people:
        text = p.conditioning
        assert text.count("Question: ") == 2 and "tell me the story of your life" in text
        assert p.critic, "critic verdicts must be stored"
        for verdict in p.critic:
            assert set(verdict["p_yes"]) == set(CRITIC_CHECKS)
            assert all(0 <= v <= 1 for v in verdict["p_yes"].values())
            assert verdict["flagged"] == sorted(c for c, v in verdict["p_yes"].items() if v > 0.5)
        # Flagged answers were resampled, up to max_attempts per question.
        per_question = {}
        for v in p.critic:
            per_question.setdefault(v["question"], []).append(v)
        for attempts in per_question.values():
            assert len(attempts) <= 2
            assert all(a["flagged"] for a in attempts[:-1])


@pytest.mark.fast
def test_baselines_render_expected_text():
    assert baselines.render("qa", PROFILE) == (
        "Question: What is your age?\nAnswer: 30-49\n\n"
        "Question: What is your gender?\nAnswer: Female\n\n"
        "Question: In which region of the country do you live?\nAnswer: South\n\n"
        "Question: In politics today, do you consider yourself a Republican, Democrat, or Independent?\nAnswer: Republican\n\n"
    )
    assert baselines.render("bio", PROFILE) == (
        "I am 30-49 years old. My gender is Female. I live in the South. In politics today, I consider myself a Republican.\n\n"
    )
    assert baselines.render("portray", {"age": "65+", "party": "Democrat"}).endswith(
        "You are 65 years old or older. In politics today, you consider yourself a Democrat.\n\n"
    )
    with pytest.raises(ValueError, match="unknown baseline method"):
        baselines.render("haiku", PROFILE)


def test_rule_based_banks_and_demographics_sum_to_one(store, engine):
    eng = cached(store, engine)
    people = banks.from_profiles(store, "bio-bank", "bio", [PROFILE, {"party": "Democrat"}])
    assert [p.profile for p in people] == [PROFILE, {"party": "Democrat"}]
    traits = demo.default_traits()[:3] + [demo.default_traits()[-1]]
    out = demo.survey(eng, store, people, traits, "default")
    for pid, per_trait in out.items():
        assert set(per_trait) == {t.trait for t in traits}
        for t in traits:
            probs = per_trait[t.trait]
            assert len(probs) == len(t.options) + 1  # the refusal option is kept
            assert abs(sum(probs) - 1) < 1e-6
            assert abs(demo.without_refusal(probs).sum() - 1) < 1e-9
    misses = eng.misses
    demo.survey(eng, store, people, traits, "default")  # read back, no new calls
    assert eng.misses == misses


@pytest.mark.fast
def test_import_export_round_trips_byte_for_byte(store, tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        '{"conditioning":"I grew up in Ohio.\\n\\n","critic":null,"id":"a1","method":"imported","model":null,"params":null,"profile":{"party":"Democrat"},"prompts":null,"seed":0}',
        '{"conditioning":"Ich bin Lehrerin \\u2014 aus Texas.\\n\\n","critic":[{"check":"x"}],"id":"a2","method":"anthology","model":"m","params":{"max_tokens":5},"prompts":{"backstory":"Q"},"seed":7}',
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # canonical form is UTF-8, not \u escapes: normalise the input once
    banks.import_jsonl(store, "imp", src)
    first = tmp_path / "out1.jsonl"
    banks.export_jsonl(store, "imp", first)
    store2 = Store(tmp_path / "other.db")
    banks.import_jsonl(store2, "again", first)
    second = tmp_path / "out2.jsonl"
    banks.export_jsonl(store2, "again", second)
    assert first.read_bytes() == second.read_bytes()
    assert "Ich bin Lehrerin — aus Texas." in first.read_text(encoding="utf-8")
    assert [p.persona_id for p in store.personas("imp")] == ["imp:a1", "imp:a2"]


@pytest.mark.fast
@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"conditioning": "ok"}\n{"conditioning": "fine"}\n{not json}\n', "bad.jsonl:3: not valid JSON"),
        ('{"conditioning": "ok"}\n{"backstory": "x"}\n', "bad.jsonl:2: field 'conditioning': expected a non-empty string"),
        ('{"conditioning": "ok", "seed": "x"}\n', "bad.jsonl:1: field 'seed': expected an integer"),
    ],
)
def test_malformed_import_names_the_line_and_writes_nothing(store, tmp_path, bad, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(bad)
    with pytest.raises(banks.BankError) as e:
        banks.import_jsonl(store, "bad", path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert store.personas("bad") == []  # all or nothing: the good lines before it are not kept


def _agents_answers(store, engine, seed):
    eng = cached(store, engine)
    people = banks.generate(eng, store, "s", "anthology", 2, seed=seed, params=TINY)
    model = mesa.Model(seed=seed)
    agents = [PersonaAgent(model, p, seed=seed) for p in people]
    q = Question.make("q", "Do you like dogs?", ["Yes", "No", "Not sure"])
    results = eng.option_probs([a.ask(q) for a in agents])
    return [p.conditioning for p in people], [a.receive(q, r).sampled for a, r in zip(agents, results)]


def test_same_seed_same_personas_and_answers(tmp_path, engine):
    a = _agents_answers(Store(tmp_path / "a.db"), engine, 11)
    b = _agents_answers(Store(tmp_path / "b.db"), engine, 11)
    c = _agents_answers(Store(tmp_path / "c.db"), engine, 12)
    assert a == b
    assert a[0] != c[0]


def test_killed_generation_resumes_without_regenerating(tmp_path, engine):
    db = tmp_path / "kill.db"
    cmd = [sys.executable, str(ROOT / "run.py"), "personas", "generate", "--bank", "k", "-n", "4", "--chunk", "2",
           "--max-tokens", "12", "--seed", "5", "--no-critic", "--store", str(db)]
    done = kill_when(cmd, ROOT, db, "select count(*) from personas", 2)
    assert 2 <= done < 4, "the kill must land between chunks"
    first_rows = {p.persona_id: p.conditioning for p in Store(db).personas("k")}
    responses_before = count(db, "select count(*) from responses")

    store = Store(db)
    eng = cached(store, engine)
    people = banks.generate(eng, store, "k", "anthology", 4, seed=5, chunk=2, params=GenerationParams(max_tokens=12, critic=False))
    assert len(store.personas("k")) == 4
    # finished personas untouched, and only the missing ones cost engine calls
    assert {p.persona_id: p.conditioning for p in store.personas("k") if p.persona_id in first_rows} == first_rows
    assert eng.misses == 4 - done
    assert count(db, "select count(*) from responses") == responses_before + eng.misses
    # identical to an uninterrupted run with the same seed
    clean = Store(tmp_path / "clean.db")
    banks.generate(cached(clean, engine), clean, "k", "anthology", 4, seed=5, chunk=2, params=GenerationParams(max_tokens=12, critic=False))
    assert [p.conditioning for p in clean.personas("k")] == [p.conditioning for p in store.personas("k")]
    assert len(people) == 4


@pytest.mark.fast
def test_series_history_is_the_answered_blocks_shared_between_agents():
    """An agent's series-mode history is its answered blocks in order, the text
    it was before the blocks were shared; agents that gave the same answer to the
    same question hold one string (61k agents a wave at the Anthology ATP size)."""
    from agents.llm.base import OptionResult
    from agents.questions import answered_block, display_order
    from core.persona_record import PersonaRecord

    model = mesa.Model(seed=0)
    agents = [PersonaAgent(model, PersonaRecord(f"b:{i}", "b", i, "anthology", f"Backstory {i}.\n\n"), seed=0, reverse=False)
              for i in range(3)]
    questions = [Question.make("q1", "Do you like dogs?", ["Yes", "No"]), Question.make("q2", "And cats?", ["Yes", "No", "Unsure"])]
    expected = ["", "", ""]
    for q in questions:
        for a in agents:
            order = display_order(len(q.options), False)
            ans = a.receive(Question.make(q.id, q.text, q.options), OptionResult([1.0] + [0.0] * (len(q.options) - 1), 0.0))
            expected[agents.index(a)] += answered_block(q, order, ans.sampled)
    assert [a.history for a in agents] == expected
    assert [a.context() for a in agents] == [f"Backstory {i}.\n\n" + expected[i] for i in range(3)]
    assert all(x is y for x, y in zip(agents[0]._blocks, agents[1]._blocks))  # same answers: the same strings
