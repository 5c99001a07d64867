"""The scenario contract: what every Personae scenario model declares and returns.

A scenario is a Mesa model built from a validated configuration. The runner
(``simulation.runner``), the live console (``simulation.console``), the sweep
(``simulation.sweep``) and the browser page (``simulation.viz``) use a scenario
only through :class:`ScenarioModel` below, never by probing its attributes, so
a new scenario shows up everywhere once it implements this class.

A scenario declares
  * its steps, ``item_list``: questionnaire items, or the phases of a
    deliberation (items with no options); one Mesa step per entry;
  * its personas, ``agent_list`` (``PersonaAgent``), and the populations they
    form, ``populations`` (one per condition and matching method);
  * live views of the current state: persona and human distributions per item,
    the running fidelity, running values for line plots, and (deliberations)
    each discussion group's statements and agreement;
  * its result, ``evaluate()``: a :class:`ScenarioReport`.

To add a scenario: subclass ``scenarios.base.SurveyModel`` (a questionnaire:
implement ``items()`` and ``evaluate()``) or this class (anything else), and
give it a ``scenario`` name (the module ``scenarios/<name>.py`` is found from the YAML).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import mesa
import numpy as np
import pandas as pd
from pydantic import BaseModel

from .items import Item

if TYPE_CHECKING:  # annotations only: no import cost, no cycle
    from agents.persona import PersonaAgent
    from analysis.evaluation_results import Evaluation
    from core.store import Store
    from scenarios.config import ScenarioConfig

    from .population import Population


@dataclass
class ScenarioReport:
    """What ``evaluate()`` returns; ``simulation.runner.write_outputs`` writes it.

    * ``evaluations``: ``analysis.evaluation_results.Evaluation`` per population (study
      scenarios), written by ``analysis.report.write_report`` (conditions table,
      subgroups, plots);
    * ``tables``: name -> DataFrame, each written as ``<name>.csv`` and as a
      section of ``summary.md`` (first column = row label);
    * ``notes``: one paragraph each, how to read the tables;
    * ``estimator``: how the headline figures are estimated (one paragraph);
    * ``plots``: name -> matplotlib Figure, written as ``<name>.png``;
    * ``jsonl``: name -> records, written as ``<name>.jsonl`` (e.g. episodes);
    * ``alerts``: one-line warnings for the console and the top of ``summary.md``.

    New kinds of result are new fields with a default, so every scenario that
    does not produce them stays valid.
    """

    evaluations: list[Evaluation] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    estimator: str = ""
    plots: dict[str, Any] = field(default_factory=dict)
    jsonl: dict[str, list[dict]] = field(default_factory=dict)
    # One-line warnings (e.g. a condition's personas are indistinguishable):
    # printed on the console and at the top of summary.md.
    alerts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunningFidelity:
    """Fidelity so far, for live displays (the report has the exact figures).

    ``items``: the items asked so far that have a human distribution;
    ``wd``: population label -> mean Wasserstein distance (0-1) over those items
    between the population's mean persona distribution and the humans';
    ``lower_bound``: the humans' own split-half WD over the same items, or None."""

    items: tuple[str, ...] = ()
    wd: dict[str, float] = field(default_factory=dict)
    lower_bound: float | None = None


@dataclass(frozen=True)
class RepresentativeView:
    """One substitution of a group's representatives phase so far:
    ``substituted`` participants played by representatives conditioned on
    ``subset`` ("none" = the base representative), over ``rollouts`` finished
    rollouts; ``statement``: the final statement they reached in the latest;
    ``payoff_gap``: mean over the substituted of |E[payoff with representatives]
    - E[payoff of the originals]| (1-7 scale, paper eq. 21) so far."""

    subset: str
    mode: str  # "one" (a single participant substituted) or "all"
    substituted: tuple[str, ...]
    rollouts: int
    statement: str
    payoff_gap: float


@dataclass(frozen=True)
class GroupView:
    """A discussion group's state (deliberation scenarios).

    ``statements``: the mediator's statement per round (draft, revision 1, ...);
    ``agreement``: ``[round, participant]`` agreement with each statement on the
    1-7 Likert scale (expected value), or None before the payoff phase;
    ``phase``: the next phase, or "finished"; ``representatives``: the
    substituted episodes played so far (scenarios with digital representatives)."""

    label: str
    question: str
    participants: tuple[str, ...]
    statements: tuple[str, ...]
    agreement: np.ndarray | None
    phase: str
    representatives: tuple[RepresentativeView, ...] = ()


REGISTRY: dict[str, type[ScenarioModel]] = {}


class ScenarioModel(mesa.Model):
    """The base of every scenario (see the module docstring).

    Constructor: ``(cfg, engine, store, run_id, *, progress=None)``: the
    validated configuration, the (store-cached) engine, the store holding the
    episode log, the run id, and an optional ``progress(task, done, total)``
    callback for slow set-up (backstories, demographic surveys).
    """

    title: ClassVar[str] = "Scenario"
    # "survey": multiple-choice items asked of persona populations (persona and
    # human distributions, fidelity); "deliberation": phases of discussion groups.
    kind: ClassVar[Literal["survey", "deliberation"]] = "survey"
    # The name a YAML's ``scenario:`` gives this class: set in a subclass, it registers the
    # class (``REGISTRY``); by convention the module is ``scenarios/<scenario>.py``.
    scenario: ClassVar[str] = ""
    # The typed model of the configuration's ``options:`` (None: the scenario takes none);
    # its fields that carry a page control appear on the browser page as ``options.<field>``.
    options_model: ClassVar[type[BaseModel] | None] = None

    cfg: ScenarioConfig

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "scenario" in cls.__dict__ and cls.scenario:
            REGISTRY[cls.scenario] = cls
    engine: Any  # agents.llm cached engine: ``hits`` / ``misses`` count store answers / real calls
    store: Store
    run_id: str
    item_list: list[Item]  # the steps, in order
    step_index: int  # steps done
    agent_list: list[PersonaAgent]  # every persona agent, in a fixed order
    populations: list[Population]

    def __init__(self, cfg: ScenarioConfig, engine, store: Store, run_id: str, *, progress: Callable | None = None) -> None:
        super().__init__(seed=cfg.seed)
        self.cfg, self.engine, self.store, self.run_id, self.progress = cfg, engine, store, run_id, progress
        self.step_index = 0

    # ------------------------------------------------------------ stepping
    def step(self) -> None:
        """Run the next entry of ``item_list`` (ask every persona / run one
        phase of every group), log it to the store, advance ``step_index`` and
        clear ``running`` after the last one. Re-applies a logged step instead
        of calling the engine when the episode log has it."""
        raise NotImplementedError

    @property
    def current_item(self) -> Item | None:
        """The entry run by the last step, None before the first."""
        return self.item_list[self.step_index - 1] if self.step_index else None

    # ------------------------------------------------------------ live views
    def population_label(self, agent: PersonaAgent) -> str:
        """Where an agent is shown: its discussion group, else its population."""
        if agent.group is not None:
            return f"group {agent.group}"
        return self.populations[agent.population].label

    def persona_distributions(self, item_id: str) -> dict[str, np.ndarray]:
        """Population label -> mean persona distribution over the item's options
        (only populations that answered it). Empty for deliberations."""
        return {}

    def human_distribution(self, item_id: str) -> np.ndarray | None:
        """The humans' answer distribution over the item's options, when the
        scenario has one for this item; else None."""
        return None

    def live_distributions(self) -> dict[str, np.ndarray]:
        """The current step's distribution per row of the live console: per
        population for surveys (the current item), per group for deliberations."""
        item = self.current_item
        return self.persona_distributions(item.id) if item is not None else {}

    def running_fidelity(self) -> RunningFidelity:
        """Fidelity over the items asked so far (empty without human data)."""
        return RunningFidelity()

    def running_values(self) -> dict[str, Callable[[], float | None]]:
        """Named scalar readings of the current state for line plots over the
        steps (e.g. mean outside mass, mean agreement): name -> reader."""
        return {}

    def group_views(self) -> list[GroupView]:
        """One view per discussion group (deliberations); empty for surveys."""
        return []

    # ------------------------------------------------------------ result
    def evaluate(self) -> ScenarioReport:
        """The report of the finished model (deterministic given the log)."""
        raise NotImplementedError
