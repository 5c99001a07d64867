"""Individual-level fidelity (analysis/individual*.py): planted bindings whose answers are known,
the retest ceiling of a study YAML, the shipped BSA panel study, and a run on the fake engine."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.individual import UNKNOWN_CEILING, individual_fidelity
from analysis.individual_baselines import Reference, best_answer
from analysis.individual_report import individual_table, no_binding_alert
from analysis.individual_scores import item_scores, one_hot
from analysis.studies import StudyError, load_study

pytestmark = pytest.mark.fast  # planted data and the fake engine: no model

ROOT = Path(__file__).resolve().parents[1]
K = 5


def _panel(n: int = 400, q: int = 6, seed: int = 0):
    """People whose answers lean on their demographic cell (60% give the cell's
    preferred option), so the cell baseline clearly beats the marginal."""
    rng = np.random.default_rng(seed)
    demo = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 2, n)])
    preferred = (demo[:, 0] + 2 * demo[:, 1]) % K
    answers = np.where(rng.random((n, q)) < 0.6, preferred[:, None], rng.integers(0, K, (n, q))).astype(float)
    marginal = np.array([np.bincount(answers[:, j].astype(int), minlength=K) for j in range(q)], float)
    return rng, demo, answers, marginal / marginal.sum(axis=1, keepdims=True)


def _planted(rng, answers, marginal, p: float) -> np.ndarray:
    """Each persona answer copies its respondent's with probability p, else is a draw from the marginal."""
    n, q = answers.shape
    draws = np.array([[rng.choice(K, p=marginal[j]) for j in range(q)] for _ in range(n)], dtype=float)
    return np.where(rng.random((n, q)) < p, answers, draws)


POSITIONS = np.tile(np.linspace(0, 1, K), (6, 1))


@pytest.mark.parametrize("nominal", [True, False], ids=["nominal", "ordinal"])
@pytest.mark.parametrize("p", [0.2, 0.6])
def test_a_planted_binding_is_recovered_within_its_interval(nominal, p):
    rng, demo, answers, marginal = _panel(seed=int(p * 10) + nominal)
    persona = one_hot(_planted(rng, answers, marginal, p), K)  # the sampled-answers estimator, one answer each
    r = individual_fidelity(persona, answers, POSITIONS, np.full(6, nominal), demo, seed=1)
    print(f"\nplanted p={p} ({'nominal' if nominal else 'ordinal'}): kappa {r.kappa.text()}, agreement {r.agreement.text()}, "
          f"cell {r.cell.text()}, marginal {r.marginal.text()}, shuffled {r.shuffled.text()}")
    assert r.kappa.low <= p <= r.kappa.high
    assert r.kappa.high - r.kappa.low < 0.15  # an interval that says something
    assert r.n_people == 400 and r.n_items == 6
    # The unbound baselines sit where an unbound persona does: kappa 0.
    assert abs((r.shuffled.value - r.marginal.value) / (1 - r.marginal.value)) < 0.05


def test_exact_probabilities_recover_p_too():
    """Under the probabilities estimator a persona p * onehot(h) + (1 - p) * marginal
    has agreement p + (1 - p) M exactly: kappa = p up to the leave-one-out marginal."""
    _, demo, answers, marginal = _panel(seed=3)
    persona = 0.35 * one_hot(answers, K) + 0.65 * marginal[None]
    for nominal in (True, False):
        r = individual_fidelity(persona, answers, POSITIONS, np.full(6, nominal), demo, seed=0)
        assert r.kappa.value == pytest.approx(0.35, abs=0.01)


def test_a_shuffled_binding_is_no_better_than_the_demographic_cell():
    rng, demo, answers, marginal = _panel(seed=5)
    persona = one_hot(_planted(rng, answers, marginal, 0.9), K)
    bound = individual_fidelity(persona, answers, POSITIONS, np.ones(6, bool), demo, condition="bound", seed=2)
    shuffled = individual_fidelity(persona[rng.permutation(len(persona))], answers, POSITIONS, np.ones(6, bool), demo, condition="shuffled", seed=2)
    print(f"\nbound: {bound.agreement.text()} vs cell {bound.cell.text()} -> {bound.verdict()}; "
          f"shuffled: {shuffled.agreement.text()} vs cell {shuffled.cell.text()} -> {shuffled.verdict()}, kappa {shuffled.kappa.text()}")
    assert bound.beats_cell and bound.verdict() == "beats its demographic cell"
    assert not shuffled.beats_cell and shuffled.verdict() == "no better than its demographic cell"
    assert shuffled.vs_cell.high < 0  # the cell is a stronger bar than an unbound persona
    assert abs(shuffled.kappa.value) < 0.05 and shuffled.kappa.low < 0.02
    assert shuffled.agreement.low <= shuffled.shuffled.value <= shuffled.agreement.high
    # The binding warning fires only when no condition beats its cell.
    assert no_binding_alert([shuffled]).startswith("WARNING individual level: no condition beats")
    assert no_binding_alert([shuffled, bound]) == ""


def test_item_scores_follow_the_formula():
    dists = np.array([[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]])
    answers = np.array([[2.0, np.nan]])
    x = np.array([[0, 0.5, 1], [0, 0.5, 1]])
    s, exact, distance = item_scores(dists, answers, x, [False, False])
    # ordinal: 1 - (0.5 * 1 + 0.25 * 0.5 + 0.25 * 0) = 0.375; a missing answer is no score
    assert s[0, 0] == pytest.approx(0.375) and distance[0, 0] == pytest.approx(0.625) and exact[0, 0] == pytest.approx(0.25)
    assert np.isnan(s[0, 1])
    s, _, distance = item_scores(dists, answers, x, [True, True])
    assert s[0, 0] == pytest.approx(0.25) and np.isnan(distance[0, 0])
    # The best single answer: the mode of a nominal item, the weighted median of an ordinal one.
    counts = np.array([[[3.0, 0.0, 1.0, 1.0, 2.0]]])
    assert best_answer(counts, [np.arange(5.0)], [True])[0, 0] == 0
    assert best_answer(counts, [np.arange(5.0)], [False])[0, 0] == 2


def test_the_cell_baseline_leaves_the_respondent_out():
    # One cell of three (answers 0, 0, 1) and one person alone in a cell.
    answers = np.array([[0.0], [0.0], [1.0], [1.0]])
    demo = np.array([[0], [0], [0], [1]])
    persona = one_hot(answers, 2)  # perfect personas
    r = individual_fidelity(persona, answers, [[0.0, 1.0]], [True], demo, n_boot=50)
    # Person 0: cell {0: 1 vote (person 1), 1: 1 vote (person 2)} -> tie -> option 0 -> agrees.
    # Person 2: cell without them is {0, 0} -> 0 -> disagrees; counted with itself it would still be 0.
    # Person 3: alone -> the population's leave-one-out mode {0, 0, 1} -> 0 -> disagrees.
    assert r.per_person["demographic_cell"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert r.cell_fallback == pytest.approx(0.25)
    # With the respondent counted, person 1's own 0 would decide a 1:1 tie; leave-one-out it does not.
    answers2 = np.array([[1.0], [0.0], [1.0], [0.0]])
    demo2 = np.array([[0], [0], [1], [1]])
    r2 = individual_fidelity(one_hot(answers2, 2), answers2, [[0.0, 1.0]], [True], demo2, n_boot=50)
    assert r2.per_person["demographic_cell"].tolist() == [0.0, 0.0, 0.0, 0.0]  # each sees only the other's answer
    # A reference sample the person is not in (self_index -1) counts everyone in it.
    ref = Reference(np.array([[1.0], [1.0]]), np.array([[0], [0]]), np.ones(2))
    r3 = individual_fidelity(one_hot(answers2[:1], 2), answers2[:1], [[0.0, 1.0]], [True], demo2[:1], reference=ref, self_index=[-1], n_boot=10)
    assert r3.cell.value == 1.0


def test_the_ceiling_is_the_respondents_own_retest():
    answers = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [2.0, 2.0]])
    retest = np.array([[0.0, np.nan], [2.0, np.nan], [2.0, np.nan], [np.nan, np.nan]])
    persona = one_hot(np.array([[0.0, 2.0], [0.0, 1.0], [2.0, 1.0], [0.0, 0.0]]), 3)
    x = np.tile([0.0, 0.5, 1.0], (2, 1))
    r = individual_fidelity(persona, answers, x, [False, False], np.zeros((4, 1)), retest=retest, n_boot=200)
    # Re-tested item 1 only, people 0-2: retest 1, 0.5, 1 -> 2.5/3; persona 1, 0.5, 1 on it -> normalized 1.
    assert r.n_retest == 3 and r.retest.value == pytest.approx(2.5 / 3) and r.normalized.value == pytest.approx(1.0)
    assert r.row()["retest_ceiling"].startswith("0.833 [")
    none = individual_fidelity(persona, answers, x, [False, False], np.zeros((4, 1)), n_boot=20)
    assert np.isnan(none.retest.value) and np.isnan(none.normalized.value) and not none.has_ceiling
    row = individual_table([none]).iloc[0]
    assert row["retest_ceiling"] == UNKNOWN_CEILING and row["normalized_accuracy"] == UNKNOWN_CEILING


# ---------------------------------------------------------------------------
# retest: in a study YAML
# ---------------------------------------------------------------------------


def _long_panel() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 30
    first = pd.DataFrame({"pid": np.arange(n), "wave": 1, "q": rng.integers(1, 4, n), "sex": rng.integers(0, 2, n)})
    second = first.assign(wave=2, q=np.where(rng.random(n) < 0.7, first["q"], rng.integers(1, 4, n)))
    return pd.concat([first, second.iloc[:-2]], ignore_index=True)  # two people missed wave 2


def _study_yaml(tmp_path: Path, retest: str, filters: str = "filters: {wave: 1}") -> Path:
    path = tmp_path / "panel.yaml"
    path.write_text(
        "name: panel\nsource: {kind: csv, path: panel.csv}\n" + filters + "\n"
        "demographics:\n  - {trait: gender, column: sex, question: 'Sex?', options: [Male, Female], codes: zero_based}\n"
        "questions:\n  - {id: q, column: q, text: 'Q?', options: [Low, Mid, High]}\n" + retest,
        encoding="utf-8",
    )
    return path


def test_retest_from_another_wave_and_from_a_column(tmp_path):
    df = _long_panel()
    path = _study_yaml(tmp_path, "retest:\n  id: pid\n  wave: wave\n  interval: a month\n  questions: {q: {wave: 2}}\n")
    with pytest.warns(UserWarning, match="2 of 30 respondents have no row in wave 2"):
        study = load_study(path, data=df)
    w1, w2 = df[df.wave == 1].set_index("pid")["q"], df[df.wave == 2].set_index("pid")["q"]
    expected = (w2.reindex(w1.index) - 1).to_numpy(float)
    np.testing.assert_array_equal(study.retest["q"].to_numpy(), expected)
    assert "wave = 2" in study.retest_note and "a month later" in study.retest_note
    assert study.sample(10, 0).retest.shape == (10, 1)  # follows the respondents
    wide = df[df.wave == 1].assign(q2=w2.reindex(df[df.wave == 1]["pid"]).to_numpy())
    study = load_study(_study_yaml(tmp_path, "retest: {questions: {q: q2}}"), data=wide)
    np.testing.assert_array_equal(study.retest["q"].to_numpy(), expected)


@pytest.mark.parametrize(
    ("retest", "filters", "message"),
    [
        ("retest: {questions: {q: q_w2}}", "filters: {wave: 1}", "retest.questions.q: column 'q_w2' not in the data"),
        ("retest: {questions: {nope: q}}", "filters: {wave: 1}", "retest.questions.nope: no question 'nope' (expected a question id: q)"),
        ("retest: {wave: wave, questions: {q: {wave: 2}}}", "filters: {wave: 1}", "retest.id: required when a question names a wave"),
        ("retest: {id: pid, wave: wave, questions: {q: {wave: 2}}}", "", "retest.questions.q.wave: the study's rows include wave 2 itself"),
        ("retest: {id: pid, wave: wave, questions: {q: {wave: 7}}}", "filters: {wave: 1}", "retest.questions.q.wave: no row has wave = 7"),
    ],
)
def test_a_bad_retest_is_one_line_naming_file_field_and_expectation(tmp_path, retest, filters, message):
    path = _study_yaml(tmp_path, retest, filters)
    with pytest.raises(StudyError) as err:
        load_study(path, data=_long_panel())
    text = str(err.value)
    assert len(text.splitlines()) == 1 and text.startswith(str(path)) and message in text, text


def test_nominal_questions_are_listed_in_the_study(tmp_path):
    assert load_study(_study_yaml(tmp_path, "nominal: [q]\n"), data=_long_panel()).question("q").nominal
    assert not load_study(_study_yaml(tmp_path, ""), data=_long_panel()).question("q").nominal  # ordinal by default
    with pytest.raises(StudyError, match=r"panel.yaml: nominal: no question 'qq' \(expected question ids: q\)"):
        load_study(_study_yaml(tmp_path, "nominal: [qq]\n"), data=_long_panel())


# ---------------------------------------------------------------------------
# The shipped panel: British Social Attitudes 1983-1984 (mlmRev::Socatt)
# ---------------------------------------------------------------------------


def test_the_bsa_panel_study_has_its_retest():
    study = load_study("bsa_panel")
    a, r = study.responses["abortion"].to_numpy(), study.retest["abortion"].to_numpy()
    assert study.n == 264 and np.isfinite(r).all()
    assert np.mean(a == r) == pytest.approx(0.375)  # exact test-retest agreement, 1983 vs 1984
    assert 1 - np.mean(np.abs(a - r)) / 7 == pytest.approx(0.8339, abs=1e-4)  # the ordinal ceiling
    # The respondents themselves as personas reach their own retest agreement: normalized 1 / ceiling.
    own = individual_fidelity(one_hot(a[:, None], 8), a[:, None], [np.linspace(0, 1, 8)], [False], study.demographics.to_numpy(), retest=r[:, None], n_boot=200)
    assert own.agreement.value == pytest.approx(1.0) and own.normalized.value == pytest.approx(1 / 0.8339, abs=1e-3)


def _run_config(tmp_path: Path, *extra: str):
    from scenarios.config import load_config

    return load_config(ROOT / "scenarios/survey.yaml", [
        "engine.kind=fake", f"store={tmp_path / 'p.db'}", f"output={tmp_path / 'runs'}", "human.study=bsa_panel",
        "population.size=6", "population.conditions=[anthology, qa]", "population.backstories.max_tokens=12",
        "human.sample=24", "human.lower_bound_splits=4", "human.subgroups=[]", "matching=[greedy, random]",
        "analysis.position_bias_personas=0", *extra,
    ])


def test_a_run_on_the_panel_study_writes_the_individual_level_table(tmp_path):
    from simulation.runner import run

    result = run(_run_config(tmp_path))
    out = result.output_dir
    table = pd.read_csv(out / "individual_level.csv")
    assert table["condition"].tolist() == ["anthology (greedy)", "anthology (random)", "qa"]
    for column in ("agreement", "demographic_cell", "marginal", "shuffled", "retest_ceiling", "normalized_accuracy", "kappa"):
        assert table[column].str.match(r"^-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]$").all(), (column, table[column].tolist())
    records = [json.loads(line) for line in (out / "individual_level.jsonl").read_text().splitlines()]
    assert all(r["people"] == 24 and r["people_with_retest"] == 24 for r in records)
    assert len({r["retest"] for r in records}) == 1  # the same people, the same ceiling
    assert len((out / "individual_per_person.jsonl").read_text().splitlines()) == 3 * 24
    summary = (out / "summary.md").read_text()
    assert "## individual level" in summary and (out / "plots/individual_level.png").exists()
    header = summary.split("\n## ")[0]
    assert "individual level: each persona against its own respondent" in header and "wave year = 1984" in header


def test_a_partisan_report_without_retest_says_the_ceiling_is_unknown(tmp_path):
    from scenarios.config import load_config
    from simulation.runner import run

    cfg = load_config(ROOT / "scenarios/meta_prejudice.yaml", [
        "engine.kind=fake", f"store={tmp_path / 'p.db'}", f"output={tmp_path / 'runs'}",
        "population.conditions=[anthology]", "population.size=4", "population.backstories.max_tokens=12", "human.sample=12", "analysis.position_bias_personas=0",
    ])
    out = run(cfg).output_dir
    table = pd.read_csv(out / "individual_level.csv")
    assert table["retest_ceiling"].tolist() == [UNKNOWN_CEILING] and table["items"].tolist() == [2]
    assert "ceiling unknown: the study has no retest" in (out / "summary.md").read_text().split("\n## ")[0]


def test_the_sweep_plots_the_individual_agreement_beside_wd(tmp_path):
    from simulation.sweep import _with_individual, plot_factor

    rows = []
    for level, agreement in ((1, 0.6), (2, 0.7)):
        run_dir = tmp_path / f"run{level}"
        run_dir.mkdir()
        rec = {"condition": "interview (greedy)", "agreement": agreement, "agreement_low": agreement - 0.05, "agreement_high": agreement + 0.05, "vs_cell": 0.01}
        (run_dir / "individual_level.jsonl").write_text(json.dumps(rec) + "\n")
        head = pd.DataFrame({"condition": ["interview (greedy)"] * 2, "party": ["Democrat", "Republican"], "persona_delta": [1.0, 1.2], "wd": [0.2, 0.3]})
        rows.append(_with_individual(head, run_dir / "meta_perception.csv").assign(run_id=f"r{level}", **{"population.per_human": level}))
    table = pd.concat(rows, ignore_index=True)
    assert table["individual_agreement"].tolist() == [0.6, 0.6, 0.7, 0.7]
    assert plot_factor(table, {"population.per_human": [1, 2]}, tmp_path).exists()
