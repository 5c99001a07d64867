"""What the browser page shows: a scenario YAML run live, or a logged run replayed.

A :class:`ViewSource` travels from ``python run.py view`` to the solara server
through environment variables; :func:`resolve` turns it (plus the page's
controls) into a validated configuration and a run id. The page's controls are
the constructor arguments of ``simulation.viz.PersonaeViz`` (Mesa's
``model_params`` convention), listed by :func:`model_params_for`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PersonaeError

ENV_SCENARIO = "PERSONAE_SCENARIO"
ENV_SET = "PERSONAE_SET"
ENV_REPLAY = "PERSONAE_REPLAY"
ENV_STORE = "PERSONAE_STORE"

CONDITIONS = ("anthology", "interview", "qa", "bio", "portray")  # choices of the conditioning control


class ViewError(PersonaeError, ValueError):
    """A page that cannot be shown (one line)."""


@dataclass(frozen=True)
class ViewSource:
    """A scenario YAML (+ ``--set`` overrides) run live, or a logged run replayed
    from a store."""

    scenario: str | None = None
    overrides: tuple[str, ...] = ()
    replay: str | None = None
    store: str = "personae.db"

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
    def from_env(cls, env=None) -> ViewSource:
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


def param_overrides(population_size=None, conditioning=None, seed=None) -> list[str]:
    """Control values -> ``--set`` overrides (None: leave as configured)."""
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
    from core.store import Store
    from scenarios.config import load_config, validate_config

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
    population size, conditioning method and seed controls."""
    params: dict[str, Any] = {"source": source}
    if source.replay or cfg is None:
        return params
    configured = ", ".join(cfg.population.conditions)
    choices = [configured] + [c for c in CONDITIONS if c != configured]
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
