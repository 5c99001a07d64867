"""Reports of persona-vs-human evaluations: a terminal table, CSV / Markdown files and plots.

Tables follow the papers' layout: one row per persona condition (Bio, QA,
Portray, Anthology, Interview, ... with its matching method), columns WD /
Fro. / alpha for each study, and a last row with the human lower bound.

Everything written is deterministic -- byte-identical for identical inputs, as
replay relies on: floats are formatted with fixed precision, rows keep the
caller's order, and PNGs are rendered by Agg without a timestamp or software
tag (``metadata={"Software": None}``; matplotlib writes no date into PNGs).
Figures are drawn on a private ``Figure``/``FigureCanvasAgg`` so the global
pyplot backend is never changed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.lower_bound import LowerBound
from analysis.metrics import HUMAN_GAP_REFERENCE, Gap
from analysis.partisan import PARTIES
from analysis.subgroups import Evaluation

DIGITS = 3  # decimals shown in tables (the papers report three)
CSV_FLOAT = "%.6f"
LOWER_BOUND_ROW = "Human (lower bound)"
ROW = "row"  # the column holding the paper's row label (a preset's ``rows:``)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _fmt(x, digits: int = DIGITS) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _ci(ev: Evaluation, key: str, digits: int = DIGITS) -> str:
    ci = ev.ci.get(key)
    return f"[{_fmt(ci.low, digits)}, {_fmt(ci.high, digits)}]" if ci else ""


def _studies(evaluations: Sequence[Evaluation]) -> list[str]:
    return list(dict.fromkeys(ev.study for ev in evaluations))


def _lower_bounds(evaluations: Sequence[Evaluation]) -> dict[str, LowerBound | None]:
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
    studies = _studies(evaluations)
    rows: dict[tuple[str, str], dict] = {}
    for ev in evaluations:
        key = (ev.condition, ev.matching or "n/a")
        row = rows.setdefault(key, {})
        for metric, value, ci_key in (("WD", ev.wd, "wd"), ("Fro.", ev.fro, "fro"), ("alpha", ev.alpha_persona, "alpha_persona")):
            if digits is None:
                row[(ev.study, metric)] = value
            else:
                cell = _fmt(value, digits)
                row[(ev.study, metric)] = f"{cell} {_ci(ev, ci_key, digits)}".strip() if ci else cell
    lbs = _lower_bounds(evaluations)
    lb_row = {}
    for study in studies:
        lb = lbs.get(study)
        for metric, attr in (("WD", "wd"), ("Fro.", "fro"), ("alpha", "alpha")):
            value = getattr(lb, attr) if lb is not None else float("nan")
            lb_row[(study, metric)] = value if digits is None else _fmt(value, digits)
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

    ``conditions``: condition -> party -> :class:`~analysis.metrics.Gap` of the
    personas; ``wd``: condition -> party -> WD between human and persona
    answers of that party; ``human``: party -> the human Gap computed from data
    (default: the published values, :data:`~analysis.metrics.HUMAN_GAP_REFERENCE`).
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
            return _fmt(float(x), digits)
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


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def new_figure(width: float, height: float):
    """A matplotlib figure of ``width`` x ``height`` inches, drawn off-screen (no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG without a timestamp, so equal plots are equal files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def plot_distributions(ev: Evaluation, path: Path) -> Path:
    """Human vs persona answer distribution, one panel per question."""
    n = len(ev.questions)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(3.2 * cols, 2.4 * rows + 0.6)
    # Fixed margins instead of tight_layout, which costs a full extra draw.
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.04, top=1 - 0.6 / (2.4 * rows + 0.6), hspace=0.55, wspace=0.25)
    for i, q in enumerate(ev.questions):
        ax = fig.add_subplot(rows, cols, i + 1)
        x = np.arange(len(q.options))
        ax.bar(x - 0.2, np.nan_to_num(q.human_dist), width=0.4, label="Human", color="#4c72b0")
        ax.bar(x + 0.2, np.nan_to_num(q.persona_dist), width=0.4, label="Persona", color="#dd8452")
        ax.set_xticks(x, [str(k + 1) for k in x], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1], ["0", ".5", "1"] if i % cols == 0 else [], fontsize=7)
        ax.set_title(f"{q.id} (WD {_fmt(q.wd)})", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{ev.study}: {ev.label} -- options numbered in questionnaire order", fontsize=10)
    return save_png(fig, path)


def plot_correlations(ev: Evaluation, path: Path) -> Path:
    """The human and persona inter-question correlation matrices side by side."""
    fig = new_figure(11, 5)
    ids = [q.id for q in ev.questions]
    for k, (name, corr) in enumerate((("Human", ev.corr_human), ("Persona", ev.corr_persona))):
        ax = fig.add_subplot(1, 2, k + 1)
        image = ax.imshow(np.nan_to_num(corr), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(ids)), ids, rotation=90, fontsize=6)
        ax.set_yticks(range(len(ids)), ids, fontsize=6)
        ax.set_title(name)
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    fig.suptitle(f"{ev.study}: {ev.label} (Fro. {_fmt(ev.fro)})", fontsize=11)
    return save_png(fig, path)


def plot_metrics_vs_lower_bound(evaluations: Sequence[Evaluation], path: Path) -> Path:
    """Bars of WD / Fro. / alpha per condition, with the human lower bound as a dashed line."""
    fig = new_figure(13, 4.6)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.3, top=0.86, wspace=0.25)
    labels = [f"{ev.label}\n{ev.study}" if len(_studies(evaluations)) > 1 else ev.label for ev in evaluations]
    lbs = _lower_bounds(evaluations)
    x = np.arange(len(evaluations))
    panels = (
        ("WD (lower is better)", "wd", "wd"),
        ("Fro. (lower is better)", "fro", "fro"),
        ("alpha (higher is better)", "alpha_persona", "alpha"),
    )
    for k, (metric, attr, lb_attr) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        values = [getattr(ev, attr) for ev in evaluations]
        ax.bar(x, [np.nan_to_num(v) for v in values], color="#55a868")
        for j, v in enumerate(values):
            if not np.isfinite(v):  # undefined: say so, a missing bar would read as 0
                ax.text(j, 0, "n/a", ha="center", va="bottom", fontsize=7)
        for j, ev in enumerate(evaluations):
            lb = lbs.get(ev.study)
            if lb is not None:
                ax.hlines(getattr(lb, lb_attr), j - 0.4, j + 0.4, colors="black", linestyles="dashed")
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        ax.set_title(metric, fontsize=10)
    fig.suptitle("Personas vs human lower bound (dashed)", fontsize=11)
    return save_png(fig, path)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "condition"


def _write_csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    df.to_csv(path, index=index, float_format=CSV_FLOAT, lineterminator="\n")
    return path


def _method_text(evaluations: Sequence[Evaluation], normalized: bool) -> str:
    """What was actually computed, in words: weighted or not, matched or not, which lower bound."""
    aggregate = all(ev.human_data == "aggregate" for ev in evaluations)
    if aggregate:
        human = "the humans' answer distribution from the published counts"
    elif all(ev.weighted for ev in evaluations):
        human = "the humans' survey-weighted answer distribution"
    elif any(ev.weighted for ev in evaluations):
        human = "the humans' answer distribution (survey-weighted where the study has weights)"
    else:
        human = "the humans' answer distribution (unweighted: the study has no survey weights)"
    persona = "the mean distribution of all personas (equal weights; no matching)" if aggregate else "the matched personas' distribution"
    scale = "option positions rescaled to [0, 1] (OpinionQA/SubPOP)" if normalized else "raw option positions (as the Anthology code)"
    text = f"WD: Wasserstein-1 distance per question between {human} and {persona}, {scale}, averaged over questions. "
    if aggregate:
        text += "Fro. and alpha need individual answers and are not defined on aggregate data. "
    else:
        text += "Fro.: Frobenius norm of the difference of the inter-question correlation matrices. alpha: Cronbach's alpha of the personas' answers. "
    bounds = [lb for lb in _lower_bounds(evaluations).values() if lb]
    if not bounds:
        return text + "No human lower bound was computed."
    if aggregate:
        return text + f"Last row: human lower bound, WD only, from {bounds[0].n_splits} random hypergeometric splits of each question's counts."
    return text + f"Last row: split-half human lower bound (mean over {bounds[0].n_splits} random splits)."


def _header(evaluations: Sequence[Evaluation]) -> list[str]:
    """What was applied to the human data (filters, weights, sample, subgroup threshold) and
    the study's warnings, per study, right under the title: a figure is read with its scope."""
    lines: list[str] = []
    studies = _studies(evaluations)
    for study in studies:
        first = next(ev for ev in evaluations if ev.study == study)
        prefix = f"{study}: " if len(studies) > 1 else ""
        lines += [f"- {prefix}{line}" for line in first.scope]
        lines += [f"- {prefix}**warning**: {w}" for w in first.warnings]
    return lines + [""] if lines else []


def summary_markdown(evaluations: Sequence[Evaluation], title: str | None = None, row_labels: Mapping[str, str] | None = None) -> str:
    """The content of ``summary.md``."""
    studies = _studies(evaluations)
    normalized = all(ev.normalize for ev in evaluations)
    lines = [f"# {title or 'Personas vs humans: ' + ', '.join(studies)}", ""]
    lines += _header(evaluations)
    lines.append(_method_text(evaluations, normalized))
    lines += ["", "## Conditions", "", markdown_table(conditions_table(evaluations, ci=True, digits=DIGITS, row_labels=row_labels)), ""]
    alpha_h = {ev.study: (ev.alpha_human, ev.n_humans) for ev in evaluations if ev.human_data != "aggregate"}
    if alpha_h:
        # The respondents actually compared (a human.sample is a subsample), not the whole study.
        lines += ["Human alpha (all respondents compared, as in the header): " + ", ".join(f"{s} {_fmt(a)} (n = {n})" for s, (a, n) in alpha_h.items()), ""]

    per_q = questions_table(evaluations)
    if not per_q.empty:
        lines += ["## WD per question", ""]
        for study in studies:
            part = per_q[per_q["study"] == study]
            wide = part.pivot_table(index="question", columns=["condition", "matching"], values="wd", sort=False)
            wide.columns = [f"{c} ({m})" if m != "n/a" else c for c, m in wide.columns]
            lb = part.drop_duplicates("question").set_index("question")["lower_bound_wd"]
            wide[LOWER_BOUND_ROW] = lb
            wide.index.name = f"{study} question"
            lines += [markdown_table(wide), ""]

    groups = subgroups_table(evaluations)
    if not groups.empty:
        lines += ["## Subgroups", ""]
        columns = ["study", "condition", "matching", "trait", "group", "n_humans", "wd", "fro", "alpha_persona", "lb_wd", "lb_fro", "lb_alpha"]
        shown = with_paper_rows(groups[columns], row_labels)
        lines += [markdown_table(shown.set_index(["study", ROW, "condition"] if row_labels else ["study", "condition"])), ""]

    stats = [(ev.label, ev.match_stats) for ev in evaluations if ev.match_stats is not None]
    if stats:
        lines += ["## Matching weights", ""]
        df = pd.DataFrame(
            [[s.mean, s.median, s.min, s.mean_log, s.n_unique_personas] for _, s in stats],
            index=pd.Index([label for label, _ in stats], name="condition"),
            columns=["mean w", "median w", "min w", "mean log w", "distinct personas"],
        )
        lines += [markdown_table(df, digits=6), ""]
    notes = sorted({n for ev in evaluations for n in ev.notes})
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_report(
    evaluations: Evaluation | Sequence[Evaluation],
    out_dir: str | Path,
    *,
    title: str | None = None,
    plots: bool = True,
    row_labels: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write ``summary.md``, ``conditions.csv``, ``questions.csv``, ``subgroups.csv`` and PNG plots.

    Plots (in ``plots/``): per condition, human vs persona distributions and
    the two correlation heatmaps; for all conditions, metrics vs the human
    lower bound.  ``row_labels``: see :func:`conditions_table`.  Returns the
    paths written, in a fixed order.
    """
    evaluations = [evaluations] if isinstance(evaluations, Evaluation) else list(evaluations)
    if not evaluations:
        raise ValueError("write_report needs at least one evaluation")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = out / "summary.md"
    summary.write_text(summary_markdown(evaluations, title, row_labels), encoding="utf-8", newline="\n")
    written.append(summary)

    table = conditions_table(evaluations, row_labels=row_labels)
    table.columns = [f"{s} {m}" for s, m in table.columns]
    written.append(_write_csv(table.reset_index(), out / "conditions.csv"))
    written.append(_write_csv(with_paper_rows(questions_table(evaluations), row_labels), out / "questions.csv"))
    written.append(_write_csv(with_paper_rows(subgroups_table(evaluations), row_labels), out / "subgroups.csv"))

    if plots:
        seen: dict[str, int] = {}
        for ev in evaluations:
            slug = _slug(f"{ev.study}-{ev.label}")
            seen[slug] = seen.get(slug, 0) + 1
            if seen[slug] > 1:
                slug = f"{slug}-{seen[slug]}"
            written.append(plot_distributions(ev, out / "plots" / f"distributions_{slug}.png"))
            if ev.corr_human is not None and len(ev.questions) > 1:  # one question: no correlations to draw
                written.append(plot_correlations(ev, out / "plots" / f"correlations_{slug}.png"))
        written.append(plot_metrics_vs_lower_bound(evaluations, out / "plots" / "metrics_vs_lower_bound.png"))
    return written
