"""What the browser page shows: a scenario YAML run live, or a logged run replayed.

A :class:`ViewSource` travels from ``python run.py view`` to the solara server
through environment variables; :func:`resolve` turns it (plus the page's
controls) into a validated configuration and a run id. The page's controls are
the configuration fields that carry a control hint (``scenarios.config.control``),
passed to ``simulation.viz.PersonaeViz`` as keyword arguments named by their
path (Mesa's ``model_params`` convention), listed by :func:`model_params_for`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from core.errors import PersonaeError

ENV_SCENARIO = "PERSONAE_SCENARIO"
ENV_SET = "PERSONAE_SET"
ENV_REPLAY = "PERSONAE_REPLAY"
ENV_STORE = "PERSONAE_STORE"

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


@dataclass(frozen=True)
class Control:
    """One page control: a configuration field that carries a control hint
    (``scenarios.config.control``), named by its path (``population__size``, the
    model's keyword argument) and applied with ``model_copy(update=...)``."""

    path: tuple[str, ...]
    hint: dict
    choices: tuple[str, ...] = ()  # a Select's values (a Literal field's, or a list of them)
    is_list: bool = False

    @property
    def name(self) -> str:
        return "__".join(self.path)

    def value(self, cfg) -> Any:
        v: Any = cfg
        for part in self.path:
            v = v.get(part, None) if isinstance(v, dict) else getattr(v, part)
        return ", ".join(v) if self.is_list else v

    def param(self, cfg) -> dict:
        """SolaraViz's ``model_params`` entry, at the configured value."""
        hint = {k: v for k, v in self.hint.items()}
        value = self.value(cfg)
        if hint["type"] == "Select":
            hint["values"] = [str(value)] + [c for c in self.choices if c != str(value)]
        if "max" in hint and isinstance(value, (int, float)):
            hint["max"] = max(hint["max"], value)
        return {**hint, "value": value}

    def parse(self, value: Any) -> Any:
        if self.is_list:
            return [m.strip() for m in str(value).split(",") if m.strip()]
        return value


def _choices(annotation) -> tuple[tuple[str, ...], bool]:
    """(Literal values, is a list of them) of a field's annotation."""
    if get_origin(annotation) is list:
        return _choices(get_args(annotation)[0])[0], True
    if get_origin(annotation) is Literal:
        return tuple(str(a) for a in get_args(annotation)), False
    return (), False


def _model_in(annotation) -> type[BaseModel] | None:
    for a in (annotation, *get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def schema_controls(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[Control]:
    """Every field of ``model`` (and of the models inside it) that carries a control hint."""
    out: list[Control] = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if "control" in extra:
            choices, is_list = _choices(field.annotation)
            out.append(Control((*prefix, name), dict(extra["control"]), choices, is_list))
        inner = _model_in(field.annotation)
        if inner is not None:
            out += schema_controls(inner, (*prefix, name))
    return out


def controls_for(cfg) -> list[Control]:
    """The page's controls for ``cfg``: the scenario schema's, then the scenario's own
    options model's (``options__<field>``)."""
    from scenarios.config import ScenarioConfig
    from simulation.runner import scenario_class

    out = schema_controls(ScenarioConfig)
    options = getattr(scenario_class(cfg.scenario), "options_model", None)
    if options is not None:
        out += schema_controls(options, ("options",))
    return out


def apply_controls(cfg, values: dict[str, Any], label: str):
    """``cfg`` with the page's control values (None: leave as configured), validated
    again (a bad value is one ConfigError line naming the field)."""
    from scenarios.config import validate_config

    updated = cfg
    for c in controls_for(cfg):
        v = values.get(c.name)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        updated = _updated(updated, c.path, c.parse(v))
    if updated is cfg:
        return cfg
    return validate_config(updated.model_dump(mode="json"), label)


def _updated(model, path: tuple[str, ...], value):
    head, rest = path[0], path[1:]
    if not rest:
        return model.model_copy(update={head: value})
    child = getattr(model, head)
    if isinstance(child, dict):  # options: the scenario validates them from the dict
        return model.model_copy(update={head: {**child, rest[0]: value}})
    return model.model_copy(update={head: _updated(child, rest, value)})


def resolve(source: ViewSource, params: dict | None = None):
    """(config, run id) of a source; raises ConfigError / ViewError with one line."""
    from core.store import Store
    from scenarios.config import load_config, stored_config

    if source.replay:
        if not Path(source.store).exists():
            raise ViewError(f"replay: store file '{source.store}' not found (pass --store PATH)")
        store = Store(source.store)
        row = store.get_run(source.replay)
        if row is None:
            known = ", ".join(r["run_id"] for r in store.list_runs()[-3:]) or "none"
            raise ViewError(f"replay: no run '{source.replay}' in {source.store} (latest: {known})")
        return stored_config(row["config"], f"{source.store}:runs[{source.replay}].config"), source.replay
    if not source.scenario:
        raise ViewError(f"no scenario: set {ENV_SCENARIO}=scenarios/X.yaml or {ENV_REPLAY}=RUN_ID (or use: python run.py view ...)")
    cfg = apply_controls(load_config(source.scenario, list(source.overrides)), params or {}, source.scenario)
    if not Path(cfg.store).exists():
        return cfg, cfg.run_id()
    from simulation.runner import stored_run_id

    return cfg, stored_run_id(cfg, Store(cfg.store))  # as `run` names it: the same run, resumed


def model_params_for(source: ViewSource, cfg) -> dict:
    """SolaraViz ``model_params``: the source (fixed) and, for a live run, one control
    per configuration field that carries a control hint (:func:`controls_for`)."""
    params: dict[str, Any] = {"source": source}
    if source.replay or cfg is None:
        return params
    params.update({c.name: c.param(cfg) for c in controls_for(cfg)})
    return params
