"""The browser page's figures: matplotlib figures of plain values.

Each function takes the values to plot (distributions, a DataFrame of running
values, a group's agreement matrix, persona agents and their blocks) and
returns a Figure; none reads a model or computes a metric.
"""
from __future__ import annotations

import itertools
import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines
import matplotlib.patheffects
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from agents.persona import PersonaAgent
from scenarios.contract import GroupView
from scenarios.items import Item

# SolaraViz lays components out two per row in fixed-height cells (~390 px):
# figures are sized to fit a cell under the card title and controls.
FIGSIZE = (6.0, 2.7)
DPI = 90
OUTLINE = [matplotlib.patheffects.withStroke(linewidth=2, foreground="black")]
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "p", "<", ">")
HUMAN = "human"


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def letter(k: int) -> str:
    return chr(65 + k)


def distribution_figure(item: Item, dists: dict[str, np.ndarray], human: np.ndarray | None, *, asked: bool) -> Figure:
    """Grouped bars: one series per population, then the humans' (hatched)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    series = list(dists.items()) + ([(HUMAN, human)] if human is not None else [])
    width = 0.8 / max(1, len(series))
    x = np.arange(len(item.options))
    cmap = matplotlib.colormaps["tab10"]
    for s, (label, probs) in enumerate(series):
        is_human = label == HUMAN
        ax.bar(
            x - 0.4 + width * (s + 0.5),
            probs,
            width,
            label=label,
            color="0.2" if is_human else cmap(s % 10),
            hatch="//" if is_human else None,
            edgecolor="white" if is_human else None,
        )
    ax.set_xticks(x)
    ax.set_xticklabels([wrap(f"{letter(i)}. {o}", 14) for i, o in enumerate(item.options)], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(wrap(f"{item.id}: {item.generic_text()}" + ("" if asked else " (not asked yet)"), 70), fontsize=8)
    if series:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def fidelity_figure(df: pd.DataFrame, n_items: int) -> Figure:
    """Running mean WD per population (columns ``WD <label>``) and the running
    human lower bound over the steps (column ``step``)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    for col in [c for c in df.columns if c.startswith("WD ")]:
        ax.plot(df["step"], df[col], marker="o", label=col[3:])
    if "human lower bound" in df.columns and df["human lower bound"].notna().any():
        ax.plot(df["step"], df["human lower bound"], ls="--", color="black", label="human lower bound (split halves)")
    ax.set_xlim(0.5, max(1, n_items) + 0.5)
    ax.set_xlabel("step (questions asked)")
    ax.set_ylabel("running mean WD vs humans (0-1)")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if ax.lines:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def running_value_figure(df: pd.DataFrame, name: str, n_steps: int) -> Figure:
    """One running value of the scenario (e.g. mean outside mass) per step."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.plot(df["step"], pd.to_numeric(df[name], errors="coerce"), marker="o", label=name)
    ax.set_xlim(0.5, max(1, n_steps) + 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel(name.replace("_", " "))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def short_names(names: list[str] | tuple[str, ...], width: int = 14) -> list[str]:
    """Labels that fit a legend and still tell participants apart (persona ids
    share long prefixes such as ``anthology-smollm2-...``)."""
    cut = [n if len(n) <= width else n[: width - 1] + "…" for n in names]
    if len(set(cut)) == len(cut):
        return cut
    return [f"P{i + 1} …{n[-6:]}" if len(n) > 6 else f"P{i + 1} {n}" for i, n in enumerate(names)]


def consensus_figure(view: GroupView) -> Figure:
    """A group's agreement (1-7) per round (columns) and participant (rows)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    mat = view.agreement
    im = ax.imshow(mat.T, cmap="RdYlGn", vmin=1, vmax=7, aspect="auto")
    ax.set_xticks(range(mat.shape[0]))
    ax.set_xticklabels(["draft" if r == 0 else f"rev. {r}" for r in range(mat.shape[0])], fontsize=8)
    ax.set_yticks(range(mat.shape[1]))
    ax.set_yticklabels(short_names(view.participants, 18), fontsize=8)
    for r in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(r, j, f"{mat[r, j]:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="agreement (1-7)")
    ax.set_title("each participant's agreement with each round's statement", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- persona map
def trait_choices(agents: list[PersonaAgent]) -> list[str]:
    """Colour-by choices: group (deliberations), party, condition, answer,
    then every profile trait and the persona method."""
    choices = ["party", "condition", "answer"]
    if any(a.group is not None for a in agents):
        choices.insert(0, "group")
    for a in agents[:2000]:
        for src in (a.human_profile, a.profile):
            choices += [k for k, v in src.items() if k not in choices and isinstance(v, (str, int, float, bool))]
    if any(a.method for a in agents) and "method" not in choices:
        choices.append("method")
    return choices


def trait_value(agent: PersonaAgent, trait: str, item: Item | None) -> str:
    if trait == "answer":
        ans = agent.current_answer
        if ans is None:
            return "not answered"
        return f"{letter(ans.sampled)}. {item.options[ans.sampled]}" if item is not None else letter(ans.sampled)
    own = {"party": agent.party, "condition": agent.condition, "method": agent.method, "group": agent.group}
    if own.get(trait) not in (None, ""):
        return str(own[trait])
    for src in (agent.human_profile, agent.profile):
        if src.get(trait) not in (None, ""):
            return str(src[trait])
    return "n/a"


def _sampled(agent: PersonaAgent) -> int | None:
    return agent.current_answer.sampled if agent.current_answer is not None else None


def map_edges(agents: list[PersonaAgent]) -> list[tuple[int, int]]:
    """Network links: the members of a discussion group deliberate together (a
    clique per group); otherwise personas standing for the same human across
    conditions are chained."""
    members: dict = {}
    for i, a in enumerate(agents):
        key = ("group", a.group) if a.group is not None else ("human", a.human)
        if key[1] is not None:
            members.setdefault(key, []).append(i)
    edges = []
    for (kind, _), idx in members.items():
        if kind == "group":
            edges += [(u, v) for k, u in enumerate(idx) for v in idx[k + 1 :]]
        else:
            edges += list(itertools.pairwise(idx))
    return edges


def map_positions(agents: list[PersonaAgent], blocks: list[str], layout: str) -> list[tuple[float, float]]:
    n = len(agents)
    if layout == "network" and n <= 400:
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(map_edges(agents))
        lay = nx.spring_layout(g, seed=0) if g.number_of_edges() else nx.circular_layout(g)
        return [(float(lay[i][0]), float(lay[i][1])) for i in range(n)]
    # grid: one block of rows per population (or discussion group), in order
    order = list(dict.fromkeys(blocks))
    widest = max(blocks.count(b) for b in order)
    cols = max(1, min(widest, max(8, math.ceil(math.sqrt(widest * 3)))))
    out: list[tuple[float, float]] = [(0.0, 0.0)] * n
    y = 0.0
    for b in order:
        idx = [i for i in range(n) if blocks[i] == b]
        for j, i in enumerate(idx):
            out[i] = (float(j % cols), -(y + j // cols))
        y += math.ceil(len(idx) / cols) + 0.6
    return out


def persona_figure(agents: list[PersonaAgent], blocks: list[str], item: Item | None, color_by: str, layout: str, *, survey: bool) -> Figure:
    """The personas as a grid (one block per population / group) or a network,
    coloured by ``color_by`` and marked by their current answer (letter, shape)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.set_axis_off()
    if not agents:
        ax.text(0.5, 0.5, "no personas", ha="center", va="center")
        return fig
    values = [trait_value(a, color_by, item) for a in agents]
    if color_by == "answer" and item is not None:
        cats = [f"{letter(k)}. {o}" for k, o in enumerate(item.options)] + ["not answered"]
        cmap = matplotlib.colormaps["viridis"]
        colours = {c: cmap(i / max(1, len(item.options) - 1)) for i, c in enumerate(cats[:-1])}
        colours["not answered"] = (0.8, 0.8, 0.8, 1.0)
    else:
        cats = sorted(set(values), key=lambda v: (v in ("n/a", "not answered"), v))
        cmap = matplotlib.colormaps["tab10" if len(cats) <= 10 else "tab20"]
        colours = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    pos = map_positions(agents, blocks, layout)
    xs, ys = [p[0] for p in pos], [p[1] for p in pos]
    span = max(max(xs) - min(xs) + 1, (max(ys) - min(ys) + 1) * 2.2, 3)
    size = float(np.clip((230.0 / span) ** 2, 14.0, 650.0))  # marker area (pt^2) from the grid's extent
    fig.subplots_adjust(left=0.02, right=0.70, top=0.86, bottom=0.04)
    if layout == "network":
        for i, j in map_edges(agents):
            ax.plot([xs[i], xs[j]], [ys[i], ys[j]], color="0.75", lw=0.8, zorder=1)
    sampled = [_sampled(a) for a in agents]
    for k in sorted(set(sampled), key=lambda x: -1 if x is None else x):
        idx = [i for i in range(len(agents)) if sampled[i] == k]
        ax.scatter(
            [xs[i] for i in idx],
            [ys[i] for i in idx],
            s=size,
            c=[colours[values[i]] for i in idx],
            marker="o" if k is None else MARKERS[k % len(MARKERS)],
            edgecolors="black" if k is not None else "0.6",
            linewidths=0.8,
            zorder=2,
        )
    if len(agents) <= 150 and size >= 60:
        for i, k in enumerate(sampled):
            if k is not None:
                ax.annotate(letter(k), pos[i], ha="center", va="center", fontsize=10 if size >= 300 else 7, color="white", weight="bold", zorder=3, path_effects=OUTLINE)
    if layout != "network":
        for b in dict.fromkeys(blocks):
            rows = [ys[i] for i in range(len(agents)) if blocks[i] == b]
            ax.text(min(xs) - 0.45, max(rows) + 0.55, b, ha="left", va="bottom", fontsize=8, color="0.3")
    handles = [
        matplotlib.lines.Line2D([], [], marker="o", ls="", color=colours[c], markeredgecolor="black", label=wrap(c, 26)[:60])
        for c in cats[:12]
        if c in values or color_by == "answer"
    ]
    if handles:
        fig.legend(handles=handles, title=color_by, fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(0.71, 0.5), frameon=False)
    what = f"marked by their answer to {item.id} (letter, shape)" if item is not None else ("no question asked yet" if survey else "no multiple-choice answer")
    fig.suptitle(f"{len(agents)} personas · {what}", fontsize=9)
    pad = 0.25 if layout == "network" else 0.7
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_ylim(min(ys) - (0.25 if layout == "network" else 0.55), max(ys) + (0.25 if layout == "network" else 1.1))
    return fig
