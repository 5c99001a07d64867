"""Consensus episodes and digital representatives on the real embedded model
(SmolLM2-135M-Instruct, CPU, float32). Kept tiny: 3 participants, 1 round,
K = 2, short texts."""
from __future__ import annotations

import json
import re
from pathlib import Path

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
from mechanisms.budget import GenerationBudget
from mechanisms.cot_ranking import parse_ranking
from mechanisms.mediators import MediationInput, usable_statement
from mechanisms.payoff import disagreement
from mechanisms.representatives import ConditioningError, require_parts

TINY = EpisodeConfig(rounds=1, seed=11, budget=GenerationBudget(opinion=24, critique=20))


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
        from conftest import embedded_engine

        # The session's model (float32: bf16 lets identical computations differ by cache path).
        eng = embedded_engine()
    except (EngineError, ImportError) as exc:
        pytest.fail(f"embedded model unavailable: {exc} (run make setup)", pytrace=False)
    # One intra-op thread: on a 2-core machine shared with other jobs, OpenMP's
    # spinning threads made decoding ~20x slower (30 tokens: 90 s vs 4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield eng
    torch.set_num_threads(threads)


@pytest.fixture()
def fake():
    """Mechanism logic (value equivalence, rollouts) on the fake engine; the real
    model plays whole episodes in the tests that ask for ``engine``."""
    from agents.llm.fake_engine import FakeEngine

    return FakeEngine()


@pytest.fixture(scope="module")
def question():
    return load_questions(n=1, seed=5)[0]


PERSONAS = [
    Participant("farmer", "I am a 67-year-old retired farmer from Yorkshire. I vote Conservative and distrust big government."),
    Participant("nurse", "I am a 24-year-old nurse in London. I vote Labour and care most about public services."),
    Participant("owner", "I am a 45-year-old shop owner in Manchester. I vote Liberal Democrat and value personal freedom."),
]


@pytest.mark.fast
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

    # Rankers in the revision round see the statement under revision and their
    # own critique of it (the Habermas Machine's ranking prompt) -- nobody else's.
    revision_ranks = [r for r in res.log if r.phase == "revision" and r.act == "rank"]
    assert len(revision_ranks) == 3 * 2
    for r in revision_ranks:
        assert f'statement under revision was: "{res.statements[0]}"' in r.prompt
        assert f"Your critique of it: {critiques[r.participant]}" in r.prompt
    draft_ranks = [r for r in res.log if r.phase == "draft" and r.act == "rank"]
    assert draft_ranks and not any("under revision" in r.prompt for r in draft_ranks)

    # Positions asked before and after deliberation (after: recalling the own
    # opinion and the final statement), stored and reported with the change.
    after = [r for r in res.log if r.act == "position_after"]
    assert [r.participant for r in after] == [0, 1, 2]
    assert all(res.statements[-1] in r.prompt and res.opinions[r.participant] in r.prompt for r in after)
    assert len(res.positions_after) == 3 and all(1.0 <= p <= 7.0 for p in res.positions_after)
    summary = res.to_json()["position_summary"]
    assert summary["before"] == res.positions and summary["after"] == res.positions_after
    assert summary["change"] == pytest.approx(np.subtract(res.positions_after, res.positions).tolist(), abs=1e-6)
    assert summary["disagreement_after"] == pytest.approx(disagreement(res.positions_after))
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


@pytest.mark.fast
def test_representatives_value_equivalence(fake, question):
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
        fake, question, originals, records, subsets=("DOCP",), mediator=mediator, config=TINY, modes=("one",), one_slots=[0]
    )
    assert same.mode == "one" and same.gap == 0.0, same.to_json()
    # Representatives of someone else (records rotated: 1 stands in for 0, ...) do not.
    rotated = records[1:] + records[:1]
    _, [other] = representativity(
        fake, question, originals, rotated, subsets=("DOCP",), mediator=mediator, config=TINY, modes=("all",), baseline=base
    )
    assert other.mode == "all" and sorted(other.per_slot) == [0, 1, 2]
    assert other.gap > 1e-3, other.to_json()
    assert other.original_payoffs == pytest.approx(base.final_payoffs.tolist(), abs=1e-6)
    assert other.acts == ("critique",) and other.rollouts == 1 and np.isnan(other.ci_low)


def test_representative_stands_in_only_for_its_acts(engine, question):
    """Critique-only substitution (the paper's setting): the stand-in writes the
    critique, the original its opinion; payoffs are judged by the originals."""
    records = _records()
    cfg = EpisodeConfig(rounds=1, seed=11, budget=GenerationBudget(opinion=16, critique=16), represented_acts=("critique",))
    rep = representative(records[1], "OC")
    ep = Episode(engine, question, PERSONAS, OpinionMediator(participant=2), cfg, stand_ins={0: rep})
    res = ep.run()
    by_act = {(r.act, r.participant): r.actor for r in res.log if r.participant is not None and r.kind != "select"}
    assert by_act[("opinion", 0)] == "farmer" and by_act[("critique", 0)] == rep.id
    assert by_act[("agreement", 0)] == "farmer"
    assert res.actor_ids["critique"] == [rep.id, "nurse", "owner"]


def _revision_input(question, seed=3):
    return MediationInput(
        question=question.question,
        round=1,
        phase="revision",
        opinions=["We should do it carefully.", "I am strongly against it.", "It depends on the cost."],
        critiques=["Say who pays for it.", "It ignores my objection.", "Too vague about costs."],
        previous="The group agrees to go ahead slowly.",
        actor_ids=[p.id for p in PERSONAS],
        actor_conditionings=[p.conditioning for p in PERSONAS],
        reversed_flags=[False, True, False],
        seed=seed,
    )


def test_unusable_candidates_are_retried_and_never_win(engine, question):
    """One-token candidates are unusable (<= 5 characters): each is generated
    again `retries` times, and when none is usable the statement falls back --
    never to an empty text."""
    t = Transcript(engine)
    draft = _revision_input(question)
    draft.round, draft.phase, draft.critiques, draft.previous = 0, "draft", None, None
    out = HabermasMediator(num_candidates=2, max_tokens=1, retries=2).mediate(t, draft)
    assert not any(usable_statement(c) for c in out.candidates)  # the fault the test needs
    attempts = sorted((r.candidate, r.attempt) for r in t.records if r.act == "candidate")
    assert attempts == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert out.statement in draft.opinions and out.chosen is None and "adopted participant" in out.fallback
    assert t.records[-1].kind == "select" and t.records[-1].extra["fallback"] == out.fallback

    revision = _revision_input(question)
    out = LLMMediator(max_tokens=1, retries=1).mediate(t, revision)
    assert not usable_statement(out.candidates[0])
    assert out.statement == revision.previous and "kept the statement under revision" in out.fallback


def test_cot_ranking_parses_or_records_its_fallback(engine, question):
    inp = _revision_input(question)
    t = Transcript(engine)
    med = HabermasMediator(num_candidates=2, ranking="cot", max_tokens=20, cot_tokens=32, cot_retries=1)
    out = med.mediate(t, inp)
    assert usable_statement(out.statement) and out.statement == out.candidates[out.social.winner]
    cot = [r for r in t.records if r.act == "rank" and r.extra.get("ranking") == "cot"]
    assert {r.participant for r in cot} == {0, 1, 2}
    for r in cot:
        shown = [out.candidates[j] for j in r.extra["order"]]  # shuffled for this participant
        assert f"A. {shown[0]}" in r.prompt and f"B. {shown[1]}" in r.prompt
        assert inp.previous in r.prompt and inp.critiques[r.participant] in r.prompt
    fallbacks = {r.participant: r.extra["reason"] for r in t.records if r.kind == "fallback"}
    assert fallbacks == out.ranking_fallbacks
    for i in range(3):
        last = max((r for r in cot if r.participant == i), key=lambda r: r.attempt)
        parsed = parse_ranking(last.raw, 2)
        rated = [r for r in t.records if r.act == "rank" and r.kind == "option_probs" and r.participant == i]
        if parsed.order is None:  # recorded fallback: ranked by ratings, which also see the revision context
            assert i in fallbacks and parsed.reason in fallbacks[i] and len(rated) == 2
            assert all(inp.previous in r.prompt for r in rated)
            assert last.attempt == 1  # re-asked once before falling back
        else:
            assert i not in fallbacks and not rated
            best = [j for j in range(2) if out.rankings[i, j] == 1]
            assert best == [last.extra["order"][parsed.order[0]]]
    assert out.to_json().get("ranking_fallbacks", {}) == {str(k): v for k, v in fallbacks.items()}


# ------------------------------------------------------------------ conditioning (paper Table 2)
@pytest.mark.fast
def test_each_conditioning_part_adds_its_table_2_section():
    rec = _records()[0]
    base = conditioning(rec, "")
    expected = {
        "D": "You represent a participant with the following demographic profile. Age: 60 to 69. Party: Conservative. Region: Yorkshire.",
        "O": "Question 1 from a past debate: Should the UK build more wind farms?\n"
        "Opinion of the participant about question 1: Not on good farmland; they spoil the countryside.",
        "C": "Question 1 from a past debate: Should the UK build more wind farms?\n"
        "Critique of the participant about question 1: The draft ignores rural communities.",
        "P": "Question 1 from a past debate: Should the UK build more wind farms?\n"
        "Position of the participant about question 1: disagree.",
    }
    for part, section in expected.items():
        text = conditioning(rec, part)
        assert text != base and text.startswith(base) and section in text, part
        for other, other_section in expected.items():
            if other != part:
                assert other_section.split("\n")[-1] not in text, (part, other)
    # O, C and P of one past question share its block, in the paper's order.
    docp = conditioning(rec, "DOCP")
    assert docp.index("Opinion of the participant") < docp.index("Critique of the participant") < docp.index("Position of the participant")
    assert docp.count("Question 1 from a past debate") == 1


@pytest.mark.fast
def test_a_set_the_data_cannot_fill_stops_with_one_line():
    bare = [ParticipantRecord("a", opinions=[("q?", "yes")]), ParticipantRecord("b")]
    require_parts(bare, ["", "O"], "data.parquet")
    with pytest.raises(ConditioningError) as err:
        require_parts(bare, ["O", "DO"], "data.parquet")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("data.parquet: conditioning set 'DO'") and "demographics" in msg
    with pytest.raises(ConditioningError, match="conditioning set 'P'.*positions"):
        require_parts(bare, ["P"], "data.parquet")


def test_D_carries_the_personas_surveyed_demographics(engine, store):
    """The consensus scenario's D: each persona's surveyed profile, the most
    probable option per trait of the stored survey."""
    from agents import demographics as demo
    from core.persona_record import PersonaRecord
    from mechanisms.groups import surveyed_profiles

    people = [PersonaRecord(persona_id=p.id, bank="consensus", idx=i, method="imported", conditioning=p.conditioning) for i, p in enumerate(PERSONAS[:1])]
    profiles = surveyed_profiles(engine, store, people)
    stored = store.demographics([p.persona_id for p in people], "consensus-ATP_W92")
    for pid, profile in profiles.items():
        assert profile, pid
        for t in demo.default_traits():
            options = [*t.options, demo.REFUSAL]
            best = options[int(np.argmax(stored[pid][t.trait]))]
            assert profile.get(t.trait.capitalize()) == (None if best == demo.REFUSAL else best)
        text = conditioning(ParticipantRecord(pid, profile), "D")
        assert "You represent a participant with the following demographic profile." in text
        assert all(f"{k}: {v}." in text for k, v in profile.items())


@pytest.mark.fast
def test_value_equivalence_over_seeded_rollouts_with_interval_and_autorater(fake, question):
    """R = 2 rollouts: each re-seeds the whole episode (baseline and substitution
    share the seed), the gap comes with a bootstrap interval, and the judge
    compares each rollout's final statements (eq. 22)."""
    records = _records()
    originals = [Participant(r.id, conditioning(r, "DOCP")) for r in records]
    cfg = EpisodeConfig(rounds=1, seed=11, budget=GenerationBudget(opinion=12, critique=12))
    played = []
    base, [rep] = representativity(
        fake, question, originals, records[1:] + records[:1], subsets=("OC",), mediator=LLMMediator(max_tokens=12),
        config=cfg, modes=("all",), rollouts=2, judge=fake, on_episode=played.append,
    )
    assert len(played) == 4  # 2 baseline rollouts + 2 with everyone substituted
    baselines = [r for r in played if r.actor_ids["critique"] == [p.id for p in originals]]
    assert len(baselines) == 2 and baselines[0].opinions != baselines[1].opinions  # re-seeded
    assert base.opinions == baselines[0].opinions and base.config["seed"] == 11  # rollout 0 is the episode itself
    subs = [r for r in played if all(r is not b for b in baselines)]
    assert [s.config["seed"] for s in subs] == [b.config["seed"] for b in baselines]  # paired seeds
    assert rep.rollouts == 2 and rep.ci_low <= rep.gap + 1e-9 and rep.gap <= rep.ci_high + 1e-9
    expected = np.abs(np.mean([s.final_payoffs for s in subs], 0) - np.mean([b.final_payoffs for b in baselines], 0)).mean()
    assert rep.gap == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= rep.win_rate <= 1.0


# ------------------------------------------------------------------ the scenario: representatives as Mesa steps
ROOT = Path(__file__).resolve().parent.parent
# Two hand-written personas (an imported bank: no backstory generation), one
# group, the LLM mediator, the base representative only, 2 rollouts: 5 main
# phases + 2 representatives steps (3 and 4 episodes).
SCENARIO_TINY = [
    "population.size=2",
    "population.conditions=[imported]",
    "options={groups: 1, group_size: 2, rounds: 1, mediator: llm, history: 0, representatives: [''], rollouts: 2, null_row: false, "
    "budget: {opinion: 6, critique: 6, statement: 8}}",
]


def _scenario(tmp_path: Path, db: Path, out: Path, extra: list[str] = ()):
    from scenarios.config import load_config

    bank = tmp_path / "personas.jsonl"
    bank.write_text("".join(json.dumps({"id": p.id, "conditioning": p.conditioning}) + "\n" for p in PERSONAS[:2]))
    return load_config(ROOT / "scenarios" / "consensus.yaml", [*SCENARIO_TINY, f"population.import_path={bank}", f"store={db}", f"output={out}", *extra])


def test_representatives_phase_is_logged_steps_resumed_after_a_kill_and_replayed(tmp_path):
    """The substituted episodes are Mesa steps: a run killed inside them
    resumes making no finished call again (every stored answer is one the
    finished run asks for), its console counts the episodes, its log holds
    them, the page shows their statements and gaps, the report is assembled
    from what the steps logged, and a replay reproduces it with no engine call."""
    import io
    import sys

    import pandas as pd
    from killing import count, kill_when

    from core.store import Store
    from mechanisms.representatives import expected_payoff_gap
    from simulation.console import RunConsole
    from simulation.runner import build_model, replay, run
    from simulation.viz import PersonaeViz
    from simulation.viz_source import ViewSource

    cfg = _scenario(tmp_path, tmp_path / "killed.db", tmp_path / "runs")
    sets = [x for s in [*SCENARIO_TINY, f"population.import_path={tmp_path / 'personas.jsonl'}", f"store={cfg.store}", f"output={cfg.output}"] for x in ("--set", s)]
    done = kill_when([sys.executable, str(ROOT / "run.py"), "scenarios/consensus.yaml", "--plain", *sets], ROOT, cfg.store,
                     "select count(distinct step) from event_blocks", 6)
    assert done == 6, "the kill must land inside the representatives phase (its first step logged)"
    before = count(cfg.store, "select count(*) from responses")
    console = RunConsole(live=False, file=io.StringIO())
    resumed = run(cfg, console=console)
    assert resumed.resumed and 0 < resumed.engine_calls and before > 0
    printed = console.file.getvalue()
    assert "step 6/7 representatives r1 none" in printed and "step 7/7 representatives r2 none" in printed
    # its logged representatives step restored from the log, not played again
    assert "representatives: episodes (restored from the log): 3/7" in printed and "representatives: episodes: 0/7" not in printed
    assert re.search(r"representatives: episodes \(~\d+m\d\ds left\): 7/7", printed)

    class SeenStore(Store):
        """The run's store, remembering which stored answers a replay looks up."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen: set[str] = set()

        def get_responses(self, keys):
            self.seen.update(keys)
            return super().get_responses(keys)

    store = SeenStore(cfg.store, readonly=True)
    model = build_model(cfg, store, resumed.run_id, replay=True)
    while model.running:
        model.step()
    # Every answer the killed run stored is one the finished run asks for: the
    # resume asked the same requests (per-rollout seeds), none were made again.
    assert len(store.seen) == count(cfg.store, "select count(*) from responses") == before + resumed.engine_calls
    steps = model.datacollector.get_model_vars_dataframe()
    assert steps["phase"].tolist()[-2:] == ["representatives r1 none", "representatives r2 none"]
    assert steps["representative_episodes"].tolist() == [0, 0, 0, 0, 0, 3, 7]

    assert Store(cfg.store).logged_steps(resumed.run_id) == list(range(7))
    outcomes = [e["payload"] for e in Store(cfg.store).events(resumed.run_id) if e["kind"] == "representatives"]
    # rollout 0: the main episode + 3 substituted; rollout 1: the originals again + 3 substituted
    assert sorted((o["rollout"], o["mode"], tuple(o["substituted"])) for o in outcomes) == sorted(
        [(r, "originals", ()) for r in (0, 1)] + [(r, m, s) for r in (0, 1) for m, s in (("one", (0,)), ("one", (1,)), ("all", (0, 1)))]
    )
    utterances = [e for e in Store(cfg.store).events(resumed.run_id) if e["step"] >= 5 and e["kind"] == "utterance"]
    critics = {u["agent"] for u in utterances if u["payload"]["act"] == "critique"}
    assert len(critics) == 4 and sum(c.startswith("rep:") and c.endswith(":base") for c in critics) == 2  # originals and their representatives

    # the report's gap is the steps' logged payoffs, assembled (eq. 21)
    def pay(mode, slots=None):
        rows = [o for o in outcomes if o["mode"] == mode and (slots is None or o["substituted"] == slots)]
        return np.array([o["self_ratings"] for o in sorted(rows, key=lambda o: o["rollout"])])

    table = pd.read_csv(resumed.output_dir / "representativity.csv").set_index("mode")
    base = pay("originals")
    assert table.loc["all", "payoff_gap"] == pytest.approx(float(expected_payoff_gap(pay("all"), base)), abs=2e-6)
    one = np.concatenate([pay("one", [i])[:, [i]] for i in (0, 1)], axis=1)
    assert table.loc["one", "payoff_gap"] == pytest.approx(float(expected_payoff_gap(one, base)), abs=2e-6)
    assert (table["rollouts"] == 2).all() and (table["payoff_source"] == "self-rating").all()
    assert "self-ratings" in (resumed.output_dir / "summary.md").read_text()

    # the page's model (a replay) shows each substitution's latest statement and its gap
    page = PersonaeViz(source=ViewSource(replay=resumed.run_id, store=str(cfg.store)))
    while page.running:
        page.step()
    [view] = page.sim.group_views()
    assert page.error is None and view.phase == "finished" and len(view.representatives) == 3
    latest = {tuple(o["substituted"]): o["statement"] for o in outcomes if o["rollout"] == 1}
    for rep in view.representatives:
        assert rep.rollouts == 2 and rep.statement == latest[tuple(view.participants.index(p) for p in rep.substituted)]
    assert view.representatives[-1].mode == "all" and view.representatives[-1].payoff_gap == pytest.approx(table.loc["all", "payoff_gap"], abs=2e-6)

    result, same = replay(resumed.run_id, str(cfg.store))
    assert same and result.engine_calls == 0


@pytest.mark.fast
def test_payoff_model_option_needs_a_trained_model_in_one_line(tmp_path):
    from scenarios.config import ConfigError
    from simulation.runner import run

    with pytest.raises(ConfigError) as err:
        run(_scenario(tmp_path, tmp_path / "s.db", tmp_path / "runs", ["options.payoff=model"]))
    assert str(err.value) == "options.payoff_model: required when options.payoff is 'model' (the folder of a trained payoff model)"
    with pytest.raises(ConfigError) as err:
        run(_scenario(tmp_path, tmp_path / "s.db", tmp_path / "runs", ["options.payoff=model", f"options.payoff_model={tmp_path / 'none'}"]))
    assert str(err.value).startswith(f"options.payoff_model: {tmp_path / 'none'}: no trained payoff model") and "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.fast
def test_history_episodes_and_the_survey_are_logged_steps_shown_on_the_page(tmp_path):
    """The demographic survey (D) and every history question are steps of the
    model, not set-up: the step log holds them (each persona's profile, each
    group's history episode and its utterances), a run stopped after them
    resumes repeating none of their calls, the page shows them as phases (each
    group's latest history episode until the main debate starts) and a replay
    reproduces the report with no engine call."""
    import io

    from core.store import Store
    from scenarios.config import load_config
    from simulation.console import RunConsole
    from simulation.runner import build_model, replay, run
    from simulation.viz import PersonaeViz
    from simulation.viz_source import ViewSource

    bank = tmp_path / "personas.jsonl"
    bank.write_text("".join(json.dumps({"id": f"p{i}", "conditioning": f"I am persona {i}."}) + "\n" for i in range(4)))
    cfg = load_config(ROOT / "scenarios" / "consensus.yaml", [
        "engine={kind: fake}", "population.size=4", "population.conditions=[imported]", f"population.import_path={bank}",
        "options={groups: 2, group_size: 2, rounds: 1, mediator: llm, history: 2, representatives: [D, OC], rollouts: 1, "
        "budget: {opinion: 6, critique: 6, statement: 8}}", f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}",
    ])
    run_id = cfg.run_id()
    # Stopped after the survey and the first history question ...
    model = build_model(cfg, Store(cfg.store), run_id)
    phases = [i.id for i in model.item_list]
    assert phases[:4] == ["demographic survey", "history 1", "history 2", "opinions"] and phases[-1] == "representatives r1 self (null)"
    model.step()
    model.step()
    ids = [a.persona_id for a in model.agent_list]
    assert model.engine.misses > 0 and Store(cfg.store).logged_steps(run_id) == [0, 1]
    # ... resumed: their calls are answered from the store, none is made again.
    console = RunConsole(live=False, file=io.StringIO())
    result = run(cfg, console=console)
    printed = console.file.getvalue()
    n = len(phases)
    assert f"step 1/{n} demographic survey:  | engine 0 calls, 0 from store" in printed  # the stored survey
    assert re.search(rf"step 2/{n} history 1:  \| engine 0 calls, [1-9]\d* from store", printed)
    assert re.search(rf"step 3/{n} history 2:  \| engine [1-9]\d* calls", printed) and result.engine_calls > 0
    store = Store(cfg.store, readonly=True)
    assert store.logged_steps(run_id) == list(range(n))
    events = store.events(run_id)
    survey = [e for e in events if e["step"] == 0]
    assert {e["kind"] for e in survey} == {"demographics"} and [e["agent"] for e in survey] == ids
    assert all(e["payload"]["profile"] for e in survey)  # D: each persona's most probable answers
    for h in (0, 1):
        logged = [e for e in events if e["step"] == 1 + h]
        assert sorted(e["payload"]["group"] for e in logged if e["kind"] == "history") == [0, 1]
        assert {e["payload"]["history"] for e in logged} == {h} and {e["kind"] for e in logged} == {"history", "utterance"}
    episodes = [json.loads(line) for line in (result.output_dir / "episodes.jsonl").read_text().splitlines()]
    history = [e for e in events if e["kind"] == "history"]
    assert [(h["payload"]["group"], h["payload"]["question"]) for h in sorted(history, key=lambda e: e["payload"]["group"])] == [
        (int(ep["group"][1:]), ep["question"]["id"]) for ep in episodes[:4]]  # the report's history episodes are the logged ones

    # The page: each step a phase; during the history steps each group's latest history episode.
    page = PersonaeViz(source=ViewSource(replay=run_id, store=str(cfg.store)))
    page.step()
    assert page.error is None and page.sim.current_item.id == "demographic survey" and page.progress_text() == f"phase 1/{n}"
    page.step()
    views = page.sim.group_views()
    assert page.sim.current_item.id == "history 1" and [v.label for v in views] == ["group 0 · history 1/2", "group 1 · history 1/2"]
    assert views[0].phase == "history 2" and views[0].statements and views[0].agreement.shape == (2, 2)
    assert views[0].question == episodes[0]["question"]["question"]
    while page.running:
        page.step()
    assert page.error is None and [v.label for v in page.sim.group_views()] == ["group 0", "group 1"]

    again, same = replay(run_id, str(cfg.store))
    assert same and again.engine_calls == 0
