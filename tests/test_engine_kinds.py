"""Every engine kind builds from ``EngineConfig`` through ``make_engine`` on the
installed versions (issue 23 item 3), and answers once: a new release of
openai, langchain-openai or transformers that stops an engine from building
fails here, in seconds, with no GPU and no real model (the served engines talk
to the simulated server on 127.0.0.1; transformers loads a tiny random Llama)."""
from __future__ import annotations

import importlib.util
import math

import pytest

from agents.llm.base import EngineError, GenerateRequest, LoglikRequest, OptionRequest
from agents.llm.factory import EngineConfig, make_engine
from agents.llm.simulated_server import SimulatedServer

pytestmark = pytest.mark.fast

QUESTION = OptionRequest(
    "I am a Republican from Ohio.\n\n",
    "Question: Do you think of yourself as a Republican, a Democrat or an independent?\n"
    "(A) Republican\n(B) Democrat\n(C) Independent\nAnswer with (A), (B) or (C).\nAnswer: (",
    ("A", "B", "C"),
)
RULES = [{"question": "Republican, a Democrat", "facts": [{"pattern": r"\bRepublican\b", "weights": [8, 1, 1]}]}]


@pytest.fixture(scope="module")
def srv():
    with SimulatedServer(rules=RULES) as s:
        yield s


def _is_distribution(r, n: int) -> bool:
    return len(r.probs) == n and abs(sum(r.probs) - 1) < 1e-9 and 0 <= r.outside_mass <= 1


def test_fake_builds():
    from agents.llm.fake_engine import FakeEngine

    e = make_engine(EngineConfig(kind="fake"))
    assert isinstance(e, FakeEngine) and _is_distribution(e.option_probs([QUESTION])[0], 3)


def test_openai_builds_and_answers(srv):
    from agents.llm.openai_engine import OpenAIEngine

    e = make_engine(EngineConfig(kind="openai", model="simulated", endpoints=[srv.base_url], prompts_per_request=4, retries=1))
    try:
        assert isinstance(e, OpenAIEngine) and e.prompts_per_request == 4
        (r,) = e.option_probs([QUESTION])
        assert _is_distribution(r, 3) and r.probs[0] == pytest.approx(0.8)  # the planted truth
        (g,) = e.generate([GenerateRequest("Question: Tell me about yourself.\nAnswer:", max_tokens=8, seed=1)])
        assert g.text.strip() and 0 < g.n_tokens <= 8
        (ll,) = e.loglikelihood([LoglikRequest("The capital of France is", " Paris")])
        assert math.isfinite(ll) and ll < 0
    finally:
        e.close()


def test_langchain_builds_and_answers(srv):
    pytest.importorskip("langchain_openai", reason="the langchain extra is not installed")
    from agents.llm.langchain_engine import LangChainEngine

    e = make_engine(EngineConfig(kind="langchain", model="simulated", endpoints=[srv.base_url], retries=0))
    assert isinstance(e, LangChainEngine)
    (r,) = e.option_probs([QUESTION])
    assert r.method == "logprobs" and _is_distribution(r, 3) and r.probs[0] > 0.5


def test_transformers_builds_a_tiny_llama_and_answers(tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agents.llm.embedded import hf_folder

    tok = AutoTokenizer.from_pretrained(str(hf_folder()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    e = make_engine(EngineConfig(kind="transformers", model=str(tmp_path), dtype="float32"))
    try:
        (r,) = e.option_probs([QUESTION])
        assert _is_distribution(r, 3)
    finally:
        e.close()


def test_vllm_without_vllm_is_one_line():
    """vLLM lives in its own environment (.venv-vllm, where tests/test_vllm.py builds
    this kind for real); in the project's environment the kind says so in one line."""
    assert importlib.util.find_spec("vllm") is None, "vllm is installed in the project's environment; the lock keeps it in .venv-vllm"
    with pytest.raises(EngineError) as info:
        make_engine(EngineConfig(kind="vllm"))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("engine vllm: vLLM is not installed in this environment"), msg
