"""The simulated OpenAI-compatible server (agents.llm.simulated_server) and the
batching OpenAI engine against it: responses parse through the real ``openai``
client, answers repeat per prompt and seed, a planted truth comes back, list
prompts and ``n`` travel in one request, the counts add up, and the
service-time model queues what does not fit (checked by counting, not timing)."""
from __future__ import annotations

import json
import math
import threading
import time

import openai
import pytest

from agents.llm.base import EngineError, GenerateRequest, LoglikRequest, OptionRequest, SampleRequest
from agents.llm.langchain_engine import parse_letter
from agents.llm.openai_engine import OpenAIEngine
from agents.llm.simulated_server import (
    ServiceTime,
    SimulatedServer,
    Simulator,
    SimulatorConfig,
    SimulatorError,
    load_rules,
    read_question,
    rules_from_obj,
)

pytestmark = pytest.mark.fast

PARTY = "Question: Generally speaking, do you think of yourself as a Republican, a Democrat or an independent?\n"
RULES = [{
    "question": r"Republican, a Democrat",
    "facts": [
        {"pattern": r"\bRepublican\b", "weights": {"Republican": 8, "Democrat": 1, "Independent": 1}},
        {"pattern": r"\bDemocrat\b", "weights": {"Republican": 1, "Democrat": 8, "Independent": 1}},
        {"pattern": r"I am (\d+) years old", "min": 65, "weights": {"Independent": 3}},
    ],
}]


def party_prompt(persona: str, reverse: bool = False) -> str:
    opts = ["Republican", "Democrat", "Independent"]
    if reverse:
        opts = opts[::-1]
    body = "".join(f"({l}) {o}\n" for l, o in zip("ABC", opts))
    return f"{persona}\n\nPlease answer the following question.\n{PARTY}{body}Answer with (A), (B) or (C).\nAnswer: ("


def party_request(persona: str, reverse: bool = False) -> OptionRequest:
    p = party_prompt(persona, reverse)
    cut = p.index("Please answer")
    return OptionRequest(p[:cut], p[cut:], ("A", "B", "C"))


@pytest.fixture(scope="module")
def srv():
    with SimulatedServer(rules=RULES) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    c = openai.OpenAI(base_url=srv.base_url, api_key="EMPTY", max_retries=0)
    yield c
    c.close()


@pytest.fixture()
def engine(srv):
    e = OpenAIEngine.from_server(srv, concurrency=2, backoff=0.05)
    yield e
    e.close()


# ------------------------------------------------------------------ shapes through the real client


def test_models_and_completions_parse_through_openai(srv, client):
    assert [m.id for m in client.models.list().data] == ["simulated"]
    p = party_prompt("I am a Republican from Ohio.")
    r = client.completions.create(model="simulated", prompt=[p, "Tell me about yourself.\nAnswer:"], max_tokens=1,
                                  temperature=0.0, logprobs=5)
    assert [c.index for c in r.choices] == [0, 1]
    top = r.choices[0].logprobs.top_logprobs[0]
    assert 5 <= len(top) <= 6 and max(top, key=top.get) in ("A", " A")  # k (+ the sampled token), like vLLM
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens == 2
    r = client.completions.create(model="simulated", prompt=["Hello", "Tell me a story."], max_tokens=8, temperature=1.0, seed=3, n=3)
    assert [c.index for c in r.choices] == list(range(6))  # prompt-major, then samples
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)


def test_echo_returns_prompt_logprobs_and_offsets(client):
    text = "The capital of France is Paris"
    r = client.completions.create(model="simulated", prompt=text, max_tokens=0, echo=True, logprobs=0, temperature=0.0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text and "".join(lp.tokens) == text
    assert lp.token_logprobs[0] is None and all(v < 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset == [text.index(t.strip()) - (len(t) - len(t.lstrip())) for t in lp.tokens]


def test_chat_endpoint_answers_and_gives_logprobs(client):
    p = party_prompt("I am a Democrat.")[: -len("Answer: (")]
    r = client.chat.completions.create(model="simulated", messages=[{"role": "user", "content": p}], max_tokens=4,
                                       temperature=0.0, logprobs=True, top_logprobs=5)
    assert parse_letter(r.choices[0].message.content, ("A", "B", "C")) == "B"
    content = r.choices[0].logprobs.content
    assert content[0].token == "(" and content[1].token in ("B", " B") and len(content[1].top_logprobs) >= 5
    r = client.chat.completions.create(model="simulated", messages=[{"role": "user", "content": "Tell me about your town."}], max_tokens=12)
    assert r.choices[0].message.content.strip() and r.usage.completion_tokens <= 12


def test_wrong_model_and_path_answer_like_vllm(srv, client):
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    assert "no-such-model" in str(info.value)
    e = OpenAIEngine("no-such-model", srv.base_url, max_retries=2, backoff=0.01)
    with pytest.raises(EngineError) as info:
        e.option_probs([party_request("I am a Republican.")])
    e.close()
    assert str(info.value) == f"engine openai: model 'no-such-model' is not served at {srv.base_url}; it serves: simulated"
    bad = srv.base_url[: -len("/v1")]
    e = OpenAIEngine("simulated", bad, max_retries=1)
    with pytest.raises(EngineError) as info:
        e.generate([GenerateRequest("Hi", max_tokens=2)])
    e.close()
    msg = str(info.value)  # FastAPI's {"detail": "Not Found"}, as vLLM answers an unknown path
    assert msg.startswith(f"engine openai: {bad} answered 404 (") and msg.endswith("is the base URL right (it usually ends in /v1)?")


# ------------------------------------------------------------------ determinism


def test_same_prompt_and_seed_same_text_and_n_equals_seeds(client):
    def texts(prompt, seed, n=1, temperature=1.0):
        r = client.completions.create(model="simulated", prompt=prompt, max_tokens=20, temperature=temperature, seed=seed, n=n)
        return [c.text for c in r.choices]

    p = "Question: Tell me about yourself.\nAnswer:"
    a = texts(p, 5)
    assert a == texts(p, 5) and a != texts(p, 6) and a != texts("Question: Who are you?\nAnswer:", 5)
    assert texts(p, 5, n=3) == texts(p, 5) + texts(p, 6) + texts(p, 7)  # vLLM V1: child j has seed s + j
    assert texts(p, 1, temperature=0.0) == texts(p, 2, temperature=0.0)  # greedy ignores the seed


def test_server_seed_changes_answers():
    p = "Question: Tell me about yourself.\nAnswer:"
    a = Simulator(SimulatorConfig(seed=0)).completions({"model": "simulated", "prompt": p, "max_tokens": 30, "seed": 1})[1]
    b = Simulator(SimulatorConfig(seed=1)).completions({"model": "simulated", "prompt": p, "max_tokens": 30, "seed": 1})[1]
    c = Simulator(SimulatorConfig(seed=0)).completions({"model": "simulated", "prompt": p, "max_tokens": 30, "seed": 1})[1]
    assert a["choices"][0]["text"] == c["choices"][0]["text"] != b["choices"][0]["text"]


def test_stop_strings_and_max_tokens(client):
    p = "Question: Tell me about yourself.\nAnswer:"
    seen = {"stop": 0, "length": 0}
    for seed in range(30):
        r = client.completions.create(model="simulated", prompt=p, max_tokens=40, temperature=1.0, seed=seed, stop=["\nQuestion:"])
        c = r.choices[0]
        assert "\nQuestion:" not in c.text
        seen[c.finish_reason] += 1
        if c.finish_reason == "length":
            assert r.usage.completion_tokens == 40
    assert seen["stop"] > 0 and seen["length"] > 0
    r = client.completions.create(model="simulated", prompt=p, max_tokens=3, temperature=1.0, seed=1)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


# ------------------------------------------------------------------ planted truth


def test_planted_truth_recovered_through_the_engine(srv, engine):
    personas = ["I am a Republican from Ohio.", "I am a Democrat from Oregon.", "I am 70 years old and a Republican.",
                "I am 30 years old and like fishing."]
    reqs = [party_request(p, rev) for p in personas for rev in (False, True)]
    res = engine.option_probs(reqs)
    for req, r in zip(reqs, res):
        truth = srv.truth(req.prompt)
        assert truth is not None
        assert max(abs(a - b) for a, b in zip(r.probs, truth)) < 1e-9, (req.prompt[:40], r.probs, truth)
        assert 0 < r.outside_mass < 0.05
    # option order reversed: the same answer by its text
    rep, rep_rev = res[0], res[1]
    assert rep.probs[0] == pytest.approx(8 / 10) and rep_rev.probs[2] == pytest.approx(8 / 10)
    old = res[4]  # 70-year-old Republican: 8 x 1, 1, 1 x 3
    assert old.probs == pytest.approx([8 / 12, 1 / 12, 3 / 12])
    assert srv.truth("Tell me about yourself.") is None


def test_yes_no_checks_say_no_and_unruled_questions_hash(srv, engine):
    yn = [OptionRequest(f"Transcript {i}.\n\n", f"Question: Is answer {i} irrelevant?\n(A) {a}\n(B) {b}\nAnswer with (A) or (B).\nAnswer: (", ("A", "B"))
          for i in range(20) for a, b in (("Yes", "No"), ("No", "Yes"))]
    res = engine.option_probs(yn)
    p_yes = [(res[k].probs[0] + res[k + 1].probs[1]) / 2 for k in range(0, len(res), 2)]
    assert all(p < 0.5 for p in p_yes) and 0.02 < sum(p_yes) / len(p_yes) < 0.2
    other = [OptionRequest(f"Persona {i}.\n\n", "Question: Pick one.\n(A) x\n(B) y\n(C) z\n(D) w\nAnswer: (", tuple("ABCD")) for i in range(10)]
    res = engine.option_probs(other)
    assert len({tuple(round(p, 6) for p in r.probs) for r in res}) == 10  # hash-derived, one per prompt
    assert engine.option_probs(other) == res


def test_sampled_answers_parse(engine):
    reqs = [GenerateRequest(party_prompt("I am a Republican."), max_tokens=4, temperature=1.0, seed=s) for s in range(200)]
    gens = engine.generate(reqs)
    letters = [parse_letter(g.text, ("A", "B", "C")) for g in gens]
    parsed = [x for x in letters if x]
    assert len(parsed) >= 180  # some mass lies outside the options, like a real model
    assert 0.65 < parsed.count("A") / len(parsed) < 0.95  # planted 0.8


def test_rules_from_yaml_and_bad_rules(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - question: 'Republican, a Democrat'\n    weights: [1, 2, 1]\n    outside: 0.05\n")
    (rule,) = load_rules(f)
    assert rule.weights == (1.0, 2.0, 1.0)
    assert Simulator(SimulatorConfig(rules=(rule,))).truth(party_prompt("Anyone.")) == pytest.approx([0.25, 0.5, 0.25])
    with pytest.raises(SimulatorError) as info:
        rules_from_obj([{"question": "(", "facts": []}])
    assert "\n" not in str(info.value) and "rule 0" in str(info.value)
    (tmp_path / "r.json").write_text(json.dumps(RULES))
    assert load_rules(tmp_path / "r.json")[0].facts[2].min == 65
    assert read_question("no options here\nAnswer:") is None


# ------------------------------------------------------------------ batching and counting


def test_engine_batches_prompts_and_counts(srv, engine):
    srv.reset()
    e = OpenAIEngine.from_server(srv, concurrency=2, prompts_per_request=32)
    res = e.option_probs([party_request(f"Persona {i}, a Democrat.") for i in range(100)])
    assert len(res) == 100 and e.http_requests == {"option_probs": 4}  # 32 + 32 + 32 + 4
    st = srv.stats()
    assert st["by_kind"]["option_probs"] == {"requests": 4, "prompts": 100, "completions": 100}
    assert st["by_path"]["/v1/completions"] == 4
    lls = e.loglikelihood([LoglikRequest(f"Context {i}.", " Yes.") for i in range(40)])
    assert all(math.isfinite(x) and x < 0 for x in lls) and e.http_requests["loglikelihood"] == 2
    assert lls == e.loglikelihood([LoglikRequest(f"Context {i}.", " Yes.") for i in range(40)][::-1])[::-1]
    srv.reset()
    assert srv.stats()["requests"] == 1  # the stats request itself
    e.close()


def test_generate_batches_replay_identically(srv):
    """An answer depends on its request alone, not on what shared its HTTP request."""
    p = "Question: Tell me about yourself.\nAnswer:"
    reqs = [GenerateRequest(p, max_tokens=12, temperature=1.0, seed=s) for s in (10, 11, 12, 13, 40)]
    reqs += [GenerateRequest(f"Question: Describe day {i}.\nAnswer:", max_tokens=12, temperature=1.0, seed=7, stop=("\n",)) for i in range(5)]
    reqs += [GenerateRequest(p, max_tokens=12, temperature=0.0, seed=s) for s in (1, 2)]
    batched = OpenAIEngine.from_server(srv, concurrency=2)
    alone = OpenAIEngine.from_server(srv, concurrency=2, prompts_per_request=1)
    together = batched.generate(reqs + reqs[:2])
    one_by_one = [alone.generate([r])[0] for r in reqs]
    assert together[: len(reqs)] == one_by_one and together[-2:] == one_by_one[:2]
    # seeds 10..13 travel as one prompt with n=4; the 5 prompts sharing seed 7 as one list
    assert batched.http_requests["generate"] <= 4
    assert alone.http_requests["generate"] == len(reqs)
    assert together[-3].text == together[-4].text  # greedy: the seed changes nothing
    batched.close()
    alone.close()


def test_the_samples_of_one_prompt_are_one_http_request_and_the_samples_drawn_one_by_one(srv):
    """A survey's 40 samples of one prompt (more than prompts_per_request) travel
    as ONE request with n=40, and are the generations the 40 seeds give alone."""
    prompt = party_prompt("I am a Democrat from Ohio.")
    reqs = [SampleRequest(prompt, 40, 2, 1.0, 5), SampleRequest(prompt, 8, 2, 1.0, 2**31 - 3)]  # the second wraps past 2^31
    srv.reset()
    e = OpenAIEngine.from_server(srv, concurrency=2, prompts_per_request=32)
    got = e.sample(reqs)
    # the first: one request; the second's seeds wrap past 2^31 (not the server's seed + k): split there
    assert e.http_requests == {"generate": 3} and srv.stats()["by_kind"]["generate"] == {"requests": 3, "prompts": 3, "completions": 48}
    alone = OpenAIEngine.from_server(srv, concurrency=2, prompts_per_request=1)
    assert got == [[alone.generate([g])[0] for g in r.expand()] for r in reqs]
    assert len({g.text for g in got[0]}) > 1  # samples, not one answer repeated
    e.close()
    alone.close()


def test_service_time_queues_beyond_the_batch():
    svc = ServiceTime(latency_s=0.15, max_batch=2)
    with SimulatedServer(service=svc) as s:
        e = OpenAIEngine.from_server(s, concurrency=6, prompts_per_request=1)
        t0 = time.monotonic()
        e.generate([GenerateRequest(f"Hello {i}", max_tokens=2, temperature=1.0, seed=i) for i in range(6)])
        elapsed = time.monotonic() - t0
        st = s.stats()
        e.close()
    assert st["max_inflight_sequences"] == 2  # never more than the batch
    assert st["queued_requests"] >= 3 and st["max_inflight_requests"] >= 4  # the rest waited in line
    assert elapsed >= 3 * 0.15  # six 0.15 s sequences, two at a time (sleeps only ever run long)


def test_concurrent_clients_share_the_simulator(srv):
    errors = []

    def worker(k):
        try:
            with OpenAIEngine.from_server(srv, concurrency=2) as e:
                e.option_probs([party_request(f"Worker {k} persona {i}.") for i in range(40)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


def _cot_prompt(k: int) -> str:
    from mechanisms import prompts

    task = prompts.cot_rank_task("Should the voting age be lowered to 16?", "I think it should not.",
                                 [f"Statement {i}: the group's view, worded its own way." for i in range(k)],
                                 "The previous statement.", "Too vague.", "observer")
    return prompts.text_prompt("You rank statements.", task, "Answer", "chatml")[0]


def test_chain_of_thought_rankings_parse_at_the_rank_rate_and_none_at_zero(engine):
    """The Habermas Machine's ranking prompt gets an answer in its template (a
    strict ranking between <sep> and </answer>) at ``rank_rate`` per prompt and
    seed, as an instruction-tuned model mostly answers -- not prose that no parser
    reads, which made every ranking of a consensus benchmark retry eight times and
    fall back to ratings -- and with ``--rank-rate 0`` none does (the worst case,
    through the server's command line)."""
    from mechanisms.cot_ranking import parse_ranking
    from mechanisms.mediators import COT_STOP

    prompt = _cot_prompt(16)
    reqs = [GenerateRequest(prompt, 400, 0.7, COT_STOP, seed) for seed in range(300)]
    parsed = [parse_ranking(g.text, 16) for g in engine.generate(reqs)]
    rate = sum(p.order is not None for p in parsed) / len(parsed)
    assert 0.84 <= rate <= 0.96, rate  # 0.9 by default, 300 draws
    assert len({p.order for p in parsed if p.order}) > 200  # random strict rankings, all 16 letters
    assert all(p.where == "sep" for p in parsed if p.order)
    with SimulatedServer(rank_rate=0.0) as never:
        eng = OpenAIEngine.from_server(never)
        try:
            assert not any(parse_ranking(g.text, 16).order for g in eng.generate(reqs[:60]))
        finally:
            eng.close()
