"""Report files of persona-vs-human evaluations: ``summary.md``, CSV tables and PNG plots.

Everything written is deterministic -- byte-identical for identical inputs, as
replay relies on: floats are formatted with fixed precision, rows keep the
caller's order (:mod:`analysis.report_tables`), and PNGs are rendered by Agg
without a timestamp or software tag (:mod:`analysis.report_plots`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from analysis.evaluation_results import Evaluation
from analysis.report_plots import plot_correlations, plot_distributions, plot_metrics_vs_lower_bound
from analysis.report_tables import (
    DIGITS,
    LOWER_BOUND_ROW,
    ROW,
    conditions_table,
    fmt,
    lower_bounds,
    markdown_table,
    questions_table,
    study_names,
    subgroups_table,
    with_paper_rows,
)

CSV_FLOAT = "%.6f"


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
    bounds = [lb for lb in lower_bounds(evaluations).values() if lb]
    if not bounds:
        return text + "No human lower bound was computed."
    if aggregate:
        return text + f"Last row: human lower bound, WD only, from {bounds[0].n_splits} random hypergeometric splits of each question's counts."
    return text + f"Last row: split-half human lower bound (mean over {bounds[0].n_splits} random splits)."


def _header(evaluations: Sequence[Evaluation]) -> list[str]:
    """What was applied to the human data (filters, weights, sample, subgroup threshold) and
    the study's warnings, per study, right under the title: a figure is read with its scope."""
    lines: list[str] = []
    studies = study_names(evaluations)
    for study in studies:
        first = next(ev for ev in evaluations if ev.study == study)
        prefix = f"{study}: " if len(studies) > 1 else ""
        lines += [f"- {prefix}{line}" for line in first.scope]
        lines += [f"- {prefix}**warning**: {w}" for w in first.warnings]
    return lines + [""] if lines else []


def summary_markdown(evaluations: Sequence[Evaluation], title: str | None = None, row_labels: Mapping[str, str] | None = None) -> str:
    """The content of ``summary.md``."""
    studies = study_names(evaluations)
    normalized = all(ev.normalize for ev in evaluations)
    lines = [f"# {title or 'Personas vs humans: ' + ', '.join(studies)}", ""]
    lines += _header(evaluations)
    lines.append(_method_text(evaluations, normalized))
    lines += ["", "## Conditions", "", markdown_table(conditions_table(evaluations, ci=True, digits=DIGITS, row_labels=row_labels)), ""]
    alpha_h = {ev.study: (ev.alpha_human, ev.n_humans) for ev in evaluations if ev.human_data != "aggregate"}
    if alpha_h:
        # The respondents actually compared (a human.sample is a subsample), not the whole study.
        lines += ["Human alpha (all respondents compared, as in the header): " + ", ".join(f"{s} {fmt(a)} (n = {n})" for s, (a, n) in alpha_h.items()), ""]

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
