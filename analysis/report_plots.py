"""Plots of persona-vs-human evaluations: answer distributions, correlation
heatmaps, and the metrics against the human lower bound.

Figures are drawn on a private ``Figure``/``FigureCanvasAgg`` (:func:`new_figure`)
so the global pyplot backend is never changed; :func:`save_png` renders them by
Agg without a timestamp or software tag (``metadata={"Software": None}``;
matplotlib writes no date into PNGs), so equal plots are equal files.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.evaluation_results import Evaluation
from analysis.report_tables import fmt, lower_bounds, study_names


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
        ax.set_title(f"{q.id} (WD {fmt(q.wd)})", fontsize=8)
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
    fig.suptitle(f"{ev.study}: {ev.label} (Fro. {fmt(ev.fro)})", fontsize=11)
    return save_png(fig, path)


def plot_metrics_vs_lower_bound(evaluations: Sequence[Evaluation], path: Path) -> Path:
    """Bars of WD / Fro. / alpha per condition, with the human lower bound as a dashed line."""
    fig = new_figure(13, 4.6)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.3, top=0.86, wspace=0.25)
    labels = [f"{ev.label}\n{ev.study}" if len(study_names(evaluations)) > 1 else ev.label for ev in evaluations]
    lbs = lower_bounds(evaluations)
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
