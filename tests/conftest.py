"""Shared fixtures: the real embedded model (loaded once), real SQLite stores.

Tests that need the vLLM server run last, so the server (several GB, both
cores) never competes with the in-process engine tests.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see run.py
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from vllm_fixtures import *  # noqa: E402,F401,F403  (vllm_server and friends)

ARTIFACTS = ROOT / "test-artifacts"


def pytest_collection_modifyitems(config, items):
    """vLLM tests last; every test is either ``fast`` (no model, server or
    browser: `make check`) or ``slow`` (everything else), never both."""
    both = [it.nodeid for it in items if it.get_closest_marker("fast") and any(m.name == "slow" for m in it.own_markers)]
    if both:
        raise pytest.UsageError("marked both fast and slow: " + ", ".join(both))
    for it in items:
        if it.get_closest_marker("fast") is None and it.get_closest_marker("slow") is None:
            it.add_marker(pytest.mark.slow)
    items.sort(key=lambda it: (it.get_closest_marker("vllm") is not None,))


@pytest.fixture(scope="session")
def engine():
    """The embedded SmolLM2-135M-Instruct on transformers, shared by the session:
    the same loaded model that in-process runs with the default engine
    configuration use (``agents.llm.factory.shared_engine``), so a test process
    loads it once."""
    return embedded_engine()


def embedded_engine():
    from agents.llm.factory import EngineConfig, shared_engine

    return shared_engine(EngineConfig())


@pytest.fixture()
def store(tmp_path):
    from core.store import Store

    return Store(tmp_path / "store.db")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
