"""The browser page's model: one scenario model per browser session.

:class:`PersonaeViz` is the Mesa model SolaraViz drives. It owns the scenario
model (``.sim``, built exactly like ``run.py`` builds it) and reads it only
through the scenario contract (``scenarios.contract.ScenarioModel``); its
constructor arguments are the page's controls (population size, conditioning
method, seed), so SolaraViz re-creates it with the current values on *Reset*.
Build and step errors are kept as a one-line message for the page, never a
traceback. The expensive parts are shared underneath: the loaded LLM through
``agents.llm.factory.shared_engine`` and the responses through the store.
"""
from __future__ import annotations

import sys
import threading
import traceback

import mesa
import numpy as np

from core.errors import PersonaeError, error_line
from scenarios.contract import RunningFidelity, ScenarioModel
from scenarios.items import Item
from simulation.viz_source import ViewSource, resolve

# Live models share one loaded engine (torch is not re-entrant across
# sessions): builds and steps of live sessions take turns. Replays never call
# an engine and do not wait.
ENGINE_LOCK = threading.RLock()


class _BuildProgress(threading.local):
    callback = None  # (text) -> None: the loading screen of the session building a model in this thread


BUILD_PROGRESS = _BuildProgress()


class _Progress:
    """Console stand-in for ``build_model``: forwards population-building
    progress (backstories, demographic survey) to the loading screen."""

    def progress(self, task: str, done: int, total: int) -> None:
        if BUILD_PROGRESS.callback is not None:
            BUILD_PROGRESS.callback(f"{task}: {done}/{total}")


def _log_unexpected(exc: BaseException) -> None:
    if not isinstance(exc, PersonaeError):  # a bug, not bad input: keep its traceback in the server log
        traceback.print_exception(exc, file=sys.stderr)


class PersonaeViz(mesa.Model):
    """The model SolaraViz drives (``cls(**model_params)`` on Reset)."""

    def __init__(self, source: ViewSource, **kwargs):
        """``source``: what to show; ``kwargs``: the page's controls, one per
        configuration field with a control hint, named by its path
        (``population__size``, ``options__rounds``; see ``simulation.viz_source.controls_for``)."""
        super().__init__()
        self.source = source
        self.replay = bool(source.replay)
        self.cfg = None
        self.run_id: str | None = None
        self.sim: ScenarioModel | None = None
        self.error: str | None = None
        self.fidelity = RunningFidelity()
        try:
            self.cfg, self.run_id = resolve(source, kwargs)
            if self.replay:
                self._build()
            else:
                with ENGINE_LOCK:
                    self._build()
        except Exception as exc:  # noqa: BLE001 - any failure is shown in the page as one line
            self.error = error_line(exc)
            _log_unexpected(exc)
            self.sim = None
        self.datacollector = self._make_collector()
        self.running = self.sim is not None and self.sim.running

    def _build(self) -> None:
        from core.store import Store
        from simulation.runner import build_model

        store = Store(self.source.store if self.replay else self.cfg.store)
        self.sim = build_model(self.cfg, store, self.run_id, replay=self.replay, console=_Progress())

    def step(self) -> None:
        if self.sim is None or not self.sim.running:
            self.running = False
            return
        try:
            if self.replay:
                self.sim.step()
            else:
                with ENGINE_LOCK:
                    self.sim.step()
        except Exception as exc:  # noqa: BLE001 - shown in the page, the session stays usable
            self.error = f"step {self.steps}: {error_line(exc)}"
            _log_unexpected(exc)
            self.running = False
            return
        self.fidelity = self.sim.running_fidelity()
        self.running = self.sim.running
        self.datacollector.collect(self)

    def _make_collector(self) -> mesa.DataCollector:
        """Per step: the running WD per population and the running human lower
        bound (surveys), and the scenario's own running values."""
        reporters: dict = {"step": lambda m: m.sim.step_index if m.sim is not None else 0}
        if self.sim is None:
            return mesa.DataCollector(model_reporters=reporters)
        if self.is_survey:
            for population in self.sim.populations:
                reporters[f"WD {population.label}"] = lambda m, label=population.label: m.fidelity.wd.get(label, np.nan)
            reporters["human lower bound"] = lambda m: np.nan if m.fidelity.lower_bound is None else m.fidelity.lower_bound
        for name, read in self.sim.running_values().items():
            reporters[name] = lambda m, read=read: read()
        return mesa.DataCollector(model_reporters=reporters)

    # ------------------------------------------------------------ views
    @property
    def is_survey(self) -> bool:
        return self.sim is not None and self.sim.kind == "survey"

    @property
    def title(self) -> str:
        if self.sim is not None:
            return f"{self.cfg.name}: {self.sim.title}"
        return self.cfg.name if self.cfg is not None else "Personae"

    @property
    def running_value_names(self) -> list[str]:
        return list(self.sim.running_values()) if self.sim is not None else []

    def progress_text(self) -> str:
        word = "question" if self.is_survey else "phase"
        return f"{word} {self.sim.step_index}/{len(self.sim.item_list)}"

    def engine_text(self) -> str:
        return f"engine calls {self.sim.engine.misses} · answered from the store {self.sim.engine.hits}"

    def shown_item(self) -> Item | None:
        """The current item, or (before the first step) the first one."""
        if not self.is_survey or not self.sim.item_list:
            return None
        return self.sim.current_item or self.sim.item_list[0]

    def answer_view(self) -> tuple[Item, dict[str, np.ndarray], np.ndarray | None] | None:
        """The shown item, its persona distribution per population (empty
        before it is asked) and its human distribution (None without one)."""
        item = self.shown_item()
        if item is None:
            return None
        dists = self.sim.persona_distributions(item.id) if self.sim.current_item is not None else {}
        return item, dists, self.sim.human_distribution(item.id)
