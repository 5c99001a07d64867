"""Consensus episodes and digital representatives on the real embedded model
(SmolLM2-135M-Instruct, CPU, float32). Kept tiny: 3 participants, 1 round,
K = 2, short texts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from agents.llm.base import Engine, EngineError
from mechanisms import (
    Episode,
    EpisodeConfig,
    HabermasMediator,
    LLMMediator,
    OpinionMediator,
    Participant,
    ParticipantRecord,
    Transcript,
    conditioning,
    load_questions,
    representative,
    representativity,
)
from mechanisms.mediators import MediationInput

pytestmark = pytest.mark.slow

TINY = EpisodeConfig(rounds=1, seed=11, opinion_tokens=24, critique_tokens=20)


class RecordingEngine(Engine):
    """Passes every batch to the real engine and keeps (op, requests)."""

    def __init__(self, inner: Engine):
        super().__init__()
        self.inner = inner
        self.kind, self.model = inner.kind, inner.model
        self.calls: list[tuple[str, list]] = []

    def option_probs(self, requests):
        self.calls.append(("option_probs", list(requests)))
        return self.inner.option_probs(requests)

    def generate(self, requests):
        self.calls.append(("generate", list(requests)))
        return self.inner.generate(requests)


@pytest.fixture(scope="module")
def engine():
    try:
        import torch

        from agents.llm.transformers_engine import TransformersEngine

        # float32: bf16 lets identical computations differ by cache path.
        eng = TransformersEngine.embedded(dtype="float32")
    except (EngineError, ImportError) as exc:
        pytest.fail(f"embedded model unavailable: {exc} (run make setup)", pytrace=False)
    # One intra-op thread: on a 2-core machine shared with other jobs, OpenMP's
    # spinning threads made decoding ~20x slower (30 tokens: 90 s vs 4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield eng
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def question():
    return load_questions(n=1, seed=5)[0]


PERSONAS = [
    Participant("farmer", "I am a 67-year-old retired farmer from Yorkshire. I vote Conservative and distrust big government."),
    Participant("nurse", "I am a 24-year-old nurse in London. I vote Labour and care most about public services."),
    Participant("owner", "I am a 45-year-old shop owner in Manchester. I vote Liberal Democrat and value personal freedom."),
]


def test_questions_subset_ships_with_attribution():
    qs = load_questions()
    assert len(qs) == 200 and len({q.id for q in qs}) == 200
    assert all(q.question and q.affirming_statement for q in qs)
    from mechanisms.episode import DATA_DIR

    text = (DATA_DIR / "ATTRIBUTION.md").read_text() + (DATA_DIR / "LICENSE").read_text()
    assert "CC-BY-4.0" in text and "Tessler et al., Science 2024, Habermas Machine" in text


def test_episode_end_to_end_private_critiques_and_full_log(engine, question):
    rec = RecordingEngine(engine)
    ep = Episode(rec, question, PERSONAS, HabermasMediator(num_candidates=2, max_tokens=32), TINY)
    phases = []
    while not ep.done:
        phase = ep.phase
        n_calls = len(rec.calls)
        records = ep.step()
        phases.append(phase)
        assert records and all(r.phase == phase for r in records)
        # Batched: a phase makes a handful of calls, never one per participant.
        ops = [op for op, _ in rec.calls[n_calls:]]
        assert len(ops) <= {"opinions": 3, "draft": 3, "critiques": 2, "revision": 3, "payoff": 1}[phase], ops
    assert phases == ["opinions", "draft", "critiques", "revision", "payoff"]
    res = ep.result()

    # Participants never see each other's critiques (nor opinions): check the
    # prompts actually sent.
    critiques = res.critiques[0]
    assert len(critiques) == 3 and any(critiques)
    sent = [(op, r) for op, reqs in rec.calls for r in reqs]
    participant_prompts = {i: [] for i in range(3)}
    for r in res.log:
        if r.participant is not None and r.act in ("critique", "opinion", "rank", "position", "agreement"):
            participant_prompts[r.participant].append(r.prompt)
    for i in range(3):
        assert participant_prompts[i]
        for prompt in participant_prompts[i]:
            assert PERSONAS[i].conditioning in prompt
            for j in range(3):
                if j != i:
                    assert PERSONAS[j].conditioning not in prompt
                    if len(critiques[j]) > 15 and critiques[j] in prompt:
                        # only possible through a mediator statement quoting it
                        assert critiques[j] in critiques[i] or any(critiques[j] in s for s in res.statements)
    # ... while the mediator's revision prompts hold every critique.
    revision_prompts = [r.prompt for r in res.log if r.phase == "revision" and r.act == "candidate"]
    assert revision_prompts and all(all(c in p for c in critiques) for p in revision_prompts)

    # Every utterance is in the log: each request sent has a record with its prompt.
    logged = [r.prompt for r in res.log if r.kind != "select"]
    assert sorted(logged) == sorted((r.prompt) for _, r in sent)
    texts = {r.text for r in res.log if r.text is not None}
    assert set(res.opinions) <= texts and set(critiques) <= texts and set(res.statements) <= texts
    assert all(s for s in res.statements)
    # Structure of the mediation and the payoff.
    for m in res.mediations:
        assert m.rankings.shape == (3, 2) and m.statement == m.candidates[m.social.winner]
    pay = res.payoff.to_json()
    assert np.array(pay["agreement"]).shape == (2, 3)
    assert all(1.0 <= v <= 7.0 for row in pay["agreement"] for v in row)
    assert pay["final_min"] <= pay["final_mean"]
    assert all(1.0 <= p <= 7.0 for p in res.positions)
    json.dumps(res.to_json())  # the whole episode serialises for the store


def test_choice_ranking_and_baseline_mediator(engine, question):
    t = Transcript(engine)
    inp = MediationInput(
        question=question.question,
        round=0,
        phase="draft",
        opinions=["We should do it carefully.", "I am strongly against it.", "It depends on the cost."],
        critiques=None,
        previous=None,
        actor_ids=[p.id for p in PERSONAS],
        actor_conditionings=[p.conditioning for p in PERSONAS],
        reversed_flags=[False, True, False],
        seed=3,
    )
    out = HabermasMediator(num_candidates=2, ranking="choice", max_tokens=24).mediate(t, inp)
    assert out.rankings.shape == (3, 2) and out.statement == out.candidates[out.social.winner]
    ranks = [r for r in t.records if r.act == "rank"]
    assert len(ranks) == 3 and all(sorted(r.options) == sorted(out.candidates) for r in ranks)
    base = OpinionMediator(participant=1).mediate(t, inp)
    assert base.statement == "I am strongly against it." and t.records[-1].act == "statement"


def _records():
    """Hand-written records (other questions) for the three participants."""
    return [
        ParticipantRecord(
            "farmer",
            {"Age": "60 to 69", "Party": "Conservative", "Region": "Yorkshire"},
            [("Should the UK build more wind farms?", "Not on good farmland; they spoil the countryside.")],
            [("Should the UK build more wind farms?", "The draft ignores rural communities.")],
            [("Should the UK build more wind farms?", "disagree")],
        ),
        ParticipantRecord(
            "nurse",
            {"Age": "20 to 29", "Party": "Labour", "Region": "London"},
            [("Should the UK build more wind farms?", "Yes, clean energy is urgent and creates jobs.")],
            [("Should the UK build more wind farms?", "Good, but it should say who pays.")],
            [("Should the UK build more wind farms?", "strongly agree")],
        ),
        ParticipantRecord(
            "owner",
            {"Age": "40 to 49", "Party": "Liberal Democrat", "Region": "North West"},
            [("Should the UK build more wind farms?", "Yes if the market decides where.")],
            [("Should the UK build more wind farms?", "Too much state planning in this draft.")],
            [("Should the UK build more wind farms?", "somewhat agree")],
        ),
    ]


def test_representatives_value_equivalence(engine, question):
    records = _records()
    text = conditioning(records[0], "DOCP")
    assert "demographic profile" in text and "Opinion of the participant about question 1" in text
    assert "Critique of the participant" in text and "Position of the participant about question 1: disagree." in text
    assert "demographic profile" not in conditioning(records[0], "OCP")

    # Participants whose behaviour is defined by their own full record: a
    # representative built from that same record must reproduce their payoffs.
    originals = [Participant(r.id, conditioning(r, "DOCP")) for r in records]
    mediator = LLMMediator(max_tokens=24)
    base, [same] = representativity(
        engine, question, originals, records, subsets=("DOCP",), mediator=mediator, config=TINY, modes=("one",), one_slots=[0]
    )
    assert same.mode == "one" and same.gap == 0.0, same.to_json()
    # Representatives of someone else (records rotated: 1 stands in for 0, ...) do not.
    rotated = records[1:] + records[:1]
    _, [other] = representativity(
        engine, question, originals, rotated, subsets=("DOCP",), mediator=mediator, config=TINY, modes=("all",), baseline=base
    )
    assert other.mode == "all" and sorted(other.per_slot) == [0, 1, 2]
    assert other.gap > 1e-3, other.to_json()
    assert other.original_payoffs == base.final_payoffs.tolist()


def test_representative_stands_in_only_for_its_acts(engine, question):
    """Critique-only substitution (the paper's setting): the stand-in writes the
    critique, the original its opinion; payoffs are judged by the originals."""
    records = _records()
    cfg = EpisodeConfig(rounds=1, seed=11, opinion_tokens=16, critique_tokens=16, represented_acts=("critique",))
    rep = representative(records[1], "OC")
    ep = Episode(engine, question, PERSONAS, OpinionMediator(participant=2), cfg, stand_ins={0: rep})
    res = ep.run()
    by_act = {(r.act, r.participant): r.actor for r in res.log if r.participant is not None and r.kind != "select"}
    assert by_act[("opinion", 0)] == "farmer" and by_act[("critique", 0)] == rep.id
    assert by_act[("agreement", 0)] == "farmer"
    assert res.actor_ids["critique"] == [rep.id, "nurse", "owner"]
