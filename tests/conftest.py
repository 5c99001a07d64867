"""Shared fixtures: the real embedded model (loaded once per test process), real
SQLite stores, and the order and worker groups of the suite."""
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
VLLM_GROUP = "vllm-server"


def pytest_collection_modifyitems(config, items):
    """Every test is either ``fast`` (no model, server or browser: `make check`)
    or ``slow`` (everything else), never both. In one process the vLLM tests run
    last, so the server never competes with the in-process engine; on several
    workers (``make test``) the files that use the server go first, on one worker
    (see :func:`pytest_xdist_make_scheduler`)."""
    both = [it.nodeid for it in items if it.get_closest_marker("fast") and any(m.name == "slow" for m in it.own_markers)]
    if both:
        raise pytest.UsageError("marked both fast and slow: " + ", ".join(both))
    for it in items:
        if it.get_closest_marker("fast") is None and it.get_closest_marker("slow") is None:
            it.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        served = served_files()
        items.sort(key=lambda it: (relative(it.path) not in served, it.get_closest_marker("vllm") is not None))
    else:
        items.sort(key=lambda it: it.get_closest_marker("vllm") is not None)


def relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def served_files() -> set[str]:
    """The test files with tests marked ``vllm`` (they share one vLLM server).
    Found by the text ``pytest.mark.vllm`` in each file, because the xdist
    controller sees node ids only, not markers: a file that marks its tests
    another way (``pytestmark = [vllm]`` through a name) gets its own unit and
    would start a second server."""
    return {relative(p) for p in (ROOT / "tests").glob("test_*.py") if "pytest.mark.vllm" in p.read_text()}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """How ``make test`` spreads the suite over the cores (pytest-xdist): each
    test file is one unit, so its module fixtures (banks, trained adapters,
    servers) are built once, on one worker; the files that use the vLLM server
    are one unit, so one server serves them all, and it goes first (the server
    start and the representatives' training are the longest chain); the other
    files follow in collection order as workers free up.

    Written here because ``--dist loadgroup`` does not group on pytest 9 (it
    tags node ids, which pytest 9 no longer reads back); xdist's own per-scope
    scheduler is reused, only the unit of a test is ours."""
    from xdist.scheduler import LoadScopeScheduling

    served = served_files()

    class ByFileVllmTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return VLLM_GROUP if file in served else file

    config.option.loadscopereorder = False  # keep the collection order: the vLLM unit first
    return ByFileVllmTogether(config, log)


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
