"""Session fixtures for tests against a real vLLM server (marker ``vllm``).

Register them in ``tests/conftest.py`` (``pytest_plugins = ["tests.vllm_fixtures"]``)
so that every module shares ONE server: it costs ~6.5 GB of RAM and 1-3 minutes
to start. The environment ``.venv-vllm`` is made by the test set-up
(``python -m agents.llm.vllm_server setup``, run in the background by ``make
test`` while the other tests run; the fixture waits for it); when it is missing
the fixture fails with that command in the message: a vLLM test never skips.

``PERSONAE_VLLM_URL=http://127.0.0.1:8011/v1`` reuses a server you already run
(``python -m agents.llm.vllm_server serve --port 8011``) instead of starting one.
"""
from __future__ import annotations

import os
import time

import pytest

VLLM_START_TIMEOUT = float(os.environ.get("PERSONAE_VLLM_START_TIMEOUT", "420"))
# Eager mode by default: starts in ~1.5 min on every machine, where torch.compile
# costs 2-4 extra minutes on a machine's first start (its cache then makes later
# starts as fast). The tests generate few tokens, so decoding speed hardly matters.
VLLM_TEST_EAGER = os.environ.get("PERSONAE_VLLM_TEST_EAGER", "1") != "0"
# float32, like the transformers reference the agreement tests compare with: the
# bounds in tests/test_vllm.py then follow from float32 arithmetic on any CPU
# (bf16 against float32 needed a bound fitted to one machine, and failed on the next).
VLLM_TEST_DTYPE = "float32"


class _External:
    """A server somebody else runs: same attributes as VLLMServer, stop() does nothing."""

    def __init__(self, base_url: str, name: str):
        self.base_url, self.name = base_url.rstrip("/"), name
        self.port = int(base_url.split(":")[-1].split("/")[0])
        self.start_seconds = 0.0
        self.external = True

    def stop(self):
        pass

    @property
    def running(self):
        return True


def require_vllm_env() -> None:
    """Wait for a background set-up of .venv-vllm (the test command starts one);
    fail (never skip) with one line when the environment is missing."""
    from agents.llm import vllm_server as vs

    try:
        vs.wait_for_setup()
    except vs.ServerError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def vllm_server():
    """The embedded SmolLM2 (HF folder) served by vLLM on 127.0.0.1 in float32
    (with prefix caching, as runs use it) and run-time LoRA loading (the base
    name is served through a zero adapter: see agents/llm/vllm_lora.RAW_SUFFIX);
    stopped at session end. An external server (PERSONAE_VLLM_URL) must be
    started with --dtype float32 --runtime-lora too."""
    from agents.llm import vllm_server as vs
    from agents.llm.embedded import EMBEDDED_NAME, hf_folder

    url = os.environ.get("PERSONAE_VLLM_URL")
    if url:
        yield _External(url, os.environ.get("PERSONAE_VLLM_MODEL", EMBEDDED_NAME))
        return
    require_vllm_env()
    t0 = time.monotonic()
    try:
        # runtime_lora: the LoRA tests load their adapters into this same server
        # (one vLLM load per test run: a second server cost ~2 minutes and 6.5 GB).
        server = vs.serve(model=hf_folder(), name=EMBEDDED_NAME, timeout=VLLM_START_TIMEOUT, dtype=VLLM_TEST_DTYPE,
                          extra_args=["--enforce-eager"] if VLLM_TEST_EAGER else [], runtime_lora=True)
    except vs.ServerError as e:
        pytest.fail(f"vLLM server did not start: {e}", pytrace=False)
    print(f"\n[vllm] server ready at {server.base_url} in {time.monotonic() - t0:.0f} s")
    try:
        yield server
    finally:
        server.stop()
