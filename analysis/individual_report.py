"""Individual-level results (:class:`~analysis.individual.IndividualFidelity`) in
a report: the short table, the no-binding alert, the estimator in words, the
note and the plot.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.individual import IndividualFidelity


def individual_table(results: Sequence[IndividualFidelity]) -> pd.DataFrame:
    """The report's short table: one row per condition, each figure with its interval."""
    return pd.DataFrame([r.row() for r in results])


def no_binding_alert(results: Sequence[IndividualFidelity]) -> str:
    """One line when no condition's personas beat their respondents' demographic cell ('' otherwise)."""
    scored = [r for r in results if np.isfinite(r.vs_cell.value)]
    if not scored or any(r.beats_cell for r in scored):
        return ""
    shown = ", ".join(f"{r.condition} {r.vs_cell.text()}" for r in scored)
    return (
        "WARNING individual level: no condition beats its respondents' demographic cell (persona agreement minus the "
        f"cell's best answer, 95% CI: {shown}): the personas answer like their demographics, not like their people."
    )


def describe(answers: str, retest_note: str = "", weighted: bool = True) -> str:
    """The estimator of the individual-level figures, in words, for the report header
    (``weighted``: whether the study has survey weights; unweighted data say so)."""
    ceiling = f"ceiling: the respondents' own test-retest agreement ({retest_note})" if retest_note else "ceiling unknown: the study has no retest"
    over = "survey-weighted over people" if weighted else "averaged over people (unweighted data)"
    return (
        f"individual level: each persona against its own respondent under the same {answers} (nominal items: expected exact "
        f"agreement; ordinal: 1 - expected distance on [0, 1] positions), per person then {over}, "
        f"95% bootstrap over people; {ceiling}"
    )


NOTE = (
    "individual_level: each bound persona scored against its own respondent (nominal items: expected exact agreement; "
    "ordinal: 1 - expected |position - respondent's position| on [0, 1]; 1 = the respondent's answer for sure), averaged "
    "per person over the items both answered, then over people (survey weights) with a 95% percentile bootstrap over "
    "people. Baselines on the same people, scored the same way: demographic_cell = the best single answer of the "
    "respondents who share every matching trait (mode of a nominal item, median of an ordinal one), leaving the respondent "
    "out, so their own answer does not count; a cell with nobody else falls back to the whole population); marginal = "
    "the population's leave-one-out answer distribution; shuffled = each person scored against another person's persona "
    "(20 random cycles). vs_cell = mean per-person difference from the demographic cell (a persona that "
    "does not beat it has not bound to its person); kappa = (agreement - marginal) / (1 - marginal), the share of answers "
    "that follow the person beyond the population. retest_ceiling = the respondents' agreement with their own re-test; "
    "normalized_accuracy = persona agreement / retest agreement on the re-tested items (ratio of means over people; "
    "Park et al. 2024)."
)


def plot_individual(results: Sequence[IndividualFidelity], title: str):
    """Per condition: persona agreement (95% CI) beside the demographic cell, the
    marginal and the shuffled binding, with the retest ceiling as a dashed line
    (or 'ceiling unknown')."""
    from analysis.report_plots import new_figure

    fig = new_figure(max(5.0, 1.9 * len(results) + 2.5), 4.2)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.3, top=0.86)
    ax = fig.add_subplot(1, 1, 1)
    bars = (("persona", "agreement", "#dd8452"), ("demographic cell", "cell", "#4c72b0"), ("marginal", "marginal", "#8c8c8c"), ("shuffled", "shuffled", "#c7c7c7"))
    width = 0.8 / len(bars)
    x = np.arange(len(results))
    for b, (label, attr, color) in enumerate(bars):
        ivs = [getattr(r, attr) for r in results]
        vals = np.array([iv.value for iv in ivs])
        err = np.array([[max(0.0, iv.value - iv.low), max(0.0, iv.high - iv.value)] if np.isfinite(iv.low) else [0.0, 0.0] for iv in ivs]).T
        ax.bar(x + (b - (len(bars) - 1) / 2) * width, np.nan_to_num(vals), width, yerr=np.nan_to_num(err), capsize=2, label=label, color=color)
    for j, r in enumerate(results):
        if r.has_ceiling:
            ax.hlines(r.retest.value, j - 0.45, j + 0.45, colors="black", linestyles="dashed", label="retest ceiling" if j == 0 else None)
        else:
            ax.text(j, 0.02, "ceiling unknown", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, [r.condition for r in results], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("agreement with own respondent")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=10)
    return fig
