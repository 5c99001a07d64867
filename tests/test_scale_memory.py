"""Paper scale (issue 24): every phase works through personas in chunks, and the
store holds each long text once.

Real SQLite stores; the fake engine (hash-of-the-prompt answers) stands in for
a model, since what is measured is what surrounds it: how many requests exist
at once, what is committed when, how many bytes the store keeps.
"""
from __future__ import annotations

import json
import random
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from agents import bank as banks
from agents import demographics as demo
from agents.backstories import GenerationParams
from agents.llm.base import Engine, GenerateRequest, LoglikRequest, OptionRequest
from agents.llm.cache import CachedEngine
from agents.llm.fake_engine import FakeEngine
from core.persona_record import PersonaRecord
from core.seeds import derive_seed
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
    """The n samples of one survey prompt are one request; expanded, n adjacent
    generations on ONE prompt string (memory: not n copies of the backstory) with
    consecutive seeds (a server draws them as one n-sample request)."""
    req = demo.sample_request("x" * 10_000 + "Answer: (", 10_000, "b:0", "party", 40)
    gens = req.expand()
    assert len({id(g.prompt) for g in gens}) == 1 and {g.prefix_len for g in gens} == {10_000}
    base = derive_seed("b:0", "party")
    assert [g.seed for g in gens] == [(base + k) & 0x7FFFFFFF for k in range(40)]


def _responses_by_op(path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as db:
        return dict(db.execute("select op, count(*) from responses group by op").fetchall())


class OneByOne(Engine):
    """An engine with no ``sample`` of its own: each sample reaches the cache as
    its own generation, as Personae stored sampled surveys before December 2026."""

    def __init__(self, inner: Engine) -> None:
        super().__init__()
        self.inner = inner

    def option_probs(self, requests):
        return self.inner.option_probs(requests)

    def generate(self, requests):
        return self.inner.generate(requests)


@pytest.mark.fast
def test_a_sampled_survey_stores_one_answer_per_persona_and_trait(tmp_path):
    """40 samples of one prompt are one stored answer (not 40 rows, each with
    its own key and lease), with the same counts as the samples drawn one by one."""
    people, n = personas(6, 600), 40
    store = Store(tmp_path / "s.db")
    got = demo.survey(cached(store, Counting()), store, people, TRAITS, "w", method="sample", n_samples=n)
    assert _responses_by_op(tmp_path / "s.db") == {"sample": len(people) * len(TRAITS)}

    one_by_one = Store(tmp_path / "o.db")
    assert demo.survey(OneByOne(cached(one_by_one, FakeEngine())), one_by_one, people, TRAITS, "w", method="sample", n_samples=n) == got
    assert _responses_by_op(tmp_path / "o.db") == {"generate": len(people) * len(TRAITS) * n}


@pytest.mark.fast
def test_a_store_holding_samples_one_by_one_answers_the_survey_without_the_engine(tmp_path):
    """A store that keeps each sample as its own generation (made before a sample
    was one answer) is read, not asked again: a survey on it makes no engine call
    and gets the same distributions; a sample missing from it is computed."""
    people, n = personas(5, 600), 40
    store = Store(tmp_path / "s.db")
    before = demo.survey(OneByOne(cached(store, FakeEngine())), store, people, TRAITS, "w0", method="sample", n_samples=n)
    engine = Counting()
    again = cached(store, engine)
    assert demo.survey(again, store, people, TRAITS, "w1", method="sample", n_samples=n) == before
    assert engine.batches == [] and again.misses == 0 and again.hits == len(people) * len(TRAITS)
    # ... and kept as one answer per prompt from then on (read whole next time)
    assert _responses_by_op(tmp_path / "s.db") == {"generate": len(people) * len(TRAITS) * n, "sample": len(people) * len(TRAITS)}

    # One more sample per prompt: not all of the request's samples are stored, so it is asked.
    more = cached(store, Counting())
    demo.survey(more, store, people[:1], TRAITS, "w2", method="sample", n_samples=n + 1)
    assert more.misses == len(TRAITS)

    # A replay (no engine at all) of such a store reads them too, and writes nothing.
    reqs = [demo.sample_request(f"{p.conditioning}Q: {t.trait}", len(p.conditioning), p.persona_id, t.trait, n) for p in people for t in TRAITS]
    expanded = cached(store, FakeEngine()).generate([g for r in reqs for g in r.expand()])
    rows = _responses_by_op(tmp_path / "s.db")
    assert [g for got in CachedEngine(Store(store.path, readonly=True), FP, None).sample(reqs) for g in got] == expanded
    assert _responses_by_op(tmp_path / "s.db") == rows


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
    assert requests[1] == store.count_responses() == 12 * (4 + 6)
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
    backstory = store.texts.sha(long_prefix.encode())
    with closing(sqlite3.connect(store.path)) as con:
        (text_id,) = con.execute("select id from texts where sha = ?", [backstory]).fetchone()
        # One backstory under five requests: each names it by id ([field, text id, rest]).
        assert sorted(json.loads(r)[:2] for (r,) in con.execute("select request from responses")) == (
            [["prefix", text_id]] * 3 + [["prompt", text_id]] * 2)

    # A store written before texts were shared (whole requests inline) still answers.
    from core.canonical import dumps

    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as con, con:  # the layout of stores made before the compact one
        con.execute("create table responses (key text primary key, engine text, op text, request text, response text, created float)")
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


def legacy_store(path: Path) -> Store:
    """A store in the layout of stores made before the compact one (one JSON row
    per request with its whole key), as such a store's file holds it."""
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("create table responses (key text primary key, engine text, op text, request text, response text, created float)")
    store = Store(path)
    assert not store.compact
    return store


def vacuumed_bytes(path: Path) -> int:
    with closing(sqlite3.connect(path)) as con:
        con.execute("vacuum")
        con.execute("pragma wal_checkpoint(truncate)")  # WAL mode: the vacuumed pages land in the WAL first
    return path.stat().st_size


@pytest.mark.fast
def test_an_interview_population_stores_at_most_3x_its_transcripts_and_old_stores_keep_their_layout(tmp_path):
    """The talk's interview personas (ten questions, 2,500-word budget, format
    critic, one consistency round) generated against the simulator writing
    prose-like text (as compressible as English): the compact layout's store grows
    by at most 3x the transcripts (it was ~10x); the same run into a store of the
    earlier layout is written in that layout, costs more than 3x, and reads back
    the same personas and answers."""
    from agents.llm.openai_engine import OpenAIEngine
    from agents.llm.simulated_server import SimulatedServer

    params = GenerationParams(interview_questions=10, interview_words=2500, critic=True, consistency_rounds=1)
    stores = {"compact": Store(tmp_path / "compact.db"), "legacy": legacy_store(tmp_path / "legacy.db")}
    empty = {k: vacuumed_bytes(s.path) for k, s in stores.items()}
    people, engines = {}, {}
    with SimulatedServer(mean_tokens=300, text="prose") as sim:
        for name, store in stores.items():
            engine = OpenAIEngine.from_server(sim, concurrency=8)
            engines[name] = CachedEngine(store, engine.fingerprint(), lambda engine=engine: engine)
            people[name] = banks.generate(engines[name], store, "i", "interview", 16, seed=1, params=params, chunk=8)
            engine.close()
    own = sum(len(p.conditioning.encode()) for p in people["compact"])
    growth = {k: vacuumed_bytes(s.path) - empty[k] for k, s in stores.items()}
    assert growth["compact"] <= 3 * own, (growth, own)
    assert growth["legacy"] > 3 * own  # what the compact layout saves
    assert stores["compact"].compact and not Store(tmp_path / "legacy.db").compact

    # Both layouts read back the same personas, requests and answers.
    def read(store: Store) -> list[PersonaRecord]:
        return [replace(p, created=None) for p in Store(store.path).personas("i")]  # stored at another time

    assert read(stores["compact"]) == read(stores["legacy"]) == [replace(p, created=None) for p in people["compact"]]
    assert engines["compact"].misses == engines["legacy"].misses  # the same requests, each sent once
    compact, legacy = (Store(s.path) for s in stores.values())
    assert sorted(json.dumps(r, sort_keys=True) for r in compact.requests()) == sorted(json.dumps(r, sort_keys=True) for r in legacy.requests())
    assert compact.count_responses() == legacy.count_responses() > 16 * 100
    with closing(sqlite3.connect(legacy.path)) as con:
        sample = [k for (k,) in con.execute("select key from responses order by key limit 200")]
    assert compact.get_responses(sample) == legacy.get_responses(sample)


@pytest.mark.fast
def test_a_generated_text_is_stored_once_and_texts_that_quote_it_refer_to_it(tmp_path):
    """A generated answer, then a critic's prompt that quotes it and a transcript that
    extends the prompt with it: the answer's characters are stored once; every text
    reads back exactly."""
    store = Store(tmp_path / "s.db")
    rng = random.Random(3)
    answer = " " + words(rng, 3000).strip().replace("\n\n", " ")
    question = "Question: Tell me the story of your life, from your childhood to today, in as much detail as you like.\nAnswer:"
    critic = "Here is one answer from an interview.\n" + question + " " + answer.strip() + "\n\n"
    transcript = question + " " + answer.strip() + "\n\n"
    with store.db.conn:
        q_id = store.texts.put(question, quotable=True)
        a_id = store.texts.put(answer, quotable=True)
        ids = [store.texts.put(t) for t in (critic, transcript, transcript + question)]
    assert [store.text(i) for i in (q_id, a_id, *ids)] == [question, answer, critic, transcript, transcript + question]
    with closing(sqlite3.connect(store.path)) as con:
        stored = con.execute("select sum(length(tail)) from texts").fetchone()[0]
        rows = dict(con.execute("select id, tail from texts"))
    assert stored < len(answer) + 600  # the answer once (random letters barely compress), the rest ~100 bytes each
    assert all(rows[i][:1] == b"\x00" for i in ids[:2])  # quoting: literals and references
    assert Store(store.path, readonly=True).text(ids[2]) == transcript + question  # extends the transcript: parent + tail


@pytest.mark.fast
def test_quotes_are_looked_up_exactly_where_a_quoted_text_can_start():
    """The places a quote may start, as defined: the text's start, a line's, after
    ": " or after a quotation mark, at a non-space character -- on random strings of
    the characters that make them overlap (": " then '"', a line starting with '"')."""
    from core.texts import QUOTE_AT

    def places(t: str) -> list[int]:
        return [p for p in range(len(t)) if not t[p].isspace()
                and (p == 0 or t[p - 1] in '\n"' or t[max(0, p - 2):p] == ": ")]

    rng = random.Random(5)
    for _ in range(3000):
        t = "".join(rng.choice(['"', ":", " ", "\n", "a", ": ", '": "']) for _ in range(rng.randrange(0, 24)))
        assert [m.end() for m in QUOTE_AT.finditer(t)] == places(t), repr(t)


@pytest.mark.fast
def test_a_text_whose_transaction_did_not_commit_is_never_quoted(tmp_path):
    """A generated text stored in a transaction that fails (a full disk, a kill
    caught by the caller) is gone: a later text must hold its own copy, not a
    reference to the missing row."""
    store = Store(tmp_path / "s.db")
    answer = " " + words(random.Random(5), 400).strip().replace("\n\n", " ")
    with pytest.raises(RuntimeError), store.writing_texts("saving engine answers"):
        store.texts.put(answer, quotable=True)
        raise RuntimeError("the transaction fails after the answer was stored")
    quoting = "Here is one answer from an interview.\nAnswer: " + answer.strip() + "\n\n"
    with store.writing_texts("saving engine answers"):
        text_id = store.texts.put(quoting)
    assert Store(store.path, readonly=True).text(text_id) == quoting


@pytest.mark.fast
def test_a_text_stored_as_an_extension_then_generated_is_quoted_whole(tmp_path):
    """A generated text may equal a text stored earlier as another's extension
    (parent + tail): quoting it must read it whole, not its tail."""
    store = Store(tmp_path / "s.db")
    rng = random.Random(9)
    head = words(rng, 300)                      # ends with a paragraph break
    extension = head + words(rng, 300).strip()  # stored as head + tail
    with store.writing_texts("saving engine answers"):
        store.texts.put(head)
        ext_id = store.texts.put(extension)
        assert store.texts.put(extension, quotable=True) == ext_id  # the same text, generated later
        quoting_id = store.texts.put("Here is one answer from an interview.\nAnswer: " + extension.strip() + "\n\n")
    assert Store(store.path).text(quoting_id) == "Here is one answer from an interview.\nAnswer: " + extension.strip() + "\n\n"


@pytest.mark.fast
def test_two_writers_storing_the_same_text_share_its_row(tmp_path):
    """Two runs on one store save the same new text (a question every persona is
    asked): the one that comes second between its lookup and its insert keeps the
    first one's row instead of failing (and losing its computed answers)."""
    first, second = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    text = words(random.Random(2), 500)
    look_up = first.texts._longest_stored_prefix
    theirs = []

    def meanwhile(data):  # after first's lookup found nothing, before its insert
        with second.writing_texts("saving engine answers"):
            theirs.append(second.texts.put(text))
        return look_up(data)

    first.texts._longest_stored_prefix = meanwhile
    with first.writing_texts("saving engine answers"):
        mine = first.texts.put(text)
    assert [mine] == theirs and first.text(mine) == text


@pytest.mark.fast
def test_only_an_exact_option_result_is_packed():
    """The packed form is used only when it reads back equal; any other shape is JSON."""
    from core import answer_codec as codec

    full = {"method": "sampling:40", "outside_mass": 0.0, "probs": [0.25, 0.75]}
    assert codec.unpack(codec.pack_option(full)) == full
    assert codec.unpack(codec.pack_option({**full, "method": "logprobs"})) == {**full, "method": "logprobs"}
    for odd in ({"outside_mass": 0.0, "probs": [1.0]}, {**full, "method": ""}, {**full, "method": None},
                {**full, "probs": [1, 0]}, {**full, "extra": 1}):
        assert codec.pack_option(odd) is None


@pytest.mark.fast
def test_a_compact_store_missing_the_persona_text_column_gets_it_back(tmp_path):
    """The column that holds a persona's text reference is added on open when missing
    (a store created by a process killed between two schema statements)."""
    store = Store(tmp_path / "s.db")
    with closing(sqlite3.connect(store.path)) as con, con:
        con.execute("alter table personas drop column conditioning_text")
    store = Store(tmp_path / "s.db")
    people = personas(2, 3000)
    store.put_personas(people)
    assert Store(store.path, readonly=True).personas("b") == [replace(p, created=q.created) for p, q in zip(people, store.personas("b"))]


@pytest.mark.fast
def test_a_population_read_from_the_store_holds_its_ids_not_its_texts(tmp_path):
    """Personas read back from a store keep a reference to their text, read when a
    prompt needs it (a few recent ones cached): 2,000 personas of 8 KB (16 MB of
    text) cost their ids, and every prompt still carries the whole text."""
    import gc
    import tracemalloc

    import mesa

    from agents.persona import PersonaAgent
    from agents.questions import Question

    def people() -> list[PersonaRecord]:
        return [PersonaRecord(f"b:{i}", "b", i, "imported", random.Random(i).randbytes(4000).hex() + "\n\n") for i in range(2000)]

    store = Store(tmp_path / "s.db")
    store.put_personas(people())
    texts = 2000 * 8002
    gc.collect()
    tracemalloc.start()
    read = store.personas("b")
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < texts / 10, (held, texts)
    again = people()
    assert [p.conditioning for p in read[::97]] == [p.conditioning for p in again[::97]]
    assert read[5] == replace(again[5], created=read[5].created)

    agent = PersonaAgent(mesa.Model(seed=1), read[7], seed=0, reverse=False)
    request = agent.ask(Question.make("q", "Do you vote?", ["Yes", "No"]))
    assert request.prefix.startswith(again[7].conditioning)
    assert len(store.persona_texts._recent) <= store.persona_texts._size
