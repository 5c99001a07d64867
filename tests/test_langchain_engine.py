"""The LangChain chat-model adapter.

Unit tests run on LangChain's fake chat model (no logprobs: the adapter must fall
back to sampling). The ``vllm`` tests drive ``ChatOpenAI`` against the real vLLM
server's chat endpoint (session fixture ``vllm_server``) both ways: logprobs,
and forced sampling.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from tolerances import TV_ARITH, sampled_tv_bound, truncated_mass, tv

from agents.llm.base import GenerateRequest, OptionRequest, option_letters
from agents.llm.langchain_engine import LangChainEngine, parse_letter
from agents.llm.openai_engine import OpenAIEngine

SYSTEM = "You answer survey questions. Reply with the letter of one option only."
PERSONA = (
    "Question: Tell me about yourself.\nAnswer: I am 58 and grew up on a dairy farm in Wisconsin. "
    "I go to church most Sundays and I worry about prices.\n\n"
    "Please answer the following question keeping in mind your previous answers.\n"
)
QUESTIONS = [
    ("How often do you attend religious services?", ["Never", "A few times a year", "Once a month", "Every week"]),
    ("Do you think the country's economy is getting better or worse?", ["Better", "About the same", "Worse"]),
    ("Would you describe where you grew up as", ["A big city", "A suburb", "A small town", "A rural area"]),
]


def requests() -> list[OptionRequest]:
    out = []
    for q, opts in QUESTIONS:
        letters = option_letters(len(opts))
        body = "".join(f"({l}) {o}\n" for l, o in zip(letters, opts))
        out.append(OptionRequest(PERSONA, f"Question: {q}\n{body}Answer:", letters))
    return out


def joint(r) -> list[float]:
    """Probabilities of (each letter ..., no letter): what one sampled answer is drawn from."""
    return [p * (1 - r.outside_mass) for p in r.probs] + [r.outside_mass]


# ------------------------------------------------------------------ no server


def test_parse_letter():
    opts = ("A", "B", "C", "D")
    assert parse_letter("(B) Sometimes", opts) == "B"
    assert parse_letter(" C", opts) == "C"
    assert parse_letter("D. Every week", opts) == "D"
    assert parse_letter("I think the answer is (A)", opts) == "A"
    assert parse_letter("I would say B", opts) == "B"
    assert parse_letter("Every week", opts) is None
    assert parse_letter("(E)", opts) is None


def test_walk_through_an_opening_parenthesis():
    # P(A) = P("A") + P("(") * P("A" | "(") ; the rest of the mass is outside.
    content = [
        {"token": "(", "logprob": math.log(0.6),
         "top_logprobs": [{"token": "(", "logprob": math.log(0.6)}, {"token": "A", "logprob": math.log(0.2)},
                          {"token": " B", "logprob": math.log(0.1)}]},
        {"token": "A", "logprob": math.log(0.5),
         "top_logprobs": [{"token": "A", "logprob": math.log(0.5)}, {"token": "B", "logprob": math.log(0.3)},
                          {"token": "Hmm", "logprob": math.log(0.2)}]},
        {"token": ")", "logprob": 0.0, "top_logprobs": [{"token": "C", "logprob": math.log(0.9)}]},  # after the answer: ignored
    ]
    r = LangChainEngine._letters_from_positions(content, ("A", "B", "C"))
    a, b = 0.2 + 0.6 * 0.5, 0.1 + 0.6 * 0.3
    assert np.allclose(r.probs, [a / (a + b), b / (a + b), 0.0])
    assert math.isclose(r.outside_mass, 1 - a - b)


def test_auto_falls_back_to_sampling_without_logprobs():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    fake = FakeListChatModel(responses=["(B) Sometimes", "A", "I am not sure", "B"])
    eng = LangChainEngine(fake, samples=8, resample_rounds=0)
    res = eng.option_probs([OptionRequest("", "Question: ?\n(A) x\n(B) y\nAnswer:", ("A", "B"))])[0]
    assert res.method == "sampling:8" and eng.mode == "sampling" and not eng.exact_distributions
    assert "no logprobs" in eng.fallback_reason
    # The fake cycles through its 4 answers; the logprobs probe used one of them.
    assert math.isclose(sum(res.probs), 1) and 0 < res.outside_mass < 0.5
    assert res.probs[1] > res.probs[0]


# ------------------------------------------------------------------ against vLLM's chat endpoint


@pytest.fixture(scope="module")
def chat(vllm_server):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=vllm_server.name, base_url=vllm_server.base_url, api_key="EMPTY", timeout=120, max_retries=1)


def chat_prompt(r: OptionRequest) -> str:
    """The prompt vLLM builds from [system, user] with the model's chat template."""
    from transformers import AutoTokenizer

    from agents.llm.embedded import hf_folder

    tok = AutoTokenizer.from_pretrained(str(hf_folder()))
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r.prompt}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


@pytest.mark.vllm
def test_logprobs_mode_matches_the_completions_endpoint(chat, vllm_server):
    reqs = requests()
    first = LangChainEngine(chat, system=SYSTEM, answer_tokens=1)  # only the first answer token
    got = first.option_probs(reqs)
    assert first.mode == "logprobs" and first.exact_distributions
    # Same numbers as the completions endpoint on the chat-templated prompt.
    with OpenAIEngine.from_server(vllm_server) as raw:
        want = raw.option_probs([OptionRequest(chat_prompt(r), "", r.options) for r in reqs])
    for r, g, w in zip(reqs, got, want):
        assert g.method == "logprobs" and math.isclose(sum(g.probs), 1)
        # One float32 server, two endpoints: the same arithmetic up to operation order
        # (tests/tolerances.py), and each side may miss letter variants outside its top-20.
        lost = truncated_mass(vllm_server, chat_prompt(r), r.options)
        option_mass = 1 - w.outside_mass
        assert tv(g.probs, w.probs) <= TV_ARITH + 2 * lost / option_mass, (g, w, lost)
        assert abs(g.outside_mass - w.outside_mass) <= 2 * TV_ARITH + 2 * lost, (g, w, lost)
    # Walking past an opening "(" only adds letter mass. This is a claim about the model,
    # not the arithmetic: the 0.03 slack is the model's margin on these prompts, and with a
    # float32 server it moves by at most ~1e-3 between CPUs (tests/tolerances.py).
    walked = LangChainEngine(chat, system=SYSTEM).option_probs(reqs)
    for g, w in zip(walked, got):
        assert g.outside_mass <= w.outside_mass + 0.03


@pytest.mark.vllm
def test_sampling_mode_estimates_the_same_distribution(vllm_server):
    from langchain_openai import ChatOpenAI

    # The served model without the run-time-LoRA server's zero adapter (see
    # agents/llm/vllm_lora.RAW_SUFFIX): the same weights on vLLM's plain path,
    # several times faster for the k samples; no adapter runs during this test.
    chat = ChatOpenAI(model=getattr(vllm_server, "raw_name", vllm_server.name), base_url=vllm_server.base_url, api_key="EMPTY", timeout=120, max_retries=1)
    reqs = requests()[::2]
    exact = LangChainEngine(chat, system=SYSTEM, answer_tokens=1).option_probs(reqs)
    # One-token answers at temperature 1 are draws from the distribution read above.
    # vLLM runs n=k as k sequences that each evaluate the prompt's uncached tail
    # (~0.05 s each here), so k stays small; the samples are seeded, so not flaky.
    k = 50
    sampler = LangChainEngine(chat, mode="sampling", samples=k, sample_tokens=1, resample_rounds=0, system=SYSTEM)
    got = sampler.option_probs(reqs)
    assert sampler.stats.generated_tokens >= k * len(reqs)
    for g, e in zip(got, exact):
        assert g.method == f"sampling:{k}" and math.isclose(sum(g.probs), 1)
        # Each sample is one draw over (letters..., anything else): compare that joint
        # distribution with a concentration bound exceeded with probability <= 1e-6.
        assert tv(joint(g), joint(e)) <= sampled_tv_bound(k, len(e.probs) + 1) + TV_ARITH, (g, e)
    # Seeds are passed through: the same call sequence gives the same estimate.
    a, b = (LangChainEngine(chat, mode="sampling", samples=8, sample_tokens=2, system=SYSTEM).option_probs(reqs[:1])
            for _ in range(2))
    assert a[0].probs == b[0].probs and a[0].method == "sampling:8"


@pytest.mark.vllm
def test_chat_generate(chat):
    eng = LangChainEngine(chat)
    a, b, c = eng.generate([
        GenerateRequest("Tell me a short story about a cat.", max_tokens=20, temperature=1.0, seed=3),
        GenerateRequest("Tell me a short story about a cat.", max_tokens=20, temperature=1.0, seed=3),
        GenerateRequest("Count from 1 to 10, one number per line.", max_tokens=40, temperature=0.0, stop=("5",)),
    ])
    assert a.text.strip() and a.text == b.text and a.n_tokens > 0
    assert "5" not in c.text and c.finish_reason == "stop", c
