"""Aggregate sources: published answer counts (or shares) per question, subgroup
and option, as OpinionQA / SubPOP publish them -- a study without respondents."""
from __future__ import annotations

import difflib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.studies.coding import _code_series, _is_missing
from analysis.studies.errors import StudyError, _warn
from analysis.studies.reading import _apply_filters, _check_column
from analysis.studies.schema import CROSS, StudySpec
from analysis.studies.study import HumanStudy, Question, Trait, _question_positions, _scales
from core.errors import one_line


def _load_aggregate(spec: StudySpec, df: pd.DataFrame, label: str, origin: str) -> HumanStudy:
    """Per-question (per-subgroup) answer counts -> a study without individual respondents."""
    src = spec.source
    for name in ("question_column", "option_column", "count_column", "trait_column", "group_column", "size_column"):
        column = getattr(src, name)
        if column is not None:
            _check_column(df, column, f"{label}: source.{name}")
    if (src.trait_column is None) != (src.group_column is None):
        raise StudyError(f"{label}: source.group_column: trait_column and group_column go together (give both or neither)")
    notes: list[str] = []
    df, applied = _apply_filters(df, spec, label, notes)
    counts = pd.to_numeric(df[src.count_column], errors="coerce")
    if counts.isna().any() or (counts < 0).any():
        raise StudyError(f"{label}: source.count_column: column '{src.count_column}' must hold counts or shares >= 0")
    if src.size_column:
        size = pd.to_numeric(df[src.size_column], errors="coerce")
        if size.isna().any() or (size < 0).any():
            raise StudyError(f"{label}: source.size_column: column '{src.size_column}' must hold group sizes >= 0")
        counts = counts * size
    # A trait cell names a trait or its data column; "A x B" a crossed subgroup.
    names = {}
    for t in spec.demographics:
        names[t.trait] = t.trait
        if t.column:
            names.setdefault(t.column, t.trait)
    trait_of = pd.Series("", index=df.index)
    if src.trait_column:
        def canonical(v):
            if _is_missing(v) or str(v).strip() in ("", "Overall"):
                return ""
            parts = [names.get(p.strip(), None) for p in str(v).split(CROSS)]
            return CROSS.join(parts) if all(parts) else None  # None: a trait the study does not define

        trait_of = df[src.trait_column].map(canonical)
        _note_unknown_traits(df[src.trait_column], trait_of, names, label, notes)
    specs = {t.trait: (j, t) for j, t in enumerate(spec.demographics)}
    frames, questions, every_row = [], [], []
    for i, q in enumerate(spec.questions):
        where = f"{label}: questions[{i}]"
        key = q.column or q.id
        is_q = (df[src.question_column].astype(str).str.strip() == key).to_numpy()
        if not is_q.any():
            field_name = "column" if q.column else "id"
            raise StudyError(f"{where}.{field_name}: no rows for question '{key}' in the aggregate table (column '{src.question_column}')")
        as_option = q.model_copy(update={"column": src.option_column})
        option = _code_series(df.loc[is_q, src.option_column], as_option, spec.default_missing, where, spec.codes, notes)
        part = pd.DataFrame({"trait": trait_of[is_q], "group": -1, "question": q.id, "option": option, "count": counts[is_q]})
        part = part[part["trait"].notna()]
        for crossed in part["trait"].unique():
            if crossed == "":
                continue
            sel = (part["trait"] == crossed).to_numpy()
            raw_groups = df.loc[part.index[sel], src.group_column]
            code = np.zeros(int(sel.sum()), dtype=np.int64)
            bad = np.zeros(int(sel.sum()), dtype=bool)
            pieces = raw_groups.map(lambda v: str(v).split(CROSS) if not _is_missing(v) else [])
            for k, trait in enumerate(crossed.split(CROSS)):
                j, tspec = specs[trait]
                cells = pieces.map(lambda ps, k=k: ps[k].strip() if k < len(ps) else np.nan)
                item = tspec.model_copy(update={"column": src.group_column})
                c = _code_series(cells, item, spec.default_missing, f"{label}: demographics[{j}]", spec.codes, notes)
                c = c.fillna(-1).to_numpy(np.int64)
                bad |= c < 0
                code = code * len(tspec.options) + np.maximum(c, 0)
            part.loc[part.index[sel], "group"] = np.where(bad, -1, code)
        # Shares are told from counts on every row, refusals included: per-group shares
        # with a "Refused" row sum to 1 only with it.
        every_row.append(part)
        shares = not src.size_column and _looks_like_shares(part)
        part = part[part["option"].notna()]
        if not (part["trait"] == "").any():
            part = pd.concat([part, _derived_whole_sample(part, spec, where, q.id, shares, notes)], ignore_index=True)
        frames.append(part)
        questions.append(Question(q.id, q.text, tuple(q.options), _question_positions(spec, q), q.column, q.id in spec.nominal))
    table = pd.concat(frames, ignore_index=True)
    table["option"] = table["option"].astype(np.int64)
    table["group"] = table["group"].astype(np.int64)
    kind = _counts_kind(table, not src.size_column and _looks_like_shares(pd.concat(every_row, ignore_index=True)))
    _warn(notes)
    return HumanStudy(
        name=spec.name,
        questions=questions,
        traits=[Trait(t.trait, t.question, tuple(t.options), t.column) for t in spec.demographics],
        responses=pd.DataFrame(columns=[q.id for q in questions], dtype=float),
        weights=np.ones(0),
        demographics=pd.DataFrame(columns=[t.trait for t in spec.demographics], dtype=np.int64),
        row_ids=np.arange(0),
        source=origin,
        description=spec.description or "",
        aggregate=table,
        label=label,
        scales=_scales(spec),
        title=spec.title or "",
        warnings=tuple(notes),
        counts_kind=kind,
        filters=applied,
    )


def _note_unknown_traits(cells: pd.Series, trait_of: pd.Series, names: Mapping[str, str], label: str, notes: list[str]) -> None:
    """Rows whose trait cell names no trait of the study are left out -- said in one line, never silently."""
    unknown = trait_of.isna()
    if not unknown.any():
        return
    found = list(dict.fromkeys(str(c).strip() for c in cells[unknown]))
    grouped = int((trait_of != "").sum())
    shown = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "")
    first = found[0].split(CROSS)[0].strip()
    close = difflib.get_close_matches(first, list(names), n=1, cutoff=0.6)
    hint = f"closest trait: {close[0]}; " if close else ""
    notes.append(one_line(
        f"{label}: source.trait_column: {int(unknown.sum())} of {grouped} subgroup rows name no trait of the study ({shown}) "
        f"and are left out; {hint}to use them, give the trait that name as its column (e.g. column: {first})"
    ))


def _block_sums(part: pd.DataFrame) -> pd.Series:
    return part.groupby(["trait", "group", "question"])["count"].sum()


def _looks_like_shares(part: pd.DataFrame) -> bool:
    """Every (trait, group, question) block sums to 1: per-group shares, not counts."""
    sums = _block_sums(part)
    return bool(len(sums)) and bool(np.allclose(sums.to_numpy(float), 1.0, atol=1e-3)) and bool((part["count"] <= 1).all())


def _counts_kind(table: pd.DataFrame, shares: bool) -> str:
    if shares:
        return "shares"
    c = table["count"].to_numpy(float)
    return "counts" if np.allclose(c, np.round(c)) else "weighted"


def _derived_whole_sample(part: pd.DataFrame, spec: StudySpec, where: str, qid: str, shares: bool, notes: list[str]) -> pd.DataFrame:
    """The whole sample as the sum over the groups of one trait that covers all its options."""
    for t in spec.demographics:
        rows = part[part["trait"] == t.trait]
        if set(range(len(t.options))) <= set(rows["group"]):
            if shares:
                raise StudyError(
                    f"{where}.id: no whole-sample rows for '{qid}', and the groups of '{t.trait}' hold shares: "
                    "summing them needs each group's size (source.size_column)"
                )
            whole = rows.groupby("option", as_index=False)["count"].sum()
            notes.append(f"{where}: no whole-sample rows for '{qid}': derived by summing the {len(t.options)} groups of '{t.trait}'")
            return whole.assign(trait="", group=-1, question=qid)[["trait", "group", "question", "option", "count"]]
    raise StudyError(
        f"{where}.id: the aggregate table has no whole-sample rows for '{qid}' (rows with an empty trait) "
        "and no trait whose groups cover all its options to derive them from"
    )
