"""Generated study YAMLs, scenario YAMLs and ``--set`` overrides, and the one rule
they must all obey (used by tests/test_fuzz.py and benchmarks/fuzz.py).

Every case ends in exactly one of these outcomes:

* ``loaded`` -- and then the answers equal the truth the data were generated
  from (``loaded_with_warning`` when the loader said something deserves a look);
* ``error`` -- one line, starting with the file name, then the field;
* ``traceback`` -- any other exception (a bug);
* ``silently_wrong`` -- loaded, no warning, answers differ from the truth (a bug);
* ``bad_message`` -- a project error whose message breaks the one-line rule (a bug).

The study cases write a small CSV whose true option per respondent is known,
encoded one of four ways (codes 1..K, codes 0..K-1, the option labels, or
numbers that are the labels), and a study YAML that declares the coding
rightly, wrongly or not at all, with random damage to its fields; some filter
on a value that occurs nowhere (a typo: ``[USA, Swedn]``, ``{not: [Norwy]}``)
or code a trait so that no valid value is left -- both must warn.

The aggregate cases write an OpinionQA-style table of known counts (or
per-group shares, some with a "Refused" row) whose trait cells name the
study's traits, their columns, or traits the study does not define: unknown
cells must warn, shares must be recognised as shares, and every distribution
must equal the truth.
"""
from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from hypothesis import strategies as st

from analysis.studies import StudyError, load_study
from core.errors import PersonaeError
from scenarios.config import ConfigError, load_config

BUGS = ("traceback", "silently_wrong", "bad_message")
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
N = 12  # respondents in every generated data file

WORDS = st.sampled_from(["Low", "Mid", "High", "Agree", "Disagree", "None", "Yes", "No", "Other", "N/A", "1 or more"])
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 120), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.sampled_from(["a", "min", "not"]), st.integers(0, 3), max_size=2),
)


@st.composite
def study_case(draw):
    """``(yaml dict, data frame, truth)``: truth[qid] is the true option index per respondent."""
    k = draw(st.integers(2, 5))
    label_kind = draw(st.sampled_from(["words", "zero", "one"]))
    if label_kind == "words":
        options = draw(st.lists(WORDS, min_size=k, max_size=k, unique=True))
    else:
        options = [str(i + (label_kind == "one")) for i in range(k)]
    encoding = draw(st.sampled_from(["one_based", "zero_based", "labels", "numbers"]))
    if encoding == "numbers" and label_kind == "words":
        encoding = "labels"
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    truth = np.concatenate([np.arange(k), rng.integers(0, k, N - k)])  # every option appears
    raw = {
        "one_based": truth + 1,
        "zero_based": truth,
        "labels": np.array(options, dtype=object)[truth],
        "numbers": np.array([float(o) for o in options])[truth] if label_kind != "words" else truth,
    }[encoding]
    question = {"id": "q", "column": "q col", "text": "Q?", "options": options}
    codes = draw(st.sampled_from([None, None, "one_based", "zero_based", "labels"]))
    if codes:
        question["codes"] = codes
    if draw(st.booleans()):  # an explicit values map, right or with a boolean target
        targets = draw(st.sampled_from(["right", "bool"]))
        values = {}
        for i, o in enumerate(options):
            key = {"one_based": i + 1, "zero_based": i, "labels": o, "numbers": float(o) if label_kind != "words" else i}[encoding]
            values[key] = True if targets == "bool" and i == 0 else o
        question["values"] = values
    sex = rng.choice(["male", "female"], N)
    spec = {
        "name": "fuzz",
        "source": {"kind": "csv", "path": "data.csv"},
        "demographics": [{"trait": "gender", "column": "sex", "question": "Sex?", "options": ["Male", "Female"], "values": {"male": "Male", "female": "Female"}}],
        "questions": [question],
    }
    df = pd.DataFrame({"q col": raw, "sex": sex, "w": rng.uniform(0, 2, N), "age": rng.integers(15, 90, N)})
    if draw(st.booleans()):
        spec["weight"] = "w"
        if draw(st.booleans()):
            df["w"] = 0.0
    if draw(st.booleans()):
        spec["filters"] = {"age": draw(st.sampled_from([{"min": 18}, {"max": 200}, {"not": [15, 16]}, {"min": 18, "max": 120}, 999, {"mni": 3}, {"min": "x"}]))}
    df["country"] = rng.choice(COUNTRIES, N)
    if draw(st.integers(0, 3)) == 0:  # a filter on values, possibly misspelt
        spec.setdefault("filters", {})
        if isinstance(spec["filters"], dict):
            spec["filters"]["country"] = draw(st.sampled_from([
                ["USA", "Swedn"], ["USA", "Sweden"], {"not": ["Norwy"]}, {"not": ["Norway"]}, "USA", {"not": ["Norway", "Nrway"]},
            ]))
    if draw(st.integers(0, 4)) == 0:  # a trait that coding leaves without a valid value
        spec["demographics"][0]["refusal"] = ["male", "female"]
    if draw(st.booleans()):
        spec["x-anchor"] = options
    for _ in range(draw(st.integers(0, 2))):  # damage
        spec = _damage(draw, spec)
    return spec, df, truth, spec.get("filters")


COUNTRIES = ["USA", "Sweden", "Norway"]


def _damage(draw, spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    where = draw(st.sampled_from(["top", "questions", "demographics", "source"]))
    node = spec.get(where, spec) if where != "top" else spec
    if isinstance(node, list) and node:
        node = node[0]
    if not isinstance(node, dict) or not node:
        return spec
    key = draw(st.sampled_from(sorted(node, key=str) + ["extra", "x-ok", "y-bad"]))
    action = draw(st.sampled_from(["drop", "odd", "odd"]))
    if action == "drop":
        node.pop(key, None)
    else:
        node[key] = draw(ODD)
    return spec


def _write_and_load(spec, frame: pd.DataFrame, folder: Path, data_name: str):
    """Write the case's data and study YAML, load it: ``(study, "")``, or
    ``(None, outcome)`` when loading stopped (one line, or a traceback)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / data_name, index=False)
    path = folder / "study.yaml"
    path.write_text(yaml.dump(spec, Dumper=DUMPER, allow_unicode=True))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            return load_study(path), ""
        except StudyError as e:
            return None, _one_line_outcome(str(e), str(path))
        except Exception:  # noqa: BLE001 -- the outcome being measured
            return None, "traceback"


def run_study_case(case, folder: Path) -> str:
    spec, df, truth, filters = case
    study, stopped = _write_and_load(spec, df, folder, "data.csv")
    if study is None:
        return stopped
    said = " ".join(study.warnings)
    # A filter value no row holds, a trait with no valid value: loaded, but never silently.
    country = (filters or {}).get("country") if isinstance(filters, dict) else None
    listed = country.get("not", []) if isinstance(country, dict) else ([country] if isinstance(country, str) else country or [])
    if isinstance(listed, list) and any(v not in COUNTRIES for v in listed) and "filters.country" not in said:
        return "silently_wrong"
    if "gender" in study.demographics and (study.demographics["gender"] < 0).all() and "demographics[0]" not in said:
        return "silently_wrong"
    if "questions" not in spec or not spec["questions"] or "q" not in study.question_ids:
        return "loaded"
    keep = np.ones(N, dtype=bool)
    age = df["age"].to_numpy()
    f = (filters or {}).get("age") if isinstance(filters, dict) else None
    if isinstance(f, dict):
        keep &= age >= f.get("min", -np.inf)
        keep &= age <= f.get("max", np.inf)
        keep &= ~np.isin(age, f.get("not", []))
    if isinstance(country, dict):
        keep &= ~np.isin(df["country"].to_numpy(), country.get("not", []))
    elif country is not None:
        keep &= np.isin(df["country"].to_numpy(), listed)
    got = study.responses["q"].to_numpy()
    want = truth[keep].astype(float)
    if len(got) == len(want) and np.array_equal(got, want):
        return "loaded" if not study.warnings else "loaded_with_warning"
    return "loaded_with_warning" if study.warnings else "silently_wrong"


AGG_OPTIONS = ["Yes", "No", "Maybe"]
PARTIES = ["Republican", "Democrat"]


@st.composite
def aggregate_case(draw):
    """``(yaml dict, table, truth)``: an OpinionQA-style long table of known counts per party.

    truth: party -> answer counts over the options (refusals excluded); the
    whole sample is their sum.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    counts = {p: rng.integers(1, 40, len(AGG_OPTIONS)) for p in PARTIES}
    refused = {p: int(rng.integers(1, 6)) for p in PARTIES} if draw(st.booleans()) else {}
    shares = draw(st.booleans())
    trait_cell = draw(st.sampled_from(["party", "POLPARTY", "POLPARTY", "PARTY_X"]))  # name, column, unknown
    whole = draw(st.booleans())
    extra_unknown = draw(st.booleans())  # rows of a trait the study does not define
    rows = []

    def add(trait, group, values, refusal, size):
        labels = [*AGG_OPTIONS, *(["Refused"] if refusal is not None else [])]
        cells = [*values, *([refusal] if refusal is not None else [])]
        total = sum(cells)
        for label, c in zip(labels, cells):
            rows.append({"question": "Q1", "trait": trait, "group": group, "option": label,
                         "count": c / total if shares else c, "n": size})

    for p in PARTIES:
        add(trait_cell, p, list(counts[p]), refused.get(p), int(sum(counts[p]) + refused.get(p, 0)))
    if whole:
        add("", "", list(sum(counts.values())), sum(refused.values()) if refused else None,
            int(sum(sum(c) for c in counts.values()) + sum(refused.values())))
    if extra_unknown:
        add("CREGION", "South", [1, 2, 3], None, 6)
    source = {"kind": "aggregate", "path": "counts.csv", "trait_column": "trait", "group_column": "group"}
    if shares and draw(st.booleans()):
        source["size_column"] = "n"
    question = {"id": "q", "column": "Q1", "text": "Q?", "options": AGG_OPTIONS}
    if refused:
        question["missing"] = ["Refused"] if draw(st.integers(0, 5)) else []  # sometimes forgotten: an error
    spec = {
        "name": "aggfuzz",
        "source": source,
        "demographics": [{"trait": "party", "column": "POLPARTY", "question": "Party?", "options": PARTIES}],
        "questions": [question],
    }
    for _ in range(draw(st.integers(0, 1))):
        spec = _damage(draw, spec)
    return spec, pd.DataFrame(rows), counts, trait_cell, extra_unknown, shares


def run_aggregate_case(case, folder: Path) -> str:
    spec, table, counts, trait_cell, extra_unknown, shares = case
    study, stopped = _write_and_load(spec, table, folder, "counts.csv")
    if study is None:
        return stopped
    said = " ".join(study.warnings)
    names = {t.name for t in study.traits} | {t.column for t in study.traits if t.column}
    cells = {c for c in table["trait"].fillna("").astype(str).str.strip() if c}
    if cells - names and "source.trait_column" not in said:
        return "silently_wrong"  # rows left out without a word
    sized = bool(isinstance(spec.get("source"), dict) and spec["source"].get("size_column"))
    if shares and not sized and study.counts_kind != "shares":
        return "silently_wrong"  # shares taken for counts: merged groups would be weighted wrongly
    if "q" not in study.question_ids:
        return "loaded_with_warning" if study.warnings else "loaded"

    def close(got, want):
        return np.allclose(got, np.asarray(want, float) / np.sum(want), atol=1e-6)

    ok = close(study.distribution("q"), sum(counts.values()))
    if trait_cell in names and "party" in names:
        for p in PARTIES:
            ok &= close(study.subgroup("party", p).distribution("q"), counts[p])
    if ok:
        return "loaded_with_warning" if study.warnings else "loaded"
    return "loaded_with_warning" if study.warnings else "silently_wrong"


def _one_line_outcome(message: str, label: str) -> str:
    # "<file>: <field>: <what>" on one line
    if "\n" in message or not message.startswith(f"{label}: ") or len(message.split(": ")) < 3:
        return "bad_message"
    return "error"


SCENARIO_BASE = {
    "name": "fuzz",
    "scenario": "survey",
    "seed": 0,
    "population": {"size": 4, "conditions": ["anthology"]},
    "human": {"study": "beps", "sample": 10},
    "questionnaire": {"order": "fixed"},
}


@st.composite
def scenario_case(draw):
    """A scenario YAML (possibly damaged, possibly with x- keys) and up to two ``--set`` overrides."""
    data = copy.deepcopy(SCENARIO_BASE)
    for _ in range(draw(st.integers(0, 2))):
        section = draw(st.sampled_from(["top", "population", "human", "questionnaire"]))
        node = data if section == "top" else data.setdefault(section, {})
        if not isinstance(node, dict):
            continue
        key = draw(st.sampled_from(sorted(node, key=str) + ["extra", "x-ok", "sise"]))
        if draw(st.booleans()):
            node.pop(key, None)
        else:
            node[key] = draw(ODD)
    if draw(st.booleans()):
        data["x-common"] = {"size": 3}
    overrides = draw(st.lists(override_text(), max_size=2))
    return data, overrides


KEY_CHARS = st.sampled_from(list("abz._[]\"'=- ") + ["population", "size", "human", "overrides", "filters", "political.knowledge", "seed", "questionnaire"])


@st.composite
def override_text(draw):
    if draw(st.booleans()):
        key = draw(st.sampled_from([
            "population.size", "seed", "human.sample", "human.overrides.filters[\"political.knowledge\"]",
            "human.overrides.filters.'a.b'", "questionnaire.questions", "population.conditions", "engine.kind", "nope.nope",
        ]))
    else:
        key = "".join(draw(st.lists(KEY_CHARS, max_size=6)))
    value = draw(st.one_of(st.sampled_from(["3", "ten", "[anthology]", "{not: [0]}", "", "[", "true", "-1", "null"]), st.text(max_size=5)))
    return f"{key}={value}" if draw(st.integers(0, 9)) else key


def run_scenario_case(case, folder: Path) -> str:
    data, overrides = case
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scenario.yaml"
    path.write_text(yaml.dump(data, Dumper=DUMPER, allow_unicode=True))
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        message = str(e)
        if "\n" in message:
            return "bad_message"
        # A file problem names the file; a malformed --set names the override.
        if message.startswith(f"{path}: ") or re.match(r"--set .*: expected ", message):
            return "error"
        return "bad_message"
    except PersonaeError:
        return "bad_message"  # another kind of project error: not the config's one-line contract
    except Exception:  # noqa: BLE001 -- the outcome being measured
        return "traceback"
    # Loaded: what the file and the overrides said is what was loaded.
    expected = data.get("population", {}).get("size") if isinstance(data.get("population"), dict) else None
    for text in overrides:  # the last --set of population.size wins
        m = re.fullmatch(r"population\.size=(\d+)", text)
        if m:
            expected = int(m.group(1))
        elif text.startswith("population"):
            expected = None  # another override touched the section: no simple expectation
    if isinstance(expected, int) and not isinstance(expected, bool) and cfg.population.size != expected:
        return "silently_wrong"
    return "loaded"
