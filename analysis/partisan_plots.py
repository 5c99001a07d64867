"""Plots of partisan reports: gap bars beside their comparators, and per-party
answer distributions of personas beside the matched humans.

Drawn on private Agg figures (as analysis.report_plots), so the global pyplot backend
is never touched and the PNGs are deterministic.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.report_plots import new_figure

PARTY_COLOURS = {"Democrat": "#4c72b0", "Republican": "#c44e52"}


def _err(low, high, mid):
    lo = np.where(np.isfinite(low), mid - low, 0.0)
    hi = np.where(np.isfinite(high), high - mid, 0.0)
    return np.maximum(np.vstack([lo, hi]), 0.0)


def plot_gaps(table: pd.DataFrame, title: str, gap_label: str):
    """One panel per party: the personas' gap per condition with its 95% CI,
    then the matched humans' gap (CI) and the published value (no CI known),
    each bar labelled with its source."""
    parties = list(dict.fromkeys(table["party"]))
    fig = new_figure(5.2 * max(1, len(parties)), 4.4)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.36, top=0.80, wspace=0.25)
    for k, party in enumerate(parties):
        ax = fig.add_subplot(1, len(parties), k + 1)
        part = table[table["party"] == party]
        labels = list(part["condition"])
        mids = part["persona_delta"].to_numpy(float)
        err = _err(part["persona_ci_low"].to_numpy(float), part["persona_ci_high"].to_numpy(float), mids)
        colours = [PARTY_COLOURS.get(party, "#55a868")] * len(labels)
        first = part.iloc[0]
        human = float(first["matched_human_delta"])
        if np.isfinite(human):
            labels.append("matched humans")
            mids = np.append(mids, human)
            err = np.hstack([err, _err(np.array([first["matched_human_ci_low"]], float), np.array([first["matched_human_ci_high"]], float), np.array([human]))])
            colours.append("#333333")
        pub = float(first["published_delta"])
        if np.isfinite(pub):
            labels.append("published")
            mids = np.append(mids, pub)
            err = np.hstack([err, np.zeros((2, 1))])
            colours.append("#999999")
        x = np.arange(len(labels))
        ax.bar(x, np.nan_to_num(mids), yerr=err, color=colours, capsize=3)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{party}s", fontsize=10)
        if k == 0:
            ax.set_ylabel(gap_label, fontsize=8)
    instrument = str(table["matched_human_instrument"].iloc[0])
    pub_src = str(table["published_instrument"].iloc[0])
    caption = textwrap.fill(f"matched humans: {instrument}; {pub_src}", 150)
    fig.suptitle(f"{title}\n{caption}", fontsize=8)
    return fig


def plot_party_distributions(
    panels: Sequence[tuple[str, str, Sequence[str], Mapping[str, np.ndarray], np.ndarray | None]], title: str
):
    """``panels``: (party, item, options, {condition: persona distribution},
    matched-human distribution or None). One panel per party and item."""
    n = len(panels)
    cols = min(4, max(1, n))
    rows = int(np.ceil(n / cols)) if n else 1
    fig = new_figure(3.4 * cols, 2.6 * rows + 0.8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=1 - 0.8 / (2.6 * rows + 0.8), hspace=0.6, wspace=0.3)
    for i, (party, item, options, persona, human) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        series = list(persona.items()) + ([("matched humans", human)] if human is not None else [])
        width = 0.8 / max(1, len(series))
        x = np.arange(len(options))
        for j, (label, dist) in enumerate(series):
            ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(np.asarray(dist, float)), width=width, label=label,
                   color="#333333" if label == "matched humans" else None)
        ax.set_xticks(x, [str(k + 1) for k in x], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"{party}s: {item}" + ("" if human is not None else " (no human data)"), fontsize=8)
        if i == 0:
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title + " -- options numbered in questionnaire order", fontsize=9)
    return fig
