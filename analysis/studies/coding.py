"""Raw value -> option index: how one data column becomes answers (the rules are in :mod:`analysis.studies`)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.studies.errors import StudyError
from analysis.studies.schema import Codes, _bin_edges, _ItemSpec, _option_index


def _key(x: Any) -> Any:
    """Normalise a raw value so that 1, 1.0, "1" and "1.0" compare equal; other text is stripped."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    s = str(x).strip()
    try:
        return float(s)
    except ValueError:
        return s


# Text that means "no value" in exported tables -- unless an item lists it as an
# option label ("N/A", "None"), which is checked first.
NA_TEXT = frozenset({"", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "<NA>", "None"})


def _is_missing(x: Any) -> bool:
    if isinstance(x, str):
        return x.strip() in NA_TEXT
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x) if isinstance(x, str) else str(x)


def _numeric_label(label: str) -> float | None:
    k = _key(label)
    return k if isinstance(k, float) and math.isfinite(k) else None


def _code_series(
    raw: pd.Series,
    item: _ItemSpec,
    default_missing: bool,
    where: str,
    codes: Codes | None = None,
    notes: list[str] | None = None,
) -> pd.Series:
    """Map one raw data column to option indices (float, NaN = missing); raise on unmapped values.

    ``codes`` is the study-wide default of ``item.codes``; ``notes`` collects warnings.
    """
    options = item.options
    missing = {_key(v) for v in (*item.missing, *item.refusal)}
    column = item.column or "?"
    if item.bins is not None:
        edges = _bin_edges(item, where)
        values = pd.to_numeric(raw, errors="coerce")
        bad_text = raw[values.isna() & ~raw.map(_is_missing)]
        if len(bad_text):
            value = _fmt(bad_text.iloc[0])
            raise StudyError(f"{where}.bins: column '{column}' has non-numeric value {value} (binned columns must be numeric)")
        x = values.to_numpy(float)
        drop = np.isnan(x) | np.isin(x, [m for m in missing if isinstance(m, float)])
        inside = (x >= edges[0]) & (x <= edges[-1])
        outside = ~drop & ~inside
        if outside.any():
            v = x[outside][0]
            raise StudyError(
                f"{where}.bins: value {_fmt(float(v))} in column '{column}' is outside the bins "
                f"[{_fmt(float(edges[0]))}, {_fmt(float(edges[-1]))}] (list it under missing or widen the bins)"
            )
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(options) - 1).astype(float)
        idx[drop] = np.nan
        return pd.Series(idx, index=raw.index)

    explicit = {_key(k): _option_index(v, options, f"{where}.values[{k!r}]") for k, v in (item.values or {}).items()}
    mode = item.codes or codes
    numeric = [_numeric_label(o) for o in options]
    # Every label a number ("0".."10", "90", "100"): numbers are read as labels unless
    # codes says otherwise -- reading them as positions would shift them silently.
    by_label = mode == "labels" or (mode is None and all(x is not None for x in numeric))
    text_labels = {o.strip(): i for i, o in enumerate(options)}
    number_labels = {x: i for i, x in enumerate(numeric) if x is not None}
    first = 0 if mode == "zero_based" else 1
    mapping: dict[Any, float] = {}
    for value in pd.unique(raw.dropna()):
        k = _key(value)
        text = value.strip() if isinstance(value, str) else None
        if k in missing:
            code = np.nan
        elif text is not None and _is_missing(text) and text not in text_labels and k not in explicit:
            code = np.nan  # "NA", "N/A", ... that no option is called
        elif item.values is not None:
            if k not in explicit:
                mapped = ", ".join(_fmt(m) for m in explicit) or "none"
                raise StudyError(
                    f"{where}.values: value {_fmt(k)} in column '{column}' has no mapping "
                    f"(mapped: {mapped}); add it to values or to missing"
                )
            code = explicit[k]
        elif text is not None and text in text_labels:  # a label written out: always that option
            code = text_labels[text]
        elif isinstance(k, float) and by_label and k in number_labels:
            code = number_labels[k]
        elif isinstance(k, float) and not by_label and k.is_integer() and first <= k < first + len(options):
            code = int(k) - first
        elif default_missing and isinstance(k, float) and (k >= 90 or k < 0):
            code = np.nan
        elif by_label:
            hint = "" if mode == "labels" else "; if the data hold codes 1..K or 0..K-1, set codes: one_based or codes: zero_based"
            raise StudyError(
                f"{where}.options: value {_fmt(k)} in column '{column}' matches no option label "
                f"(options: {', '.join(options)}){hint}, or list it under missing"
            )
        else:
            last = first + len(options) - 1
            hint = "; for 0-based data set codes: zero_based" if first == 1 and k == 0 else ""
            raise StudyError(
                f"{where}.options: column '{column}' has code {_fmt(k)}, outside codes {first}..{last} for the "
                f"{len(options)} options listed (codes >= 90 or < 0 are refusals){hint}; "
                "add the option, give values, or list the code under missing"
            )
        mapping[value] = code
    if notes is not None and mode in ("one_based", "zero_based") and item.values is None:
        clash = [(i + first, o) for i, (o, x) in enumerate(zip(options, numeric)) if x is not None and x != i + first]
        if clash:
            c, o = clash[0]
            notes.append(
                f"{where}.codes: option labels look numeric but disagree with codes: {mode} "
                f"(code {c} -> {o!r}); check the coding, or drop codes to read the numbers as labels"
            )
    return raw.map(mapping).astype(float)
