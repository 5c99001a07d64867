"""Paper scale (issue 24): every phase works through personas in chunks, and the
store holds each long text once.

Real SQLite stores; the fake engine (hash-of-the-prompt answers) stands in for
a model, since what is measured is what surrounds it: how many requests exist
at once, what is committed when, how many bytes the store keeps.
"""
from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from agents import bank as banks
from agents import demographics as demo
from agents.backstories import GenerationParams
from agents.llm.base import Engine, GenerateRequest, LoglikRequest, OptionRequest
from agents.llm.cache import CachedEngine
from agents.llm.fake_engine import FakeEngine
from core.persona_record import PersonaRecord
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
FP = {"kind": "fake", "model": "fake-hash"}


class Counting(Engine):
    """Wraps the fake engine; records every batch the cache sends it."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.inner = FakeEngine()
        self.batches: list[tuple[str, int]] = []
        self.fail_after = fail_after

    def _call(self, op: str, requests: list):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise KeyboardInterrupt  # a kill between two batches
        self.batches.append((op, len(requests)))
        return getattr(self.inner, op)(requests)

    def option_probs(self, requests):
        return self._call("option_probs", requests)

    def generate(self, requests):
        return self._call("generate", requests)

    def loglikelihood(self, requests):
        return self._call("loglikelihood", requests)


def cached(store: Store, inner: Engine) -> CachedEngine:
    return CachedEngine(store, FP, lambda: inner)


def words(rng: random.Random, n: int) -> str:
    """Text that does not compress much (random letters), in paragraphs."""
    paras = []
    while sum(len(p) for p in paras) < n:
        paras.append(" ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(60)))
    return "\n\n".join(paras)[:n] + "\n\n"


def personas(n: int, length: int, seed: int = 0) -> list[PersonaRecord]:
    rng = random.Random(seed)
    return [PersonaRecord(persona_id=f"b:{i}", bank="b", idx=i, method="imported", conditioning=words(rng, length)) for i in range(n)]


TRAITS = [
    demo.TraitQuestion("party", "In politics today, do you consider yourself a...", ("Republican", "Democrat", "Independent")),
    demo.TraitQuestion("age", "How old are you?", ("18-29", "30-49", "50-64", "65+")),
]


# ------------------------------------------------------------------ A: bounded memory
@pytest.mark.fast
def test_sampled_survey_holds_one_chunk_of_requests_and_commits_per_chunk(tmp_path):
    """The sampled survey (40 samples per trait, as Anthology) builds the requests
    of one chunk of personas at a time: the largest batch in flight is chunk x
    traits x samples whatever the population, and a kill loses one chunk at most --
    the resumed survey asks the engine only for the unfinished personas."""
    store = Store(tmp_path / "s.db")
    people = personas(23, 600)
    chunk, n = 5, 40
    killed = Counting(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        demo.survey(cached(store, killed), store, people, TRAITS, "w", method="sample", n_samples=n, chunk=chunk)
    assert killed.batches == [("generate", chunk * len(TRAITS) * n)] * 2
    assert len(store.demographics([p.persona_id for p in people], "w")) == 2 * chunk  # two chunks committed

    resumed = Counting()
    got = demo.survey(cached(store, resumed), store, people, TRAITS, "w", method="sample", n_samples=n, chunk=chunk)
    assert max(b for _, b in resumed.batches) == chunk * len(TRAITS) * n  # bounded by the chunk, not 23 personas
    assert sum(b for _, b in resumed.batches) == (23 - 2 * chunk) * len(TRAITS) * n  # nothing finished is asked again
    assert set(got) == {p.persona_id for p in people}

    # The same answers as one unchunked survey (results do not depend on the chunk).
    other = Store(tmp_path / "t.db")
    whole = demo.survey(cached(other, Counting()), other, people, TRAITS, "w", method="sample", n_samples=n, chunk=1000)
    assert whole == got


@pytest.mark.fast
def test_samples_of_one_prompt_share_one_string_and_stay_adjacent():
    """The n samples of one survey prompt are n adjacent requests on ONE prompt
    string (memory: not n copies of the backstory; an engine may send them as
    one n-sample request)."""
    reqs = demo.sample_requests("x" * 10_000 + "Answer: (", 10_000, "b:0", "party", 40)
    assert len({id(r.prompt) for r in reqs}) == 1 and [r.seed for r in reqs] == sorted(set(r.seed for r in reqs), key=[r.seed for r in reqs].index)
    assert {r.prefix_len for r in reqs} == {10_000}


@pytest.mark.fast
def test_probability_survey_and_question_steps_are_chunked(tmp_path, monkeypatch):
    """A whole run (gss_spending, fake engine): every batch the scenario hands the
    engine -- backstories, survey, each questionnaire step -- holds at most
    population.chunk personas' prompts."""
    from scenarios.config import load_config
    from simulation.runner import run

    seen: list[tuple[str, int]] = []
    for op in ("option_probs", "generate"):
        real = getattr(CachedEngine, op)
        monkeypatch.setattr(CachedEngine, op, lambda self, reqs, _op=op, _real=real: (seen.append((_op, len(reqs))), _real(self, reqs))[1])
    cfg = load_config(ROOT / "scenarios/gss_spending.yaml", [
        "engine.kind=fake", f"store={tmp_path / 'p.db'}", f"output={tmp_path / 'runs'}", "population.size=7",
        "population.conditions=[anthology]", "population.backstories.max_tokens=12", "population.chunk=3",
        "questionnaire.questions=[natspac, natenvir]", "human.sample=12", "human.lower_bound_splits=4",
        "analysis.position_bias_personas=0",
    ])
    assert run(cfg).engine_calls > 0
    option_batches = [b for op, b in seen if op == "option_probs"]
    steps, survey = option_batches[-8:], option_batches[:-8]
    assert steps == [3, 3, 3, 3] * 2, option_batches  # 2 items x 12 agents (one per human), 3 per batch
    # survey: 3 personas x traits x 2 orders per batch (7 personas: 3 + 3 + 1)
    assert len(survey) == 3 and survey[0] == survey[1] == 3 * survey[2] and survey[2] % 2 == 0, option_batches
    assert max(b for op, b in seen if op == "generate") <= 3  # backstories, 3 at a time


# ------------------------------------------------------------------ B: each text once
@pytest.mark.fast
def test_store_bytes_grow_with_the_texts_not_with_requests_times_prompt_length(tmp_path):
    """N personas with 8 KB backstories, each asked 2 traits x 2 orders (4 requests)
    and a series of 6 questions whose context grows by one answer each: the stored
    requests and texts together stay under 1.5x the backstories (they used to hold
    every request's whole prompt: over 10x)."""
    from agents.questions import Question, answered_block, display_order, option_request

    store = Store(tmp_path / "s.db")
    people = personas(12, 8000)
    eng = cached(store, Counting())
    demo.survey(eng, store, people, TRAITS, "w", method="probs", chunk=4)
    qs = [Question.make(f"q{k}", f"Question number {k}?", ["Yes", "No", "Maybe"]) for k in range(6)]
    contexts = {p.persona_id: p.conditioning for p in people}
    for q in qs:  # a questionnaire in series: each answer joins the context
        order = display_order(3, False)
        reqs = [option_request(contexts[p.persona_id], q, order) for p in people]
        eng.option_probs(reqs)
        for p in people:
            contexts[p.persona_id] += answered_block(q, order, 0)
    text = sum(len(p.conditioning) for p in people)
    with closing(sqlite3.connect(store.path)) as con:
        requests = con.execute("select sum(length(request)), count(*) from responses").fetchone()
        texts = con.execute("select sum(length(tail)), count(*) from texts").fetchone()
    assert requests[1] == 12 * (4 + 6)
    stored = requests[0] + texts[0]
    assert stored < 1.5 * text, (stored, text)
    whole = sum(len(r["prefix"]) for r in store.requests())  # what the old store repeated
    assert whole > 10 * text


@pytest.mark.fast
def test_a_stored_request_reads_back_whole_and_the_cache_key_is_unchanged(tmp_path):
    """Keys are those of the store format before texts were shared (literal
    digests computed on the code before the change), so existing stores keep
    answering; requests read back from the store are the requests sent."""
    store = Store(tmp_path / "s.db")
    inner = Counting()
    eng = cached(store, inner)
    option = OptionRequest(prefix="I grew up in Ohio.\n\n" * 3, suffix="Question: Age?\n(A) 18-29\n(B) 30+\nAnswer: (", options=("A", "B"))
    gen = GenerateRequest(prompt="Question: Tell me about yourself.\nAnswer: I was born in 1970.\n\nQuestion: Where?\nAnswer:",
                          max_tokens=40, temperature=1.0, stop=("\nQuestion:",), seed=7, prefix_len=60)
    loglik = LoglikRequest(context="abc ", continuation="def")
    assert eng._key("option_probs", option) == "85aaf0373bc59f9f49e7a5e3aecada13f70c6e4abc22186acc7298ab34843832"
    assert eng._key("generate", gen) == "b7bbb858a69c1d92866ccb076828a60ff40a6af43a9db6f86d429f340dac8775"
    assert eng._key("loglikelihood", loglik) == "72eb84975dd08072b5084848973033a24371df000bc476b4e8bcd4699878caac"

    long_prefix = personas(1, 3000)[0].conditioning
    reqs = [OptionRequest(prefix=long_prefix, suffix=f"Q{k}?\n(A) a\n(B) b\nAnswer: (", options=("A", "B")) for k in range(3)]
    gens = [GenerateRequest(prompt=long_prefix + "Question: more?\nAnswer:", max_tokens=5, seed=k, prefix_len=len(long_prefix)) for k in range(2)]
    eng.option_probs(reqs)
    eng.generate(gens)
    for r in reqs:
        assert store.request(eng._key("option_probs", r)) == r.key()
    for g in gens:
        assert store.request(eng._key("generate", g)) == g.key()
    with closing(sqlite3.connect(store.path)) as con:
        assert con.execute("select count(*) from texts").fetchone()[0] == 1  # one backstory, five requests
        assert all('"$text"' in r for (r,) in con.execute("select request from responses"))

    # A store written before texts were shared (whole requests inline) still answers.
    from core.canonical import dumps

    old = tmp_path / "old.db"
    Store(old)
    with closing(sqlite3.connect(old)) as con, con:
        ans = FakeEngine().option_probs([option])[0].to_json()
        con.execute("insert into responses(key, engine, op, request, response, created) values (?, ?, ?, ?, ?, 0)",
                    ["85aaf0373bc59f9f49e7a5e3aecada13f70c6e4abc22186acc7298ab34843832", "fake", "option_probs", dumps(option.key()), dumps(ans)])
    reader = Counting()
    assert cached(Store(old), reader).option_probs([option])[0].to_json() == ans and reader.batches == []
    assert Store(old).request("85aaf0373bc59f9f49e7a5e3aecada13f70c6e4abc22186acc7298ab34843832") == option.key()


@pytest.mark.fast
def test_interview_personas_store_bytes_per_persona(tmp_path):
    """Interview personas (the talk's "Ours": ten questions, format critic, one
    consistency-critic round) then surveyed: the store's bytes per persona stay
    a small multiple of the persona's own transcript, where every request used
    to repeat its whole prompt."""
    store = Store(tmp_path / "s.db")
    eng = cached(store, Counting())
    params = GenerationParams(interview_words=600)
    people = banks.generate(eng, store, "i", "interview", 6, seed=1, params=params, chunk=3)
    demo.survey(eng, store, people, demo.default_traits(), "w", chunk=3)
    own = sum(len(p.conditioning.encode()) for p in people) / len(people)
    with closing(sqlite3.connect(store.path)) as con:
        kept = (con.execute("select sum(length(request)) from responses").fetchone()[0]
                + con.execute("select sum(length(tail)) from texts").fetchone()[0]) / len(people)
    whole = sum(len(r[f]) for r in store.requests() for f in ("prefix", "suffix", "prompt") if f in r) / len(people)
    assert whole > 50 * own  # what the requests repeat when stored whole
    # The texts once (compressed) plus a ~70-byte reference per request: the fake engine's
    # answers trip the format critic often (~420 requests per persona), so that part dominates here.
    assert kept < whole / 8, (kept, whole, own)
