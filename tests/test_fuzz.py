"""Fuzzing the loaders (no model): generated study YAMLs with data whose truth is known,
OpinionQA-style aggregate tables (unknown trait cells, refusal rows, shares),
generated scenario YAMLs and ``--set`` overrides. Each case must load right (or load with
a warning) or stop with one line naming the file and the field -- never a traceback,
never a silently wrong load. 1,300 cases here; benchmarks/fuzz.py runs 10,000."""
from __future__ import annotations

import pytest
from fuzz_cases import BUGS, aggregate_case, run_aggregate_case, run_scenario_case, run_study_case, scenario_case, study_case
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.fast  # needs no model: part of `make check`

# derandomize: the same cases on every run (reproducible), database off (no state on disk).
FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def test_generated_study_files_load_right_or_fail_in_one_line(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-study")
    seen: dict[str, int] = {}

    @FUZZ
    @given(study_case())
    def check(case):
        outcome = run_study_case(case, folder)
        seen[outcome] = seen.get(outcome, 0) + 1
        assert outcome not in BUGS, (outcome, case[0])

    check()
    # The generator reaches every good outcome (else it tests little).
    assert {"loaded", "error"} <= set(seen) and sum(seen.values()) >= 500, seen


def test_generated_scenario_files_and_overrides_load_or_fail_in_one_line(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-scenario")
    seen: dict[str, int] = {}

    @FUZZ
    @given(scenario_case())
    def check(case):
        outcome = run_scenario_case(case, folder)
        seen[outcome] = seen.get(outcome, 0) + 1
        assert outcome not in BUGS, (outcome, case)

    check()
    assert {"loaded", "error"} <= set(seen) and sum(seen.values()) >= 500, seen


def test_generated_aggregate_tables_load_right_or_fail_in_one_line(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-aggregate")
    seen: dict[str, int] = {}

    @settings(FUZZ, max_examples=300)
    @given(aggregate_case())
    def check(case):
        outcome = run_aggregate_case(case, folder)
        seen[outcome] = seen.get(outcome, 0) + 1
        assert outcome not in BUGS, (outcome, case[0])

    check()
    assert {"loaded_with_warning", "error"} <= set(seen) and sum(seen.values()) >= 300, seen
