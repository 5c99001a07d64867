"""Evaluation and reports on the real GSS 2018 data: lower bound, persona scoring, files."""
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from analysis.bootstrap import bootstrap_cis
from analysis.correlations import cronbach_alpha, frobenius_distance, weighted_corr
from analysis.distributions import wasserstein, weighted_distribution
from analysis.evaluation import evaluate
from analysis.gaps import Gap
from analysis.lower_bound import human_lower_bound
from analysis.matching import match_study
from analysis.persona_answers import PersonaAnswers
from analysis.report import write_report
from analysis.report_tables import LOWER_BOUND_ROW, conditions_table, gap_table, print_summary
from analysis.studies import load_study

pytestmark = pytest.mark.fast  # needs no model: part of `make check`


@pytest.fixture(scope="module")
def gss():
    return load_study("gss_spending")


@pytest.fixture(scope="module")
def lower_bound(gss):
    return human_lower_bound(gss, n_splits=100, seed=0)


def _humans_as_personas(study) -> np.ndarray:
    idx = study.answer_matrix()
    return np.where(np.isfinite(idx), idx, -1).astype(int)


def _synthetic_personas(study, n: int, seed: int):
    """Made-up personas: demographic-survey probabilities and answer distributions."""
    rng = np.random.default_rng(seed)
    traits = {t.name: rng.dirichlet(np.ones(t.n_options) * 0.5, size=n) for t in study.traits}
    answers = rng.dirichlet(np.ones(3), size=(n, len(study.questions)))
    return traits, answers


def test_gss_lower_bound_is_stable_across_seeds(gss, lower_bound):
    other = human_lower_bound(gss, n_splits=100, seed=1)
    print(
        f"\nGSS 2018 split-half lower bound (100 splits): WD {lower_bound.wd:.4f} (sd {lower_bound.wd_sd:.4f}), "
        f"Fro {lower_bound.fro:.3f} (sd {lower_bound.fro_sd:.3f}), alpha {lower_bound.alpha:.3f} (sd {lower_bound.alpha_sd:.4f}); "
        f"seed 1: WD {other.wd:.4f}, Fro {other.fro:.3f}, alpha {other.alpha:.3f}"
    )
    assert 0.005 < lower_bound.wd < 0.03 and 0.4 < lower_bound.fro < 1.2 and 0.6 < lower_bound.alpha < 0.8
    assert abs(lower_bound.wd - other.wd) < 0.002
    assert abs(lower_bound.fro - other.fro) < 0.03
    assert abs(lower_bound.alpha - other.alpha) < 0.002
    assert lower_bound.wd_sd < 0.005 and lower_bound.fro_sd < 0.15
    assert set(lower_bound.per_question_wd) == set(gss.question_ids)


def test_lower_bound_matches_a_direct_split(gss):
    """The batched computation equals splitting the data by hand with the same permutation."""
    lb = human_lower_bound(gss, n_splits=1, seed=7)
    perm = np.random.default_rng(7).permutation(gss.n)
    a, b = gss.subset(perm[: gss.n // 2]), gss.subset(perm[gss.n // 2 :])
    wd = np.mean([wasserstein(a.distribution(q), b.distribution(q)) for q in gss.question_ids])
    fro = frobenius_distance(weighted_corr(a.position_matrix()), weighted_corr(b.position_matrix()))
    alpha = 0.5 * (cronbach_alpha(a.position_matrix()) + cronbach_alpha(b.position_matrix()))
    assert (lb.wd, lb.fro, lb.alpha) == pytest.approx((wd, fro, alpha), abs=1e-10)


def test_humans_as_their_own_personas_score_perfectly(gss, lower_bound):
    # Subgroup lower bounds with 20 splits keep the test fast; 100 is the default.
    ev = evaluate(gss, _humans_as_personas(gss), condition="humans", lower_bound=lower_bound, n_splits=20, n_boot=20)
    assert ev.wd == pytest.approx(0.0, abs=1e-12) and ev.fro == pytest.approx(0.0, abs=1e-12)
    assert ev.alpha_persona == pytest.approx(ev.alpha_human)
    assert ev.alpha_human == pytest.approx(cronbach_alpha(gss.position_matrix()))
    assert {g.trait for g in ev.subgroups} == {"race", "age", "party"}
    white = next(g for g in ev.subgroups if g.group == "White")
    assert white.n_humans == (gss.demographics["race"] == 0).sum() and white.lower_bound is not None
    assert ev.lower_bound is lower_bound


def test_evaluate_with_matching(gss, lower_bound):
    traits, answers = _synthetic_personas(gss, 2500, seed=0)
    match = match_study(gss, traits, "max_weight")
    ev = evaluate(gss, answers, match, condition="synthetic", lower_bound=lower_bound, n_boot=50, subgroups=[])
    assert ev.matching == "max_weight" and ev.n_personas == gss.n and ev.match_stats is not None
    # Persona distribution of a question = mean of the matched personas' distributions (unit weights here).
    expected = answers[match.persona_index, 0, :].mean(axis=0)
    assert ev.questions[0].persona_dist == pytest.approx(expected)
    assert ev.questions[0].human_dist == pytest.approx(gss.distribution(gss.question_ids[0]))
    assert ev.questions[0].wd == pytest.approx(wasserstein(ev.questions[0].human_dist, expected))
    assert ev.wd == pytest.approx(np.mean([q.wd for q in ev.questions]))
    for key in ("wd", "fro", "alpha_persona", "alpha_human"):
        assert ev.ci[key].low <= ev.ci[key].estimate <= ev.ci[key].high
    assert ev.wd > lower_bound.wd  # random personas are far from humans


def test_batched_bootstrap_equals_resampling_rows(gss):
    study = gss.select(gss.question_ids[:6])
    sampled = np.random.default_rng(3).integers(0, 3, size=(study.n, 6))
    ev = evaluate(study, sampled, condition="x", lower_bound=False, n_boot=30, seed=5, subgroups=[])
    human = study.answer_matrix()
    pos = study.position_matrix()

    def metrics(idx):
        h, s, p = human[idx], sampled[idx].astype(float), pos[idx]
        wd = np.mean([wasserstein(weighted_distribution(h[:, j], 3), weighted_distribution(s[:, j], 3)) for j in range(6)])
        return {"wd": wd, "fro": frobenius_distance(weighted_corr(p), weighted_corr(s)), "alpha_persona": cronbach_alpha(s)}

    generic = bootstrap_cis(metrics, np.arange(study.n), n=30, seed=5)
    for key in ("wd", "fro", "alpha_persona"):
        assert (ev.ci[key].low, ev.ci[key].high) == pytest.approx((generic[key].low, generic[key].high), abs=1e-10)


def test_distributions_are_sampled_reproducibly_for_individual_metrics(gss):
    study = gss.select(gss.question_ids[:4])
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(study.n, 4))
    a = evaluate(study, PersonaAnswers(probs=probs), lower_bound=False, n_boot=0, seed=1, subgroups=[])
    b = evaluate(study, probs, lower_bound=False, n_boot=0, seed=1, subgroups=[])
    c = evaluate(study, probs, lower_bound=False, n_boot=0, seed=2, subgroups=[])
    assert a.fro == b.fro and a.fro != c.fro
    assert a.wd == c.wd  # WD uses the distributions themselves, not the samples
    assert any("drawn from their option distributions" in n for n in a.notes)


def test_evaluate_rejects_inconsistent_inputs(gss):
    with pytest.raises(ValueError, match="persona row h must be human h"):
        evaluate(gss, np.zeros((10, 18), dtype=int))
    with pytest.raises(ValueError, match="18 questions"):
        evaluate(gss, np.zeros((gss.n, 5), dtype=int))
    with pytest.raises(ValueError, match="mass beyond them"):
        evaluate(gss, np.ones((gss.n, 18, 4)) / 4)


def test_reports_are_written_and_byte_identical(gss, lower_bound, tmp_path):
    study = gss.select(["natspac", "natenvir", "natheal", "natfare"])
    lb = human_lower_bound(study, n_splits=50, seed=0)
    traits, answers = _synthetic_personas(study, 3000, seed=1)
    answers = answers[:, :4]
    greedy = match_study(study, traits, "greedy")
    evaluations = [
        evaluate(study, answers, greedy, condition="Anthology", lower_bound=lb, n_splits=20, n_boot=50, subgroups=["race"]),
        evaluate(study, _humans_as_personas(study), condition="Humans", lower_bound=lb, n_boot=50, subgroups=[]),
    ]

    first = write_report(evaluations, tmp_path / "a", title="GSS 2018 test")
    second = write_report(evaluations, tmp_path / "b", title="GSS 2018 test")
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in first)
    assert {"summary.md", "conditions.csv", "questions.csv", "subgroups.csv", "plots/metrics_vs_lower_bound.png"} <= set(names)
    assert "plots/distributions_gss-spending-anthology-greedy.png" in names
    assert "plots/correlations_gss-spending-humans.png" in names
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
        assert a.stat().st_size > 0

    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "| Anthology | greedy |" in summary and f"| {LOWER_BOUND_ROW} |" in summary
    assert f"{lb.wd:.3f}" in summary
    questions = pd.read_csv(tmp_path / "a" / "questions.csv")
    assert len(questions) == 2 * 4 and set(questions["question"]) == set(study.question_ids)
    table = conditions_table(evaluations)
    assert list(table.index.get_level_values(0)) == ["Anthology", "Humans", LOWER_BOUND_ROW]
    assert table.loc[("Humans", "n/a"), ("gss_spending", "WD")] == pytest.approx(0.0)
    groups = pd.read_csv(tmp_path / "a" / "subgroups.csv")
    assert set(groups["group"]) == {"White", "Black", "Other"}


def test_terminal_table(gss, lower_bound):
    ev = evaluate(gss, _humans_as_personas(gss), condition="Humans", lower_bound=lower_bound, n_boot=10, subgroups=[])
    console = Console(record=True, width=160)
    print_summary([ev], console=console)
    text = console.export_text()
    assert "Humans" in text and LOWER_BOUND_ROW in text and f"{lower_bound.fro:.3f}" in text


def test_gap_table_layout():
    persona = {"Anthology": {"Democrat": Gap(1.0, 0.9, 3.5, 2.5, 10, 10), "Republican": Gap(1.1, 1.2, 3.6, 2.5, 10, 10)}}
    table = gap_table("hostility", persona, wd={"Anthology": {"Democrat": 0.1, "Republican": 0.12}})
    assert list(table.index) == ["Human", "Anthology"]
    assert table.loc["Human", "delta Democrat"] == 1.630 and table.loc["Human", "d Republican"] == 2.263
    assert table.loc["Anthology", "WD Republican"] == 0.12


def test_one_hot_distributions_sample_their_only_option(gss):
    """Drawing from a one-hot distribution must return that option: same metrics as passing the indices."""
    study = gss.select(gss.question_ids[:5])
    sampled = np.random.default_rng(4).integers(0, 3, size=(study.n, 5))
    one_hot = np.eye(3)[sampled]
    from_probs = evaluate(study, one_hot, lower_bound=False, n_boot=0, subgroups=[])
    from_indices = evaluate(study, sampled, lower_bound=False, n_boot=0, subgroups=[])
    assert from_probs.fro == pytest.approx(from_indices.fro) and from_probs.wd == pytest.approx(from_indices.wd)
    assert from_probs.alpha_persona == pytest.approx(from_indices.alpha_persona)


def test_survey_weights_weight_humans_and_their_personas(tmp_path):
    data = pd.DataFrame({"q": [1, 2, 2, 1], "w": [1.0, 3.0, 1.0, 1.0]})
    (tmp_path / "s.yaml").write_text(
        "name: weighted\nsource: {kind: csv, path: unused.csv}\nweight: w\n"
        "questions:\n  - {id: q, column: q, text: 'Q?', options: [Yes, No]}\n"
    )
    study = load_study(tmp_path / "s.yaml", data=data)
    assert study.distribution("q") == pytest.approx([2 / 6, 4 / 6])
    personas = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]], [[1.0, 0.0]]])
    ev = evaluate(study, personas, lower_bound=False, n_boot=0, subgroups=[])
    # (1 * [1, 0] + 3 * [0, 1] + 1 * [.5, .5] + 1 * [1, 0]) / 6
    assert ev.questions[0].persona_dist == pytest.approx([2.5 / 6, 3.5 / 6])
    assert ev.wd == pytest.approx(0.5 / 6)


# --- issue 26: report cells that read as results -----------------------------------------


def test_one_question_study_reports_frobenius_na_and_draws_no_heatmap(gss, tmp_path):
    one = gss.select(["natspac"])
    ev = evaluate(one, _humans_as_personas(one), n_boot=20, n_splits=5)
    assert np.isnan(ev.fro) and np.isnan(ev.lower_bound.fro)
    assert any("Frobenius undefined: one question" in n for n in ev.notes)
    assert conditions_table([ev], digits=3).loc[("personas", "n/a"), ("gss_spending", "Fro.")] == "n/a"
    files = write_report(ev, tmp_path)
    assert not any("correlations_" in f.name for f in files)


def test_report_header_lists_what_was_applied_and_labels_the_sample(tmp_path):
    with pytest.warns(UserWarning, match="value 2021 never occurs"):
        anes = load_study("anes_partytherms", {"filters": {"year": [2012, 2021]}}).sample(300, seed=0)
    ev = evaluate(anes, _humans_as_personas(anes), n_boot=0, n_splits=5, subgroups=["party"])
    text = (tmp_path / "summary.md").read_text() if write_report(ev, tmp_path, plots=False) else ""
    head = text.split("## Conditions")[0]
    assert "- filters: year in [2012, 2021] (5914 of 33830 rows kept)" in head
    assert "- **warning**: analysis/studies/anes_partytherms.yaml: filters.year: value 2021 never occurs in column 'year'" in head
    assert "- weights: none (each respondent counts once)" in head
    assert "- respondents: 300, a random sample of 300 of the 5914 respondents (human.sample, seed 0)" in head
    assert "- subgroups: party; groups with fewer than 20 respondents are skipped (min_group_size)" in head
    assert "full sample" not in text and "Human alpha (all respondents compared, as in the header): anes_partytherms" in text
    assert "(n = 300)" in text
