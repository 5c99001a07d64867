"""Tables of persona-vs-human evaluations: conditions (also printed on the
terminal), per question, per subgroup, the partisan gaps, and their Markdown form.

Tables follow the papers' layout: one row per persona condition (Bio, QA,
Portray, Anthology, Interview, ... with its matching method), columns WD /
Fro. / alpha for each study, and a last row with the human lower bound.
Floats are formatted with fixed precision and rows keep the caller's order, so
the report files (:mod:`analysis.report`) are deterministic.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.evaluation_results import Evaluation
from analysis.gaps import HUMAN_GAP_REFERENCE, Gap
from analysis.lower_bound import LowerBound
from analysis.partisan import PARTIES

DIGITS = 3  # decimals shown in tables (the papers report three)
LOWER_BOUND_ROW = "Human (lower bound)"
ROW = "row"  # the column holding the paper's row label (a preset's ``rows:``)


def fmt(x, digits: int = DIGITS) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _ci(ev: Evaluation, key: str, digits: int = DIGITS) -> str:
    ci = ev.ci.get(key)
    return f"[{fmt(ci.low, digits)}, {fmt(ci.high, digits)}]" if ci else ""


def study_names(evaluations: Sequence[Evaluation]) -> list[str]:
    return list(dict.fromkeys(ev.study for ev in evaluations))


def lower_bounds(evaluations: Sequence[Evaluation]) -> dict[str, LowerBound | None]:
    out: dict[str, LowerBound | None] = {}
    for ev in evaluations:
        if out.get(ev.study) is None:
            out[ev.study] = ev.lower_bound
    return out


def conditions_table(
    evaluations: Sequence[Evaluation], *, ci: bool = False, digits: int | None = None, row_labels: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Paper-style table: rows = conditions, columns = (study, WD / Fro. / alpha), last row = human lower bound.

    Values are floats unless ``digits`` is given (then formatted strings, with
    ``ci=True`` adding the bootstrap intervals).  alpha is the personas'; the
    lower-bound row shows the alpha of a random half of the humans.
    ``row_labels`` (condition label -> the paper's row label, a preset's
    ``rows:`` read backwards) adds the paper's label as the first index level.
    """
    studies = study_names(evaluations)
    rows: dict[tuple[str, str], dict] = {}
    for ev in evaluations:
        key = (ev.condition, ev.matching or "n/a")
        row = rows.setdefault(key, {})
        for metric, value, ci_key in (("WD", ev.wd, "wd"), ("Fro.", ev.fro, "fro"), ("alpha", ev.alpha_persona, "alpha_persona")):
            if digits is None:
                row[(ev.study, metric)] = value
            else:
                cell = fmt(value, digits)
                row[(ev.study, metric)] = f"{cell} {_ci(ev, ci_key, digits)}".strip() if ci else cell
    lbs = lower_bounds(evaluations)
    lb_row = {}
    for study in studies:
        lb = lbs.get(study)
        for metric, attr in (("WD", "wd"), ("Fro.", "fro"), ("alpha", "alpha")):
            value = getattr(lb, attr) if lb is not None else float("nan")
            lb_row[(study, metric)] = value if digits is None else fmt(value, digits)
    rows[(LOWER_BOUND_ROW, "")] = lb_row
    columns = pd.MultiIndex.from_tuples([(s, m) for s in studies for m in ("WD", "Fro.", "alpha")], names=["study", "metric"])
    index = pd.MultiIndex.from_tuples(list(rows), names=["condition", "matching"])
    df = pd.DataFrame([rows[k] for k in rows], index=index, columns=columns)
    if row_labels:
        labelled = [(c if c == LOWER_BOUND_ROW else paper_row(row_labels, _label(c, m)), c, m) for c, m in rows]
        df.index = pd.MultiIndex.from_tuples(labelled, names=[ROW, "condition", "matching"])
    return df


def _label(condition: str, matching) -> str:
    """A condition's reported label from its two columns (Evaluation.label's format)."""
    return condition if matching in (None, "", "n/a") else f"{condition} ({matching})"


def paper_row(row_labels: Mapping[str, str], label: str) -> str:
    """The paper's label of a reported condition (``""`` when the paper's table has no such row)."""
    return row_labels.get(label, "")


def with_paper_rows(df: pd.DataFrame, row_labels: Mapping[str, str] | None, column: str = "condition") -> pd.DataFrame:
    """``df`` with a first ``row`` column: the paper's label of each row's condition
    (``column`` holds the label, or the condition beside a ``matching`` column)."""
    if not row_labels or column not in df.columns or ROW in df.columns:
        return df
    matching = df["matching"] if "matching" in df.columns else [None] * len(df)
    labels = [paper_row(row_labels, _label(str(c), m)) for c, m in zip(df[column], matching)]
    return df.assign(**{ROW: labels})[[ROW, *df.columns]]


def questions_table(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """Long table: one row per (condition, question) with WD and both distributions."""
    records = []
    for ev in evaluations:
        lb = ev.lower_bound.per_question_wd if ev.lower_bound is not None else {}
        for q in ev.questions:
            records.append(
                {
                    "study": ev.study,
                    "condition": ev.condition,
                    "matching": ev.matching or "n/a",
                    "question": q.id,
                    "wd": q.wd,
                    "lower_bound_wd": lb.get(q.id, float("nan")),
                    "n_humans": q.n_humans,
                    "human_dist": ";".join(f"{p:.6f}" for p in q.human_dist),
                    "persona_dist": ";".join(f"{p:.6f}" for p in q.persona_dist),
                    "options": ";".join(q.options),
                }
            )
    return pd.DataFrame.from_records(records)


def subgroups_table(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """Long table: one row per (condition, trait, group) with the group's metrics and lower bound."""
    records = []
    for ev in evaluations:
        for g in ev.subgroups:
            lb = g.lower_bound
            records.append(
                {
                    "study": ev.study,
                    "condition": ev.condition,
                    "matching": ev.matching or "n/a",
                    "trait": g.trait,
                    "group": g.group,
                    "n_humans": g.n_humans,
                    "wd": g.wd,
                    "fro": g.fro,
                    "alpha_persona": g.alpha_persona,
                    "alpha_human": g.alpha_human,
                    "lb_wd": lb.wd if lb else float("nan"),
                    "lb_fro": lb.fro if lb else float("nan"),
                    "lb_alpha": lb.alpha if lb else float("nan"),
                }
            )
    return pd.DataFrame.from_records(records)


def gap_table(
    kind: str,
    conditions: Mapping[str, Mapping[str, Gap]],
    wd: Mapping[str, Mapping[str, float]] | None = None,
    human: Mapping[str, Gap] | None = None,
) -> pd.DataFrame:
    """Higher-order binding table (hostility / subversion / meta_perception), as in Kang et al. 2025.

    ``conditions``: condition -> party -> :class:`~analysis.gaps.Gap` of the
    personas; ``wd``: condition -> party -> WD between human and persona
    answers of that party; ``human``: party -> the human Gap computed from data
    (default: the published values, :data:`~analysis.gaps.HUMAN_GAP_REFERENCE`).
    Columns: delta / Cohen's d / WD per party; first row = Human.
    """
    parties = PARTIES
    ref = human if human is not None else HUMAN_GAP_REFERENCE[kind]
    columns = [f"delta {p}" for p in parties] + [f"d {p}" for p in parties] + [f"WD {p}" for p in parties]
    rows = {"Human": [ref[p].delta for p in parties] + [ref[p].d for p in parties] + [float("nan")] * 2}
    for name, by_party in conditions.items():
        wds = (wd or {}).get(name, {})
        rows[name] = (
            [by_party[p].delta for p in parties] + [by_party[p].d for p in parties] + [wds.get(p, float("nan")) for p in parties]
        )
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def markdown_table(df: pd.DataFrame, digits: int = DIGITS) -> str:
    """A GitHub Markdown table (no extra dependency); MultiIndex headers are joined with a space."""
    def cell(x) -> str:
        if isinstance(x, (float, np.floating)):
            return fmt(float(x), digits)
        return str(x).replace("|", "\\|")

    def join(label) -> str:
        return " ".join(str(p) for p in label if str(p)) if isinstance(label, tuple) else str(label)

    index_names = [n or "" for n in (df.index.names if isinstance(df.index, pd.MultiIndex) else [df.index.name])]
    header = index_names + [join(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for idx, row in df.iterrows():
        keys = list(idx) if isinstance(idx, tuple) else [idx]
        lines.append("| " + " | ".join([cell(k) for k in keys] + [cell(v) for v in row.to_list()]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Terminal
# ---------------------------------------------------------------------------


def print_summary(evaluations: Sequence[Evaluation], console=None, *, title: str | None = None) -> None:
    """Print the conditions table (with 95% CIs) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    df = conditions_table(evaluations, ci=True, digits=DIGITS)
    scale = "WD on [0,1] positions" if all(ev.normalize for ev in evaluations) else "WD on raw positions"
    table = Table(title=title or f"Personas vs humans ({scale}; Fro. and alpha from individual answers)")
    table.add_column("Condition")
    table.add_column("Matching")
    for study, metric in df.columns:
        arrow = " (lower)" if metric in ("WD", "Fro.") else " (higher)"
        table.add_column(f"{study}\n{metric}{arrow}", justify="right")
    for (condition, matching), row in df.iterrows():
        style = "bold" if condition == LOWER_BOUND_ROW else None
        table.add_row(condition, matching, *[str(v) for v in row.to_list()], style=style)
    console.print(table)
