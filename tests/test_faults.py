"""The fault campaign (benchmarks/faults.py), small: SIGKILLs inside the question
steps of a real run, then a resume. (Its disk and store faults are each tested,
as real files and folders, in tests/test_store.py.)"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))  # run.py

import faults  # noqa: E402

# Rule-based personas (no backstory generation): the kills land in question steps.
TINY = ["population.size=2", "population.conditions=[qa]", "human.sample=4", "human.lower_bound_splits=4",
        "questionnaire.questions=[natspac, natenvir, natheal]"]


def test_kills_inside_question_steps_lose_nothing_and_repeat_nothing(tmp_path):
    res = faults.kill_campaign(tmp_path, kills=1, trials=1, seed=3, settings=TINY, inside_share=1.0, in_process=True)
    # planned in the killed run's own progress: the kill lands, inside a step
    assert res.planned == res.kills == res.inside == 1, res
    assert res.survived == res.kills
    assert res.repeated == 0 and res.missing_equal == 1
    assert res.identical == 1, res.differences
