"""The browser page's components: solara functions of a ``PersonaeViz``.

* ``Status``: what is shown, progress, engine use, any error (one line);
* ``PersonaMap``: the personas as a grid or network, coloured by a trait;
* ``AnswerDistributions``: the current question, personas vs humans;
* ``FidelityPlot``: running mean WD per condition vs the human lower bound;
* ``RunningValue(name)``: one of the scenario's running values per step;
* ``ConsensusPanel``: each group's statements and agreement (deliberations).

(No solara.Markdown anywhere: it loads KaTeX, which solara-assets lacks.)
"""
from __future__ import annotations

import warnings

import solara

from simulation import viz_figures as figures
from simulation.viz import PersonaeViz

with warnings.catch_warnings():
    # Mesa 3.3's ComponentsView trips solara's rules-of-hooks check at import.
    warnings.filterwarnings("ignore", message=".*found despite early return.*", category=UserWarning)
    from mesa.visualization.utils import update_counter

SMALL = {"font-size": "0.85em"}


def _figure(fig, model: PersonaeViz, *deps):
    """A matplotlib figure as a PNG (tight box: legends outside the axes stay in)."""
    return solara.FigureMatplotlib(fig, format="png", dependencies=[id(model), model.steps, *deps], bbox_inches="tight")


def _heading(text: str, size: str = "1.1em"):
    return solara.Text(text, style={"font-weight": "bold", "font-size": size})


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


@solara.component
def Status(model: PersonaeViz):
    update_counter.get()
    with solara.Column(classes=["personae-status"], style={"padding": "4px 12px"}, gap="2px"):
        _heading(model.title)
        run = f" · run {model.run_id}" if model.run_id and not model.replay else ""
        solara.Text(model.source.describe() + run, style={**SMALL, "color": "#555"})
        if model.cfg is not None and not model.replay:
            c = model.cfg
            text = f"conditions {', '.join(c.population.conditions)} · population size {c.population.size} · seed {c.seed}"
            solara.Text(text, classes=["personae-settings"], style={**SMALL, "color": "#555"})
        if model.sim is not None:
            item = model.sim.current_item
            if item is not None:
                rest = f" · {item.id}: {item.generic_text()}" if model.is_survey else f" · {item.id}"
            else:
                rest = " · press STEP to " + ("ask the first question" if model.is_survey else "run the first phase")
            if not model.running and model.steps:
                rest += " · finished"
            with solara.Row(gap="4px"):
                solara.Text(model.progress_text(), classes=["personae-progress"], style={"font-weight": "bold", "white-space": "nowrap"})
                solara.Text(rest + f" · {model.engine_text()}")
        if model.error:
            solara.Error(model.error, classes=["personae-error"])


@solara.component
def PersonaMap(model: PersonaeViz):
    update_counter.get()
    agents = model.sim.agent_list
    choices = solara.use_memo(lambda: figures.trait_choices(agents), [id(model)])
    color_by, set_color_by = solara.use_state(choices[0])
    layout, set_layout = solara.use_state("grid")
    with solara.Card("Personas", classes=["personae-map"], style={"width": "100%"}, margin=0):
        with solara.Row(style={"align-items": "center"}):
            solara.Select("colour by", value=color_by, values=choices, on_value=set_color_by, style={"max-width": "220px"})
            solara.ToggleButtonsSingle(value=layout, values=["grid", "network"], on_value=set_layout, dense=True)
        blocks = [model.sim.population_label(a) for a in agents]
        item = model.sim.current_item if model.is_survey else None
        _figure(figures.persona_figure(agents, blocks, item, color_by, layout, survey=model.is_survey), model, color_by, layout)


@solara.component
def AnswerDistributions(model: PersonaeViz):
    update_counter.get()
    with solara.Card("Current question: personas vs humans", classes=["personae-dist"], style={"width": "100%"}, margin=0):
        item, dists, human = model.answer_view()
        _figure(figures.distribution_figure(item, dists, human, asked=bool(dists)), model)
        parts = [f"{label}: " + " ".join(f"{p:.3f}" for p in probs) for label, probs in dists.items()]
        parts.append("human: " + " ".join(f"{p:.3f}" for p in human) if human is not None else "no human distribution for this item")
        if not dists:
            parts.insert(0, "not asked yet")
        solara.Text(" · ".join(parts), classes=["personae-dist-values"], style=SMALL)


@solara.component
def FidelityPlot(model: PersonaeViz):
    update_counter.get()
    with solara.Card("Fidelity over steps", classes=["personae-fidelity"], style={"width": "100%"}, margin=0):
        df = model.datacollector.get_model_vars_dataframe()
        _figure(figures.fidelity_figure(df, len(model.sim.item_list)), model)
        f = model.fidelity
        if f.items:
            text = "running WD: " + ", ".join(f"{k} {_fmt(v)}" for k, v in f.wd.items())
            if f.lower_bound is not None:
                text += f" · human lower bound {_fmt(f.lower_bound)}"
        elif model.sim.current_item is None:
            text = "no question asked yet"
        else:
            text = "no human reference for the questions asked so far"
        solara.Text(text, classes=["personae-fidelity-text"], style=SMALL)


def RunningValue(name: str):
    """A component plotting the scenario's running value ``name`` per step."""

    @solara.component
    def Component(model: PersonaeViz):
        update_counter.get()
        with solara.Card(name.replace("_", " "), classes=[f"personae-{name}"], style={"width": "100%"}, margin=0):
            _figure(figures.running_value_figure(model.datacollector.get_model_vars_dataframe(), name, len(model.sim.item_list)), model)

    return Component


@solara.component
def ConsensusPanel(model: PersonaeViz):
    update_counter.get()
    with solara.Card("Consensus rounds", classes=["personae-consensus"], style={"width": "100%", "height": "100%", "overflow-y": "auto"}, margin=0):
        for view in model.sim.group_views():
            with solara.Column(gap="4px", classes=["personae-group"], style={"margin-bottom": "10px"}):
                _heading(f"{view.label} · question: {view.question} · next phase: {view.phase}", "0.95em")
                if view.agreement is not None:
                    _figure(figures.consensus_figure(view), model, view.label)
                if not view.statements:
                    solara.Text("no statement yet", style=SMALL)
                names = figures.short_names(view.participants)
                for r, text in enumerate(view.statements):
                    agree = ""
                    if view.agreement is not None and r < view.agreement.shape[0]:
                        agree = " · agreement " + ", ".join(f"{p}: {_fmt(v)}" for p, v in zip(names, view.agreement[r]))
                    _heading(("Draft" if r == 0 else f"Revision {r}") + agree, "0.85em")
                    solara.Text(text, classes=["personae-statement"], style={**SMALL, "white-space": "pre-wrap"})
                if view.representatives:
                    _heading("Digital representatives (payoff gap: |E[payoff with representatives] - E[payoff of the originals]|, 1-7)", "0.85em")
                short = dict(zip(view.participants, names))
                for rep in view.representatives:
                    who = "everyone" if rep.mode == "all" else ", ".join(short.get(p, p) for p in rep.substituted)
                    head = f"{rep.subset} for {who} · payoff gap {_fmt(rep.payoff_gap)} over {rep.rollouts} rollout{'s' if rep.rollouts > 1 else ''}"
                    with solara.Column(gap="0px", classes=["personae-representative"]):
                        solara.Text(head, style={**SMALL, "font-weight": "bold"})
                        solara.Text(rep.statement, style={**SMALL, "white-space": "pre-wrap"})


def components_for(model: PersonaeViz) -> list:
    """The page's cards for a model: what its scenario kind offers."""
    if model.is_survey:
        comps = [PersonaMap, AnswerDistributions, FidelityPlot]
    else:
        comps = [PersonaMap, ConsensusPanel]
    return comps + [RunningValue(name) for name in model.running_value_names]
