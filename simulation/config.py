"""Scenario YAML: the one file that defines a study, validated with pydantic.

Every error is reported as one line naming the file, the field and what was
expected, e.g. ``scenarios/x.yaml: population.size: expected an integer > 0, got 'ten'``.
Command-line overrides (``--set population.size=20``) are applied to the raw
YAML before validation, so they are checked the same way.
"""
from __future__ import annotations

from core.errors import PersonaeError

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.backstories import GenerationParams
from agents.llm.factory import EngineConfig


class ConfigError(PersonaeError, ValueError):
    """A bad scenario file or override; the message is a single line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackstoryConfig(_Strict):
    max_tokens: int = Field(160, gt=0)
    temperature: float = Field(1.0, ge=0)
    citizenship_filter: bool = False
    max_attempts: int = Field(3, gt=0)
    critic: bool = True
    interview_questions: int = Field(10, ge=1, le=10)

    def params(self) -> GenerationParams:
        return GenerationParams(**self.model_dump())


class PopulationConfig(_Strict):
    size: int = Field(8, gt=0)  # personas generated per generated condition
    # Conditioning methods compared side by side: anthology, interview (generated
    # backstories, matched to humans), qa, bio, portray (one persona per human
    # from the human's demographics), imported (a bank from a JSONL file).
    conditions: list[Literal["anthology", "interview", "qa", "bio", "portray", "imported"]] = ["anthology"]
    import_path: str | None = None  # JSONL of backstories for the 'imported' condition
    backstories: BackstoryConfig = BackstoryConfig()
    demographics: Literal["probs", "sample"] = "probs"

    @field_validator("conditions")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("expected at least one condition")
        if len(set(v)) != len(v):
            raise ValueError("conditions repeat")
        return v


class HumanConfig(_Strict):
    study: str  # a built-in study name (gss_spending, anes_partytherms, atp_w34...) or a YAML path
    overrides: dict[str, Any] = Field(default_factory=dict)  # e.g. {source: {path: my.sav}}
    sample: int | None = Field(None, gt=1)  # random subsample of respondents (seeded)
    lower_bound_splits: int = Field(100, gt=0)
    subgroups: list[str] = Field(default_factory=list)  # traits to report per subgroup


class QuestionnaireConfig(_Strict):
    order: Literal["random", "fixed"] = "random"  # one seeded order for everyone, or as listed
    series: bool = True  # keep previous answers in the context ("keeping in mind your previous answers")
    questions: list[str] | None = None  # subset of question ids (default: all)


class ScenarioConfig(_Strict):
    name: str
    scenario: str  # module in scenarios/
    description: str = ""
    seed: int = 0
    output: str = "runs"
    store: str = "personae.db"
    engine: EngineConfig = EngineConfig()
    population: PopulationConfig = PopulationConfig()
    human: HumanConfig | None = None
    matching: list[Literal["greedy", "max_weight", "random"]] = ["greedy"]
    questionnaire: QuestionnaireConfig = QuestionnaireConfig()
    # Scenario-specific settings (e.g. consensus rounds), validated by the scenario.
    options: dict[str, Any] = Field(default_factory=dict)
    # Values to sweep: {"seed": [0, 1], "population.conditions": [[qa], [bio]]}
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    def run_id(self) -> str:
        """Deterministic: the same resolved configuration is the same run, so
        starting it again resumes it."""
        blob = yaml.safe_dump(self.model_dump(exclude={"output", "store", "sweep"}), sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _field(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "literal_error":
        return msg.replace("Input should be", "expected")
    got = err.get("input")
    got = f", got {got!r}" if got is not None and not isinstance(got, (dict, list)) else ""
    return msg.replace("Input should be", "expected").replace("Value error, ", "") + got


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected path.to.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: expected path.to.key=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict, path: list[str], value: Any, label: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{label}: --set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a section")
        node = nxt
    node[path[-1]] = value


def load_config(path: str | Path, overrides: list[str] | None = None, model: type[BaseModel] | None = None):
    """Read a YAML file, apply ``--set`` overrides, validate against ``model``
    (default: a scenario); every error is one line naming file and field."""
    path = Path(path)
    label = str(path)
    if not path.exists():
        raise ConfigError(f"{label}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{label}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of settings at the top level")
    for text in overrides or []:
        keys, value = parse_override(text)
        apply_override(data, keys, value, label)
    return validate_config(data, label, model)


def validate_config(data: dict, label: str, model: type[BaseModel] | None = None):
    try:
        return (model or ScenarioConfig).model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{label}: {_field(err['loc'])}: {_explain(err)}{more}") from None
