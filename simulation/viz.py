"""The Mesa browser page (SolaraViz): a live run of a scenario YAML, or a replay.

``make_page(source)`` returns the solara page for one :class:`ViewSource` (a
scenario file with ``--set`` overrides, or a logged run id in a store). The page
builds **one model per browser session** (inside the session, in a background
thread, never at module level), so two tabs never share state. The expensive
parts are shared underneath: the loaded LLM through
``agents.llm.factory.shared_engine`` (what ``cached_engine`` uses) and the
responses through the SQLite store cache.

The model handed to SolaraViz is :class:`PersonaeViz`, a thin Mesa model that
owns the scenario model (``.sim``, built exactly like ``run.py`` builds it) and
turns the SolaraViz controls (``model_params``: population size, conditioning
method, seed) into config overrides. SolaraViz re-instantiates the model class
with the current parameters on *Reset*; :class:`PersonaeViz` catches every
build or step error and keeps it as a one-line message for the page instead of
a traceback.

Components (functions of the model, as SolaraViz expects):

* ``PersonaMap``: the personas as a grid (one row block per condition) or a
  network, coloured by party / condition / answer / any profile trait (a
  selector), each marked by its current answer (letter and marker shape).
* ``AnswerDistributions``: the current question's option distribution per
  condition beside the human one when the study provides it.
* ``FidelityPlot``: running mean Wasserstein distance to the humans per
  condition over the steps, against the running human split-half lower bound.
* Mesa's own ``make_plot_component("mean_outside_mass")`` from the DataCollector.
* ``ConsensusPanel`` (consensus scenarios): each round's statement and each
  participant's agreement. It reads a generic interface, see
  :func:`consensus_views` (one view per discussion group).
"""
from __future__ import annotations

from core.errors import PersonaeError

import json
import math
import os
import sys
import textwrap
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects  # noqa: E402

import warnings  # noqa: E402

import mesa  # noqa: E402
import numpy as np  # noqa: E402
import solara  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

with warnings.catch_warnings():
    # Mesa 3.3's ComponentsView trips solara's rules-of-hooks check at import.
    warnings.filterwarnings("ignore", message=".*found despite early return.*", category=UserWarning)
    from mesa.visualization import SolaraViz, make_plot_component  # noqa: E402
    from mesa.visualization.utils import update_counter  # noqa: E402

# Live models share one loaded engine (torch is not re-entrant across
# sessions): builds and steps of live sessions take turns. Replays never call
# an engine and do not wait.
ENGINE_LOCK = threading.RLock()

ENV_SCENARIO = "PERSONAE_SCENARIO"
ENV_SET = "PERSONAE_SET"
ENV_REPLAY = "PERSONAE_REPLAY"
ENV_STORE = "PERSONAE_STORE"

CONDITIONS = ("anthology", "interview", "qa", "bio", "portray", "imported")
# SolaraViz lays components out two per row in fixed-height cells (~390 px):
# figures are sized to fit a cell under the card title and controls.
FIGSIZE = (6.0, 2.7)
DPI = 90
OUTLINE = [matplotlib.patheffects.withStroke(linewidth=2, foreground="black")]
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "p", "<", ">")


# ---------------------------------------------------------------- source
@dataclass(frozen=True)
class ViewSource:
    """What a page shows: a scenario YAML (+ ``--set`` overrides) run live, or
    a logged run replayed from a store."""

    scenario: str | None = None
    overrides: tuple[str, ...] = ()
    replay: str | None = None
    store: str = "personae.db"

    @property
    def mode(self) -> str:
        return "replay" if self.replay else "live"

    def describe(self) -> str:
        if self.replay:
            return f"replay of run {self.replay} from {self.store}"
        return f"live run of {self.scenario}" + (f" ({', '.join(self.overrides)})" if self.overrides else "")

    def to_env(self) -> dict[str, str]:
        env = {ENV_STORE: self.store}
        if self.replay:
            env[ENV_REPLAY] = self.replay
        if self.scenario:
            env[ENV_SCENARIO] = self.scenario
        if self.overrides:
            env[ENV_SET] = json.dumps(list(self.overrides))
        return env

    @classmethod
    def from_env(cls, env=None) -> "ViewSource":
        """``PERSONAE_SCENARIO`` (a YAML path) or ``PERSONAE_REPLAY`` (a run id);
        ``PERSONAE_SET``: overrides, a JSON list or one ``key=value`` per line;
        ``PERSONAE_STORE``: the store of a replay (default personae.db)."""
        env = os.environ if env is None else env
        raw = env.get(ENV_SET, "").strip()
        if raw.startswith("["):
            overrides = tuple(str(x) for x in json.loads(raw))
        else:
            overrides = tuple(line.strip() for line in raw.splitlines() if line.strip())
        return cls(
            scenario=env.get(ENV_SCENARIO) or None,
            overrides=overrides,
            replay=env.get(ENV_REPLAY) or None,
            store=env.get(ENV_STORE) or "personae.db",
        )


def one_line(exc: BaseException) -> str:
    """The page's message for an error: Personae's own errors are already one
    line naming the file/field; anything else is reduced to its first line."""
    from agents.bank import BankError
    from agents.llm.base import EngineError
    from simulation.config import ConfigError
    from simulation.runner import RunError

    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    if isinstance(exc, (ConfigError, EngineError, BankError, RunError, ViewError)):
        return first or type(exc).__name__
    if isinstance(exc, (ValueError, KeyError, FileNotFoundError)) and first:
        return first.strip("'\"")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class ViewError(PersonaeError, ValueError):
    """A page that cannot be shown (one line)."""


def param_overrides(population_size=None, conditioning=None, seed=None) -> list[str]:
    """SolaraViz control values -> ``--set`` overrides (None: leave as configured)."""
    out = []
    if population_size is not None:
        out.append(f"population.size={int(population_size)}")
    if conditioning:
        methods = [m.strip() for m in str(conditioning).split(",") if m.strip()]
        out.append(f"population.conditions=[{', '.join(methods)}]")
    if seed is not None and str(seed).strip() != "":
        out.append(f"seed={int(seed)}")
    return out


def resolve(source: ViewSource, params: dict | None = None):
    """(config, run id) of a source; raises ConfigError / ViewError with one line."""
    from simulation.config import load_config, validate_config
    from simulation.store import Store

    if source.replay:
        if not Path(source.store).exists():
            raise ViewError(f"replay: store file '{source.store}' not found (pass --store PATH)")
        store = Store(source.store)
        row = store.get_run(source.replay)
        if row is None:
            known = ", ".join(r["run_id"] for r in store.list_runs()[-3:]) or "none"
            raise ViewError(f"replay: no run '{source.replay}' in {source.store} (latest: {known})")
        return validate_config(row["config"], f"{source.store}:runs[{source.replay}].config"), source.replay
    if not source.scenario:
        raise ViewError(f"no scenario: set {ENV_SCENARIO}=scenarios/X.yaml or {ENV_REPLAY}=RUN_ID (or use: python run.py view ...)")
    cfg = load_config(source.scenario, [*source.overrides, *param_overrides(**(params or {}))])
    return cfg, cfg.run_id()


def model_params_for(source: ViewSource, cfg) -> dict:
    """SolaraViz ``model_params``: the source (fixed) and, for a live run, the
    user-adjustable population size, conditioning method and seed."""
    params: dict[str, Any] = {"source": source}
    if source.replay or cfg is None:
        return params
    configured = ", ".join(cfg.population.conditions)
    choices = [configured] + [c for c in CONDITIONS if c != configured and c != "imported"]
    params["population_size"] = {
        "type": "SliderInt",
        "value": cfg.population.size,
        "label": "Population size",
        "min": 1,
        "max": max(64, cfg.population.size),
        "step": 1,
    }
    params["conditioning"] = {"type": "Select", "value": configured, "values": choices, "label": "Conditioning method"}
    params["seed"] = {"type": "SliderInt", "value": cfg.seed, "label": "Seed", "min": 0, "max": max(99, cfg.seed), "step": 1}
    return params


# ---------------------------------------------------------------- the model
class _Progress:
    """Console stand-in for ``build_model``: forwards population-building
    progress (backstories, demographic survey) to the loading screen."""

    def __init__(self, callback=None):
        self.callback = callback

    def progress(self, task: str, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(f"{task}: {done}/{total}")


_BUILD_PROGRESS = threading.local()


class PersonaeViz(mesa.Model):
    """The model SolaraViz drives: owns the scenario model of one session.

    SolaraViz creates a new one (``cls(**model_params)``) on Reset, so every
    parameter is a keyword argument; ``source`` is a fixed parameter.
    """

    def __init__(self, source: ViewSource, population_size: int | None = None, conditioning: str | None = None, seed: int | None = None):
        super().__init__()
        self.source = source
        self.cfg = None
        self.run_id: str | None = None
        self.sim = None
        self.error: str | None = None
        self.replay = bool(source.replay)
        self.lower_bound: dict[str, float] | None = None
        self.item_wd: dict[str, dict[str, float]] = {}  # item id -> population label -> WD vs humans
        self._human_ref: dict[str, np.ndarray | None] = {}
        params = {"population_size": population_size, "conditioning": conditioning, "seed": seed}
        try:
            self.cfg, self.run_id = resolve(source, params)
            if self.replay:
                self._build()
            else:
                with ENGINE_LOCK:
                    self._build()
        except Exception as exc:  # shown in the page as one line
            self.error = one_line(exc)
            _log_unexpected(exc)
            self.sim = None
        self.datacollector = self._make_collector()
        self.running = self.sim is not None and bool(getattr(self.sim, "running", False))

    def _build(self) -> None:
        from simulation.runner import build_model
        from simulation.store import Store

        store = Store(self.cfg.store if not self.replay else self.source.store)
        progress = _Progress(getattr(_BUILD_PROGRESS, "callback", None))
        self.sim = build_model(self.cfg, store, self.run_id, replay=self.replay, console=progress)
        self.lower_bound = self._lower_bound()

    # ------------------------------------------------------------ stepping
    def step(self) -> None:
        if self.sim is None or not getattr(self.sim, "running", False):
            self.running = False
            return
        try:
            if self.replay:
                self.sim.step()
            else:
                with ENGINE_LOCK:
                    self.sim.step()
        except Exception as exc:
            self.error = f"step {self.steps}: {one_line(exc)}"
            _log_unexpected(exc)
            self.running = False
            return
        self._score_current()
        self.running = bool(self.sim.running)
        self.datacollector.collect(self)

    # ------------------------------------------------------------ views
    @property
    def is_survey(self) -> bool:
        """A questionnaire: multiple-choice items asked of persona populations."""
        if self.sim is None or not hasattr(self.sim, "populations"):
            return False
        items = getattr(self.sim, "item_list", None) or []
        return bool(items) and all(getattr(i, "options", None) for i in items)

    @property
    def has_phases(self) -> bool:
        """Steps named by ``item_list`` / ``step_index`` (questions, or e.g. consensus phases)."""
        return self.sim is not None and bool(getattr(self.sim, "item_list", None)) and hasattr(self.sim, "step_index")

    @property
    def title(self) -> str:
        if self.sim is not None and getattr(self.sim, "title", None):
            return f"{self.cfg.name}: {self.sim.title}"
        return self.cfg.name if self.cfg is not None else "Personae"

    @property
    def agents_shown(self) -> list:
        if self.sim is None:
            return []
        agents = getattr(self.sim, "agent_list", None)
        return list(agents) if agents is not None else sorted(self.sim.agents, key=lambda a: a.unique_id)

    def progress_text(self) -> str:
        if self.sim is None:
            return ""
        if self.has_phases:
            word = "question" if self.is_survey else "phase"
            return f"{word} {self.sim.step_index}/{len(self.sim.item_list)}"
        return f"step {self.steps}"

    def engine_text(self) -> str:
        engine = getattr(self.sim, "engine", None)
        if engine is None:
            return ""
        calls, hits = getattr(engine, "misses", 0), getattr(engine, "hits", 0)
        return f"engine calls {calls} · answered from the store {hits}"

    def shown_item(self):
        """The current item, or (before the first step) the first one."""
        if not self.is_survey or not self.sim.item_list:
            return None
        return self.sim.current_item or self.sim.item_list[0]

    # ------------------------------------------------------------ fidelity
    def _weight(self, agent) -> float:
        study = getattr(self.sim, "study", None)
        h = getattr(agent, "human", None)
        if study is None or h is None or not getattr(study, "is_individual", False):
            return 1.0
        return float(study.weights[h])

    def human_reference(self, item) -> np.ndarray | None:
        """The human answer distribution of an item, when the scenario has one:
        ``human_distributions()[item]`` (study scenarios), else the matched
        respondents' own answers from ``human_answers(agent, item)`` for
        self-rating items (``group == "self"``), survey-weighted."""
        if item.id in self._human_ref:
            return self._human_ref[item.id]
        ref = None
        try:
            dists = self.sim.human_distributions() if hasattr(self.sim, "human_distributions") else {}
            if dists and item.id in dists:
                ref = np.asarray(dists[item.id], dtype=float)
            elif hasattr(self.sim, "human_answers") and item.group == "self":
                from analysis.metrics import weighted_distribution

                agents = [a for a in self.sim.agents_of(0) if getattr(a, "human", None) is not None]
                answers = np.array([np.nan if (v := self.sim.human_answers(a, item.id)) is None else v for a in agents], dtype=float)
                if agents and np.isfinite(answers).any():
                    ref = weighted_distribution(answers, len(item.options), np.array([self._weight(a) for a in agents]))
        except Exception as exc:  # a reference is optional: never break the page for it
            _log_unexpected(exc)
            ref = None
        if ref is not None and (ref.shape != (len(item.options),) or not np.isfinite(ref).all() or ref.sum() <= 0):
            ref = None
        self._human_ref[item.id] = ref
        return ref

    def persona_distributions(self, item) -> dict[str, np.ndarray]:
        """Survey-weighted mean option distribution per population (the matched
        personas' probabilities, as the evaluation aggregates them)."""
        out = {}
        for p_i, population in enumerate(self.sim.populations):
            agents = [a for a in self.sim.agents_of(p_i) if item.id in a.answers]
            if not agents:
                continue
            w = np.array([self._weight(a) for a in agents])
            probs = np.array([a.answers[item.id]["probs"] for a in agents], dtype=float)
            out[population.label] = np.average(probs, axis=0, weights=w if w.sum() > 0 else None)
        return out

    def _score_current(self) -> None:
        if not self.is_survey or self.sim.current_item is None:
            return
        from analysis.metrics import wasserstein

        item = self.sim.current_item
        human = self.human_reference(item)
        if human is None:
            return
        self.item_wd[item.id] = {
            label: wasserstein(human, probs, item.positions) for label, probs in self.persona_distributions(item).items()
        }

    def running_wd(self, label: str) -> float:
        vals = [d[label] for d in self.item_wd.values() if label in d and np.isfinite(d[label])]
        return float(np.mean(vals)) if vals else float("nan")

    def running_lower_bound(self) -> float:
        if not self.lower_bound:
            return float("nan")
        vals = [self.lower_bound[q] for q in self.item_wd if q in self.lower_bound and np.isfinite(self.lower_bound[q])]
        return float(np.mean(vals)) if vals else float("nan")

    def _lower_bound(self) -> dict[str, float] | None:
        study = getattr(self.sim, "study", None)
        human = self.cfg.human
        if study is None or human is None or not getattr(study, "is_individual", False) or not hasattr(self.sim, "item_list"):
            return None
        if not hasattr(self.sim, "human_distributions"):
            return None
        try:
            if not self.sim.human_distributions():
                return None
            from analysis.lower_bound import human_lower_bound

            ids = [i.id for i in self.sim.item_list if i.id in set(study.question_ids)]
            if not ids:
                return None
            lb = human_lower_bound(study.select(ids), n_splits=human.lower_bound_splits, seed=self.cfg.seed)
            return dict(lb.per_question_wd)
        except Exception as exc:
            _log_unexpected(exc)
            return None

    def _make_collector(self) -> mesa.DataCollector:
        """The scenario's model reporters (evaluated on the scenario model) plus
        the running WD per condition and the running human lower bound."""
        reporters: dict[str, Any] = {}
        inner = getattr(self.sim, "datacollector", None)
        for name, rep in (getattr(inner, "model_reporters", None) or {}).items():
            reporters[name] = _on_sim(rep)
        if self.is_survey:
            for population in self.sim.populations:
                reporters[f"WD {population.label}"] = lambda m, label=population.label: m.running_wd(label)
            if self.lower_bound:
                reporters["human lower bound"] = lambda m: m.running_lower_bound()
        if not reporters:
            reporters["steps"] = lambda m: m.steps
        return mesa.DataCollector(model_reporters=reporters)


def _on_sim(reporter):
    if isinstance(reporter, str):
        return lambda m: getattr(m.sim, reporter, None)
    if isinstance(reporter, list):
        return lambda m: reporter[0](*reporter[1])
    if getattr(reporter, "__self__", None) is not None:  # a bound method: called without arguments
        return lambda m: reporter()
    return lambda m: reporter(m.sim)


def _log_unexpected(exc: BaseException) -> None:
    from agents.bank import BankError
    from agents.llm.base import EngineError
    from simulation.config import ConfigError
    from simulation.runner import RunError

    if not isinstance(exc, (ConfigError, EngineError, BankError, RunError, ViewError)):
        traceback.print_exception(exc, file=sys.stderr)


# ---------------------------------------------------------------- consensus
@dataclass
class ConsensusView:
    label: str = ""  # e.g. "group 0"
    question: str = ""
    statements: list[str] = field(default_factory=list)  # per round: draft, revision 1, ...
    agreement: np.ndarray | None = None  # [round, participant], Likert (1..7) expected values
    participants: list[str] = field(default_factory=list)
    phase: str = ""


def _as_statement(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("statement") or x.get("text") or "")
    return str(getattr(x, "statement", x))


def _names(parts) -> list[str]:
    """Participant names from a list of ids / objects with ``.id``; anything
    else (e.g. a ``participants(group)`` method) is not a list of names."""
    if not isinstance(parts, (list, tuple)):
        return []
    return [str(getattr(p, "id", p)) for p in parts]


def _question(q) -> str:
    return str(getattr(q, "question", q) or "") if q is not None else ""


def _episode_view(ep, label: str, statements=None, agreement=None) -> ConsensusView:
    payoff = getattr(ep, "payoff", None)
    view = ConsensusView(label=label, question=_question(getattr(ep, "question", None)))
    view.participants = _names(getattr(ep, "participants", None))
    view.statements = [_as_statement(x) for x in (getattr(ep, "statements", None) or statements or [])]
    phase = getattr(ep, "phase", "")
    view.phase = "finished" if getattr(ep, "done", False) else str(phase or "")
    source = getattr(payoff, "agreement", None) if payoff is not None else None
    view.agreement = _agreement_matrix(source if source is not None else agreement, view.participants)
    return view


def consensus_views(sim) -> list[ConsensusView]:
    """Read a consensus model through a generic interface (first match wins);
    one view per discussion group:

    1. ``sim.episodes`` (or ``sim.episode``): ``mechanisms.Episode``-like objects,
       read for ``.question``, ``.participants`` (``.id``), ``.statements``,
       ``.payoff.agreement`` (``[round][participant]``), ``.phase`` / ``.done``;
       ``sim.statements[g]`` / ``sim.agreement[g]`` fill in what an episode lacks;
    2. ``sim.statements`` / ``sim.agreement`` as dicts keyed by group;
    3. one group: ``sim.statements`` (list of each round's statement: str, or
       dicts / objects with ``statement``) with ``sim.agreement``
       (``[round][participant]`` or ``{participant: [per round]}``), or
       ``sim.rounds`` (list of dicts with ``statement`` and ``agreement``).

    Participants are named by a list ``sim.participants`` or the episode's
    participants, else numbered. Empty when the model has none of these.
    """
    if sim is None:
        return []
    statements = getattr(sim, "statements", None)
    agreement = getattr(sim, "agreement", None)
    episodes = getattr(sim, "episodes", None)
    if not isinstance(episodes, (list, tuple)) or not episodes:
        episodes = [sim.episode] if getattr(sim, "episode", None) is not None else []
    if episodes:
        by_group = lambda d, g: d.get(g) if isinstance(d, dict) else None  # noqa: E731
        return [
            _episode_view(ep, f"group {g}" if len(episodes) > 1 else "", by_group(statements, g), by_group(agreement, g))
            for g, ep in enumerate(episodes)
        ]
    if isinstance(statements, dict) and statements and all(isinstance(v, (list, tuple)) for v in statements.values()):
        views = []
        for g in sorted(statements):
            ag = agreement.get(g) if isinstance(agreement, dict) else None
            views.append(ConsensusView(label=f"group {g}", statements=[_as_statement(x) for x in statements[g]], agreement=_agreement_matrix(ag, [])))
        for v in views:
            if v.agreement is not None:
                v.participants = [f"P{i + 1}" for i in range(v.agreement.shape[1])]
        return views
    rounds = getattr(sim, "rounds", None)
    if statements is None and agreement is None and isinstance(rounds, (list, tuple)) and rounds and isinstance(rounds[0], dict):
        statements = [_as_statement(r) for r in rounds]
        agreement = [r.get("agreement") for r in rounds]
    if statements is None and agreement is None:
        return []
    if callable(statements):
        statements = statements()
    if isinstance(statements, dict):
        statements = [statements[k] for k in sorted(statements)]
    view = ConsensusView(question=_question(getattr(sim, "question", None)))
    view.statements = [_as_statement(x) for x in (statements or [])]
    view.participants = _names(getattr(sim, "participants", None))
    view.agreement = _agreement_matrix(agreement, view.participants)
    if view.agreement is not None and not view.participants:
        view.participants = [f"P{i + 1}" for i in range(view.agreement.shape[1])]
    return [view]


def consensus_view(sim) -> ConsensusView | None:
    """The first group's view (see :func:`consensus_views`), or None."""
    views = consensus_views(sim)
    return views[0] if views else None


def _agreement_matrix(agreement, participants: list[str]) -> np.ndarray | None:
    if agreement is None:
        return None
    if callable(agreement):
        agreement = agreement()
    if isinstance(agreement, np.ndarray):
        agreement = agreement.tolist()
    if isinstance(agreement, dict):  # {participant: [per round]}
        keys = list(agreement)
        cols = [np.asarray(agreement[k], dtype=float).ravel() for k in keys]
        n = max((c.size for c in cols), default=0)
        mat = np.full((n, len(cols)), np.nan)
        for j, c in enumerate(cols):
            mat[: c.size, j] = c
        if not participants:
            participants.extend(str(k) for k in keys)
        return mat if mat.size else None
    rows = []
    for r in agreement:
        if r is None:
            rows.append([])
        elif isinstance(r, dict):
            rows.append([r.get(p, np.nan) for p in participants] if participants else list(r.values()))
        else:
            rows.append(list(np.asarray(r, dtype=float).ravel()))
    if not rows:
        return None
    width = max(len(r) for r in rows)
    if width == 0:
        return None
    mat = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        mat[i, : len(r)] = np.asarray(r, dtype=float)
    return mat


# ---------------------------------------------------------------- persona traits
def trait_choices(agents) -> list[str]:
    """Colour-by choices: party, condition, answer, then every profile trait."""
    choices = ["party", "condition", "answer"]
    if any(getattr(a, "group", None) is not None for a in agents[:50]):
        choices.insert(0, "group")
    for a in agents[:2000]:
        for src in (getattr(a, "human_profile", None) or {}, getattr(a, "profile", None) or {}):
            for k in src:
                if k not in choices and isinstance(src[k], (str, int, float, bool)):
                    choices.append(k)
    if any(getattr(a, "method", "") for a in agents[:50]) and "method" not in choices:
        choices.append("method")
    return choices


def current_answer(agent) -> int | None:
    cur = getattr(agent, "current", None)
    ans = (getattr(agent, "answers", None) or {}).get(cur) if cur else None
    if not ans or ans.get("sampled") is None:
        return None
    return int(ans["sampled"])


def trait_value(agent, trait: str, item=None) -> str:
    if trait == "answer":
        k = current_answer(agent)
        if k is None:
            return "not answered"
        if item is not None and k < len(item.options):
            return f"{chr(65 + k)}. {item.options[k]}"
        return chr(65 + k)
    if trait in ("party", "condition", "method", "group"):
        v = getattr(agent, trait, None)
        if v not in (None, ""):
            return str(v)
    for src in (getattr(agent, "human_profile", None) or {}, getattr(agent, "profile", None) or {}):
        if trait in src and src[trait] not in (None, ""):
            return str(src[trait])
    return "n/a"


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _render_item_text(item) -> str:
    try:
        return item.text.format(own="[own party]", other="[other party]")
    except (KeyError, IndexError, ValueError):
        return item.text


# ---------------------------------------------------------------- figures
def persona_figure(model: PersonaeViz, color_by: str, layout: str) -> Figure:
    agents = model.agents_shown
    item = getattr(model.sim, "current_item", None) if model.is_survey else None
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.set_axis_off()
    if not agents:
        ax.text(0.5, 0.5, "no personas", ha="center", va="center")
        return fig
    values = [trait_value(a, color_by, item) for a in agents]
    if color_by == "answer" and item is not None:
        cats = [f"{chr(65 + k)}. {o}" for k, o in enumerate(item.options)] + ["not answered"]
        cmap = matplotlib.colormaps["viridis"]
        colours = {c: cmap(i / max(1, len(item.options) - 1)) for i, c in enumerate(cats[:-1])}
        colours["not answered"] = (0.8, 0.8, 0.8, 1.0)
    else:
        cats = sorted(set(values), key=lambda v: (v in ("n/a", "not answered"), v))
        cmap = matplotlib.colormaps["tab10" if len(cats) <= 10 else "tab20"]
        colours = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    pos = _positions(model, agents, layout)
    n = len(agents)
    xs, ys = [p[0] for p in pos], [p[1] for p in pos]
    span = max(max(xs) - min(xs) + 1, (max(ys) - min(ys) + 1) * 2.2, 3)
    size = float(np.clip((230.0 / span) ** 2, 14.0, 650.0))  # marker area (pt^2) from the grid's extent
    fig.subplots_adjust(left=0.02, right=0.70, top=0.86, bottom=0.04)
    if layout == "network":
        for i, j in _edges(model, agents):
            ax.plot([pos[i][0], pos[j][0]], [pos[i][1], pos[j][1]], color="0.75", lw=0.8, zorder=1)
    for k in sorted({current_answer(a) for a in agents}, key=lambda x: -1 if x is None else x):
        idx = [i for i, a in enumerate(agents) if current_answer(a) == k]
        marker = "o" if k is None else MARKERS[k % len(MARKERS)]
        ax.scatter(
            [xs[i] for i in idx],
            [ys[i] for i in idx],
            s=size,
            c=[colours[values[i]] for i in idx],
            marker=marker,
            edgecolors="black" if k is not None else "0.6",
            linewidths=0.8,
            zorder=2,
        )
    if n <= 150 and size >= 60:
        fs = 10 if size >= 300 else 7
        for i, a in enumerate(agents):
            k = current_answer(a)
            if k is not None:
                ax.annotate(chr(65 + k), pos[i], ha="center", va="center", fontsize=fs, color="white", weight="bold", zorder=3, path_effects=OUTLINE)
    if layout != "network":
        for key in sorted({_block_of(a) for a in agents}, key=lambda k: (k[0], str(type(k[1])), k[1])):
            rows = [ys[i] for i, a in enumerate(agents) if _block_of(a) == key]
            ax.text(min(xs) - 0.45, max(rows) + 0.55, _block_label(model, key), ha="left", va="bottom", fontsize=8, color="0.3")
    handles = [
        matplotlib.lines.Line2D([], [], marker="o", ls="", color=colours[c], markeredgecolor="black", label=_wrap(c, 26)[:60])
        for c in cats[:12]
        if c in colours and (c in values or color_by == "answer")
    ]
    if handles:
        fig.legend(handles=handles, title=color_by, fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(0.71, 0.5), frameon=False)
    if item is not None:
        what = f"marked by their answer to {item.id} (letter, shape)"
    else:
        what = "no question asked yet" if model.is_survey else "no multiple-choice answer"
    fig.suptitle(f"{n} personas · {what}", fontsize=9)
    pad_x, pad_y = 0.7, 0.9
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y * (0.6 if layout != "network" else 1), max(ys) + pad_y * (1.2 if layout != "network" else 1))
    if layout == "network":
        ax.set_xlim(min(xs) - 0.25, max(xs) + 0.25)
        ax.set_ylim(min(ys) - 0.25, max(ys) + 0.25)
    return fig


def _block_of(agent) -> tuple[str, Any]:
    """Grid block / network cluster of an agent: its discussion group when it
    has one (consensus), else its population (condition)."""
    if getattr(agent, "group", None) is not None:
        return ("group", agent.group)
    return ("population", getattr(agent, "population", 0))


def _block_label(model: PersonaeViz, key: tuple[str, Any]) -> str:
    kind, k = key
    if kind == "group":
        return f"group {k}"
    pops = getattr(model.sim, "populations", None) or []
    return pops[k].label if isinstance(k, int) and 0 <= k < len(pops) else str(k)


def _positions(model: PersonaeViz, agents: list, layout: str) -> list[tuple[float, float]]:
    n = len(agents)
    if layout == "network" and n <= 400:
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(_edges(model, agents))
        if g.number_of_edges() == 0:
            lay = nx.circular_layout(g)
        else:
            lay = nx.spring_layout(g, seed=0)
        return [(float(lay[i][0]), float(lay[i][1])) for i in range(n)]
    # grid: one block of rows per population (or discussion group), humans in order
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(agents):
        groups.setdefault(_block_of(a), []).append(i)
    widest = max(len(v) for v in groups.values())
    cols = max(1, min(widest, max(8, int(math.ceil(math.sqrt(widest * 3))))))
    out: list[tuple[float, float]] = [(0.0, 0.0)] * n
    y = 0.0
    for key in sorted(groups, key=lambda k: (k[0], str(type(k[1])), k[1])):
        members = groups[key]
        for j, i in enumerate(members):
            out[i] = (float(j % cols), -(y + j // cols))
        y += math.ceil(len(members) / cols) + 0.6
    return out


def _edges(model: PersonaeViz, agents: list) -> list[tuple[int, int]]:
    """Network links: the members of a discussion group deliberate together
    (a clique per group, consensus); otherwise personas standing for the same
    human across conditions are chained."""
    edges = []
    if any(getattr(a, "group", None) is not None for a in agents):
        by_group: dict[Any, list[int]] = {}
        for i, a in enumerate(agents):
            if getattr(a, "group", None) is not None:
                by_group.setdefault(a.group, []).append(i)
        for members in by_group.values():
            edges += [(u, v) for k, u in enumerate(members) for v in members[k + 1 :]]
        return edges
    by_human: dict[Any, list[int]] = {}
    for i, a in enumerate(agents):
        h = getattr(a, "human", None)
        if h is not None:
            by_human.setdefault(h, []).append(i)
    for members in by_human.values():
        edges += [(members[k], members[k + 1]) for k in range(len(members) - 1)]
    return edges


def distribution_figure(model: PersonaeViz, item, dists: dict[str, np.ndarray], human: np.ndarray | None) -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    k = len(item.options)
    series = list(dists.items()) + ([("human", human)] if human is not None else [])
    width = 0.8 / max(1, len(series))
    x = np.arange(k)
    cmap = matplotlib.colormaps["tab10"]
    for s, (label, probs) in enumerate(series):
        is_human = label == "human"
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
    ax.set_xticklabels([_wrap(f"{chr(65 + i)}. {o}", 14) for i, o in enumerate(item.options)], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    asked = model.sim.current_item is not None
    ax.set_title(_wrap(f"{item.id}: {_render_item_text(item)}" + ("" if asked else " (not asked yet)"), 70), fontsize=8)
    if series:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def fidelity_figure(model: PersonaeViz) -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    df = model.datacollector.get_model_vars_dataframe()
    steps = df["step"] if "step" in df.columns else np.arange(1, len(df) + 1)
    for col in [c for c in df.columns if c.startswith("WD ")]:
        ax.plot(steps, df[col], marker="o", label=col[3:])
    if "human lower bound" in df.columns:
        ax.plot(steps, df["human lower bound"], ls="--", color="black", label="human lower bound (split halves)")
    n_items = len(model.sim.item_list) if model.is_survey else max(1, len(df))
    ax.set_xlim(0.5, max(1, n_items) + 0.5)
    ax.set_xlabel("step (questions asked)")
    ax.set_ylabel("running mean WD vs humans (0-1)")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if ax.lines:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def consensus_figure(view: ConsensusView) -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    mat = view.agreement
    im = ax.imshow(mat.T, cmap="RdYlGn", vmin=1, vmax=7, aspect="auto")
    ax.set_xticks(range(mat.shape[0]))
    ax.set_xticklabels(["draft" if r == 0 else f"rev. {r}" for r in range(mat.shape[0])], fontsize=8)
    ax.set_yticks(range(mat.shape[1]))
    names = short_names(view.participants[: mat.shape[1]], 18)
    ax.set_yticklabels(names + [f"P{j + 1}" for j in range(len(names), mat.shape[1])], fontsize=8)
    for r in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[r, j]):
                ax.text(r, j, f"{mat[r, j]:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="agreement (1-7)")
    ax.set_title("each participant's agreement with each round's statement", fontsize=9)
    fig.tight_layout()
    return fig


def short_names(names: list[str], width: int = 14) -> list[str]:
    """Labels that fit a legend and still tell participants apart (persona ids
    share long prefixes such as ``anthology-smollm2-...``)."""
    cut = [n if len(n) <= width else n[: width - 1] + "…" for n in names]
    if len(set(cut)) == len(cut):
        return cut
    return [f"P{i + 1} …{n[-6:]}" if len(n) > 6 else f"P{i + 1} {n}" for i, n in enumerate(names)]


def _fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"


# ---------------------------------------------------------------- components
def _deps(model: PersonaeViz, *extra):
    return [id(model), model.steps, *extra]


def _figure(fig: Figure, deps: list):
    """A matplotlib figure as a PNG (tight box: legends outside the axes stay in)."""
    return solara.FigureMatplotlib(fig, format="png", dependencies=deps, bbox_inches="tight")


def _heading(text: str, size: str = "1.1em"):
    return solara.Text(text, style={"font-weight": "bold", "font-size": size})


@solara.component
def Status(model: PersonaeViz):
    """Header: what is shown, progress, engine use, any error (one line).
    (No solara.Markdown anywhere: it loads KaTeX, which solara-assets lacks.)"""
    update_counter.get()
    with solara.Column(classes=["personae-status"], style={"padding": "4px 12px"}, gap="2px"):
        _heading(model.title)
        run = f" · run {model.run_id}" if model.run_id and not model.replay else ""
        solara.Text(model.source.describe() + run, style={"font-size": "0.85em", "color": "#555"})
        if model.cfg is not None and not model.replay:
            c = model.cfg
            solara.Text(
                f"conditions {', '.join(c.population.conditions)} · population size {c.population.size} · seed {c.seed}",
                classes=["personae-settings"],
                style={"font-size": "0.85em", "color": "#555"},
            )
        if model.sim is not None:
            item = getattr(model.sim, "current_item", None) if model.has_phases else None
            rest = ""
            if item is not None and model.is_survey:
                rest += f" · {item.id}: {_render_item_text(item)}"
            elif item is not None:
                rest += f" · {item.id}"
            elif model.is_survey:
                rest += " · press STEP to ask the first question"
            elif model.has_phases:
                rest += " · press STEP to run the first phase"
            if not model.running and model.steps:
                rest += " · finished"
            rest += f" · {model.engine_text()}"
            with solara.Row(gap="4px"):
                solara.Text(model.progress_text(), classes=["personae-progress"], style={"font-weight": "bold", "white-space": "nowrap"})
                solara.Text(rest)
        if model.error:
            solara.Error(model.error, classes=["personae-error"])


@solara.component
def PersonaMap(model: PersonaeViz):
    update_counter.get()
    color_by, set_color_by = solara.use_state(None)  # None: the first choice (group or party)
    layout, set_layout = solara.use_state("grid")
    agents = model.agents_shown
    choices = solara.use_memo(lambda: trait_choices(agents), [id(model)])
    shown = color_by if color_by in choices else choices[0]
    with solara.Card("Personas", classes=["personae-map"], style={"width": "100%"}, margin=0):
        with solara.Row(style={"align-items": "center"}):
            solara.Select("colour by", value=shown, values=choices, on_value=set_color_by, style={"max-width": "220px"})
            solara.ToggleButtonsSingle(value=layout, values=["grid", "network"], on_value=set_layout, dense=True)
        if model.sim is None:
            solara.Text("no model")
            return
        _figure(persona_figure(model, shown, layout), _deps(model, shown, layout))


@solara.component
def AnswerDistributions(model: PersonaeViz):
    update_counter.get()
    with solara.Card("Current question: personas vs humans", classes=["personae-dist"], style={"width": "100%"}, margin=0):
        item = model.shown_item()
        if item is None:
            solara.Text("This scenario has no questionnaire items.")
            return
        dists = model.persona_distributions(item) if model.sim.current_item is not None else {}
        human = model.human_reference(item)
        _figure(distribution_figure(model, item, dists, human), _deps(model))
        parts = [f"{label}: " + " ".join(f"{p:.3f}" for p in probs) for label, probs in dists.items()]
        parts.append("human: " + " ".join(f"{p:.3f}" for p in human) if human is not None else "no human distribution for this item")
        if not dists:
            parts.insert(0, "not asked yet")
        solara.Text(" · ".join(parts), classes=["personae-dist-values"], style={"font-size": "0.85em"})


@solara.component
def FidelityPlot(model: PersonaeViz):
    update_counter.get()
    with solara.Card("Fidelity over steps", classes=["personae-fidelity"], style={"width": "100%"}, margin=0):
        if not model.is_survey:
            solara.Text("No questionnaire: no fidelity metric.")
            return
        _figure(fidelity_figure(model), _deps(model))
        latest = {label: model.running_wd(label) for label in (p.label for p in model.sim.populations)}
        if model.item_wd:
            text = "running WD: " + ", ".join(f"{k} {_fmt(v)}" for k, v in latest.items())
            if model.lower_bound:
                text += f" · human lower bound {_fmt(model.running_lower_bound())}"
        elif model.sim.current_item is None:
            text = "no question asked yet"
        else:
            text = "no human reference for the questions asked so far"
        solara.Text(text, classes=["personae-fidelity-text"], style={"font-size": "0.85em"})


@solara.component
def ConsensusPanel(model: PersonaeViz):
    update_counter.get()
    card_style = {"width": "100%", "height": "100%", "overflow-y": "auto"}  # scrolls inside its grid cell
    with solara.Card("Consensus rounds", classes=["personae-consensus"], style=card_style, margin=0):
        views = consensus_views(model.sim)
        if not views:
            solara.Text("No consensus state on this model (expects episodes, or statements / agreement / rounds).")
            return
        for view in views:
            with solara.Column(gap="4px", classes=["personae-group"], style={"margin-bottom": "10px"}):
                head = " · ".join(x for x in (view.label, f"question: {view.question}" if view.question else "", f"next phase: {view.phase}" if view.phase else "") if x)
                if head:
                    _heading(head, "0.95em")
                if view.agreement is not None and np.isfinite(view.agreement).any():
                    _figure(consensus_figure(view), _deps(model, view.label))
                elif view.statements:
                    solara.Text("agreement: measured in the payoff phase", style={"font-size": "0.85em", "color": "#555"})
                if not view.statements:
                    solara.Text("no statement yet", style={"font-size": "0.85em"})
                names = short_names(view.participants)
                for r, text in enumerate(view.statements):
                    label = "Draft" if r == 0 else f"Revision {r}"
                    row = view.agreement[r] if view.agreement is not None and r < view.agreement.shape[0] else None
                    agree = ""
                    if row is not None and np.isfinite(row).any():
                        agree = " · agreement " + ", ".join(f"{p}: {_fmt(v)}" for p, v in zip(names, row))
                    _heading(f"{label}{agree}", "0.85em")
                    solara.Text(text, classes=["personae-statement"], style={"font-size": "0.85em", "white-space": "pre-wrap"})


def _show_points(ax) -> None:
    """Mark every point of Mesa's line plots (one step is otherwise invisible)."""
    for line in ax.get_lines():
        line.set_marker("o")
        line.set_xdata(np.asarray(line.get_xdata(), dtype=float) + 1)  # DataCollector row i is step i + 1
    ax.relim()
    ax.autoscale_view()


def components_for(model: PersonaeViz) -> list:
    comps: list = [PersonaMap]
    if model.is_survey:
        comps += [AnswerDistributions, FidelityPlot]
        if "mean_outside_mass" in model.datacollector.model_reporters:
            comps.append(make_plot_component("mean_outside_mass", post_process=_show_points, backend="matplotlib"))
    if consensus_views(model.sim) or (model.cfg is not None and model.cfg.scenario == "consensus"):
        comps.append(ConsensusPanel)
    return comps


@solara.component
def VizView(first: PersonaeViz, params: dict):
    model = solara.use_reactive(first)
    components = solara.use_memo(lambda: components_for(first), [])
    Status(model.value)
    SolaraViz(model, components=components, model_params=params, name=f"Personae · {first.title}")


OFFLINE_CDN = "http://127.0.0.1:9/npm/"  # a closed local port: a missing asset fails here, never online


def apply_offline_settings() -> None:
    """Keep the solara server on this machine even under a plain ``solara run``:
    no telemetry, and assets missing from solara-assets are never fetched from
    the CDN (``python run.py view`` also sets the SOLARA_* variables before
    solara starts, which covers its start-up ping and version check too)."""
    try:
        import solara.server.settings as server_settings

        server_settings.telemetry.mixpanel_enable = False
    except ImportError:  # solara without its server: nothing to do
        pass
    if "SOLARA_ASSETS_CDN" not in os.environ:
        solara.settings.assets.cdn = OFFLINE_CDN


def make_page(source: ViewSource):
    """The page component for one source. Each browser session renders its own
    ``Page`` and so builds its own model (in a thread, with a loading line)."""
    apply_offline_settings()

    @solara.component
    def Page():
        status = solara.use_reactive("building the model…")

        def build():
            _BUILD_PROGRESS.callback = lambda text: status.set(f"building the model… {text}")
            try:
                return PersonaeViz(source=source)
            finally:
                _BUILD_PROGRESS.callback = None

        result = solara.use_thread(build, dependencies=[], intrusive_cancel=False)
        if result.state == solara.ResultState.FINISHED and result.value is not None:
            model = result.value
            if model.sim is None:
                with solara.Column(style={"padding": "24px"}):
                    _heading(f"Personae · {source.describe()}", "1.4em")
                    solara.Error(model.error or "the model could not be built", classes=["personae-error"])
                return
            params = model_params_for(source, model.cfg)
            VizView(model, params)
        elif result.state == solara.ResultState.ERROR:
            with solara.Column(style={"padding": "24px"}):
                solara.Error(one_line(result.error), classes=["personae-error"])
        else:
            with solara.Column(style={"padding": "24px"}, classes=["personae-loading"]):
                _heading(f"Personae · {source.describe()}", "1.4em")
                solara.Text(status.value, classes=["personae-building"])
                solara.ProgressLinear(True)

    return Page
