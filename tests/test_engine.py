"""The in-process engine on the real embedded model, and the response cache."""
from __future__ import annotations

import numpy as np
import pytest

from agents.llm.base import EngineError, GenerateRequest, LoglikRequest, OptionRequest, option_letters
from agents.llm.cache import CachedEngine, ReplayMiss
from agents.llm.factory import EngineConfig, make_engine
from agents.questions import Question, display_order, map_back, option_request

BACKSTORY = (
    "Question: Tell me about yourself.\nAnswer: I am 54 years old and grew up in Oceanport, New Jersey. "
    "I coach Little League and love classic rock. I worked in marketing for fifteen years.\n\n"
)
GMO = Question.make("q", "How likely is it that genetically modified foods will lead to health problems?", ["Very likely", "Fairly likely", "Not too likely", "Not at all likely"])
ARITH = Question.make("a", "What is two plus two?", ["Four", "Seven", "Nine"])


def test_distributions_sum_to_one_and_report_outside_mass(engine):
    reqs = [option_request(BACKSTORY, GMO, display_order(4, False)), option_request("", ARITH, display_order(3, False))]
    for res in engine.option_probs(reqs):
        assert abs(sum(res.probs) - 1) < 1e-9
        assert all(p >= 0 for p in res.probs)
        assert 0 <= res.outside_mass < 0.5  # the prompt ends at "Answer: (": letters hold most mass


def test_prefix_reuse_equals_full_prompt(engine):
    cached = engine.option_probs([option_request(BACKSTORY, GMO, [0, 1, 2, 3])])[0]
    full = engine.option_probs([OptionRequest(prefix="", suffix=BACKSTORY + option_request("", GMO, [0, 1, 2, 3]).suffix, options=option_letters(4))])[0]
    assert cached.probs == full.probs  # bit for bit: see tests/test_batch_invariance.py
    assert engine.stats.cached_prompt_tokens > 0


def test_batch_equals_one_at_a_time(engine):
    reqs = [
        option_request(BACKSTORY, GMO, [0, 1, 2, 3]),
        option_request(BACKSTORY * 2, GMO, [3, 2, 1, 0]),
        option_request("I am a retired nurse from Ohio.\n\n", ARITH, [0, 1, 2]),
    ]
    together = engine.option_probs(reqs)
    for req, res in zip(reqs, together):
        alone = engine.option_probs([req])[0]
        assert alone.probs == res.probs


def test_questions_packed_on_one_prefix_equal_one_at_a_time(engine):
    """Several questions to one cached backstory are packed into one row with a
    block mask (agents/llm/packed_attention.py); each must
    come out as if asked alone, also beside rows with other or no prefixes."""
    other = "I am a retired nurse from Ohio who loves gardening.\n\n"
    reqs = [option_request(BACKSTORY, q, order) for q, order in ((GMO, [0, 1, 2, 3]), (GMO, [3, 2, 1, 0]), (ARITH, [0, 1, 2]), (ARITH, [2, 0, 1]))]
    reqs += [option_request(other, GMO, [0, 1, 2, 3]), option_request("", ARITH, [1, 2, 0])]
    together = engine.option_probs(reqs)
    for req, res in zip(reqs, together):
        alone = engine.option_probs([req])[0]
        assert alone.probs == res.probs and alone.outside_mass == res.outside_mass
    conts = ["Question: What", "Question: zebra", "I am happy."]
    packed = engine.loglikelihood([LoglikRequest(BACKSTORY, c) for c in conts])
    for c, score in zip(conts, packed):
        assert engine.loglikelihood([LoglikRequest(BACKSTORY, c)])[0] == score



def test_words_shared_by_questions_are_evaluated_once_with_the_same_answers(engine):
    """A persona's questions share the instruction and "Question: How ..." after
    its declared prefix; the engine evaluates that run once per persona and the
    distributions stay those of each full prompt evaluated alone."""
    qs = [Question.make(f"s{j}", f"How much do you agree with statement number {j}?", ["Agree", "Disagree", "Not sure"]) for j in range(4)]
    reqs = [option_request(BACKSTORY, q, [0, 1, 2]) for q in qs]
    suffix_tokens = sum(len(engine.tok(r.suffix, add_special_tokens=False).input_ids) for r in reqs)
    engine._prefixes.clear()
    engine.option_probs([option_request(BACKSTORY, ARITH, [0, 1, 2])])  # caches the backstory
    before = engine.stats.prompt_tokens
    shared = engine.option_probs(reqs)
    evaluated = engine.stats.prompt_tokens - before
    common = len(engine.tok(reqs[0].suffix.split(" number")[0], add_special_tokens=False).input_ids)
    assert evaluated <= suffix_tokens - 3 * (common - 1)  # the common run counted once, not four times
    engine.share_prefixes = False
    try:
        for req, res in zip(reqs, shared):
            engine._prefixes.clear()
            full = engine.option_probs([OptionRequest("", req.prefix + req.suffix, req.options)])[0]
            assert full.probs == res.probs
    finally:
        engine.share_prefixes = True

def test_reversed_order_maps_back_to_the_same_options(engine):
    """Mapping back is an exact permutation: option content keeps its probability.

    The reversed request shows (A) Nine (B) Seven (C) Four; mapped back, index 0
    ("Four") must carry what the engine gave letter C, and so on. (Forward and
    reversed distributions themselves differ by the model's letter bias: for
    SmolLM2-135M, total variation 0.02-0.15 on our probes, a model property.)
    """
    rev = engine.option_probs([option_request("", ARITH, [2, 1, 0])])[0]
    back = map_back(rev.probs, [2, 1, 0])
    assert back[0] == rev.probs[2] and back[2] == rev.probs[0] and back[1] == rev.probs[1]
    fwd = map_back(engine.option_probs([option_request("", ARITH, [0, 1, 2])])[0].probs, [0, 1, 2])
    assert abs(back.sum() - 1) < 1e-9 and 0.5 * np.abs(fwd - back).sum() < 0.5


def test_generation_seeded_stops_and_limits(engine):
    prompt = BACKSTORY + "Question: What do you enjoy on weekends?\nAnswer:"
    a, b, c = engine.generate(
        [
            GenerateRequest(prompt, max_tokens=24, temperature=1.0, seed=7, prefix_len=len(BACKSTORY)),
            GenerateRequest(prompt, max_tokens=24, temperature=1.0, seed=7),
            GenerateRequest(prompt, max_tokens=24, temperature=1.0, seed=8),
        ]
    )
    assert a.text and a.text == b.text  # same seed, same text, with or without the prefix cache
    assert a.text != c.text
    assert a.n_tokens <= 24
    stopped = engine.generate([GenerateRequest(prompt, max_tokens=40, temperature=1.0, seed=7, stop=(" ",))])[0]
    assert " " not in stopped.text.strip() and stopped.finish_reason == "stop"


def test_loglikelihood_prefers_the_plausible_continuation(engine):
    good, bad = engine.loglikelihood([LoglikRequest(BACKSTORY, "Question: What"), LoglikRequest(BACKSTORY, "Question: zebra")])
    assert good > bad


def test_second_identical_run_makes_no_engine_call(store, engine):
    calls = []

    def factory():
        calls.append(1)
        return engine

    cached = CachedEngine(store, {"kind": "transformers", "model": "embedded-test"}, factory)
    reqs = [option_request(BACKSTORY, GMO, [0, 1, 2, 3]), option_request(BACKSTORY, ARITH, [0, 1, 2])]
    gens = [GenerateRequest(BACKSTORY + "Question: Hi?\nAnswer:", max_tokens=8, seed=1)]
    first = cached.option_probs(reqs), cached.generate(gens)
    assert cached.misses == 3 and len(calls) == 1
    again = CachedEngine(store, {"kind": "transformers", "model": "embedded-test"}, factory)
    second = again.option_probs(reqs), again.generate(gens)
    assert again.misses == 0 and again.hits == 3
    assert not again.loaded  # the model was never even loaded
    assert [r.probs for r in first[0]] == [r.probs for r in second[0]]
    assert first[1][0].text == second[1][0].text
    replay = CachedEngine(store, {"kind": "transformers", "model": "embedded-test"}, None)
    with pytest.raises(ReplayMiss):
        replay.option_probs([option_request("new prefix\n\n", GMO, [0, 1, 2, 3])])


@pytest.mark.fast
def test_bad_engine_config_is_one_line(tmp_path):
    from scenarios.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as e:
        validate_config({"name": "x", "scenario": "gss_spending", "engine": {"kind": "gpt9"}}, "s.yaml")
    assert "\n" not in str(e.value) and "s.yaml: engine.kind" in str(e.value)
    with pytest.raises(EngineError) as e:
        make_engine(EngineConfig(model=str(tmp_path / "missing")))
    assert "\n" not in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(EngineError) as e:
        make_engine(EngineConfig(kind="openai"))
    assert "endpoints" in str(e.value)


def test_factory_builds_served_engines_from_config():
    from agents.llm.langchain_engine import LangChainEngine
    from agents.llm.openai_engine import OpenAIEngine

    eng = make_engine(EngineConfig(kind="openai", model="m", endpoints=["http://127.0.0.1:9/v1", "http://localhost:9/v1"], retries=1))
    assert isinstance(eng, OpenAIEngine)
    lc = make_engine(EngineConfig(kind="langchain", model="m", endpoints=["http://127.0.0.1:9/v1"]))
    assert isinstance(lc, LangChainEngine)
    with pytest.raises(EngineError) as e:  # nothing listens on port 9: one line after the retries
        eng.option_probs([option_request("", ARITH, [0, 1, 2])])
    assert "\n" not in str(e.value) and "127.0.0.1:9" in str(e.value) or "localhost:9" in str(e.value)
