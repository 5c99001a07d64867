"""Scenario YAML: the one file that defines a study, validated with pydantic.

Every error is reported as one line naming the file, the field and what was
expected, e.g. ``scenarios/x.yaml: population.size: expected an integer > 0, got 'ten'``.
Command-line overrides (``--set population.size=20``) are applied to the raw
YAML before validation, so they are checked the same way.
"""
from __future__ import annotations

import difflib
import hashlib
import re
import warnings
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from agents.backstories import GenerationParams
from agents.llm.factory import EngineConfig
from core.config import StrictModel
from core.errors import PersonaeError, validation_line
from core.seeds import derive_seed


class ConfigError(PersonaeError, ValueError):
    """A bad scenario file or override; the message is a single line."""


class ConfigWarning(UserWarning):
    """A scenario that loads but does something the file may not say (see :meth:`ScenarioConfig.notes`)."""


# Built-in study definitions, found on disk (simulation must not import analysis).
STUDIES_DIR = Path(__file__).resolve().parent.parent / "analysis" / "studies"
Condition = Literal["anthology", "interview", "generative_agent", "qa", "bio", "portray", "anthology_dp", "imported"]
MATCHINGS = ("greedy", "max_weight", "random")
# Conditions that build one persona per sampled respondent, whatever population.size says.
PER_RESPONDENT = ("qa", "bio", "portray", "anthology_dp")


def control(label: str, widget: str, **extra) -> dict:
    """A field's control on the browser page (``Field(json_schema_extra=control(...))``):
    the page builds its controls from the fields that carry one (Mesa's "the controls
    are the model's parameters"), so a new option needs no page code."""
    return {"control": {"label": label, "type": widget, **extra}}


class BackstoryConfig(StrictModel):
    max_tokens: int = Field(GenerationParams.max_tokens, gt=0)  # one default: agents.backstories.GenerationParams
    temperature: float = Field(1.0, ge=0)
    citizenship_filter: bool = False
    max_attempts: int = Field(3, gt=0)
    critic: bool = True  # the six per-answer format checks (interview)
    interview_questions: int = Field(10, ge=1, le=10)
    # Interview length: ~2,500 words over ten questions by default (the talk), or
    # explicit per-answer token budgets (the last one repeats).
    interview_words: int = Field(2500, gt=0)
    answer_tokens: list[int] | None = None
    # Consistency critic over each whole transcript: rounds of critique and
    # revision (0 = off) and the P(contradiction) above which an answer is flagged.
    consistency_rounds: int = Field(1, ge=0)
    consistency_threshold: float = Field(0.5, ge=0, le=1)
    consistency_max_flags: int = Field(3, gt=0)  # answers flagged per transcript and round, most probable first
    # Anthology's prompt: "cued" (the public code's) or "plain" ("Tell me about yourself.", the blog and talk).
    anthology_prompt: Literal["cued", "plain"] = "cued"

    @field_validator("answer_tokens")
    @classmethod
    def _positive(cls, v):
        if v is not None and (not v or any(b <= 0 for b in v)):
            raise ValueError("expected a non-empty list of token budgets > 0")
        return v

    def params(self) -> GenerationParams:
        d = self.model_dump()
        d["answer_tokens"] = tuple(d["answer_tokens"]) if d["answer_tokens"] else None
        return GenerationParams(**d)


class GenerativeAgentConfig(StrictModel):
    """The Generative Agent baseline: expert reflections over the ``source``
    condition's backstories, chain-of-thought before each answer."""

    source: Literal["interview", "anthology"] = "interview"
    # Park et al. 2024's four experts (agents.generative_agent.PARK2024_EXPERTS); sociologist also available.
    experts: list[Literal["psychologist", "behavioral_economist", "political_scientist", "sociologist", "demographer"]] = [
        "psychologist", "behavioral_economist", "political_scientist", "demographer"]
    reflection_tokens: int = Field(96, gt=0)
    reasoning_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.7, ge=0)


class PopulationConfig(StrictModel):
    size: int = Field(8, gt=0, json_schema_extra=control("Population size", "SliderInt", min=1, max=64, step=1))  # personas generated per generated condition
    # Or: personas generated per matched human (H1, quantity); overrides size.
    per_human: int | None = Field(None, gt=0)
    # Conditioning methods compared side by side: anthology, interview ("ours":
    # long interviews + consistency critic), generative_agent (generated
    # backstories, matched to humans), qa, bio, portray, anthology_dp (one
    # persona per human from the human's demographics), imported (a JSONL bank).
    conditions: list[Condition] = Field(["anthology"], json_schema_extra=control("Conditioning method", "Select"))
    import_path: str | None = None  # JSONL of backstories for the 'imported' condition
    backstories: BackstoryConfig = BackstoryConfig()
    generative_agent: GenerativeAgentConfig = GenerativeAgentConfig()
    demographics: Literal["probs", "sample"] = "probs"
    # Personas (or groups) per engine batch and store commit in every phase:
    # memory grows with it, not with the population; a kill loses one chunk at most.
    # Results do not depend on it (every request is seeded and cached on its own).
    chunk: int = Field(256, gt=0)

    @field_validator("conditions")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("expected at least one condition")
        if len(set(v)) != len(v):
            raise ValueError("conditions repeat")
        return v


class HumanConfig(StrictModel):
    study: str  # a built-in study name (gss_spending, anes_partytherms, atp_w34...) or a YAML path
    overrides: dict[str, Any] = Field(default_factory=dict)  # e.g. {source: {path: my.sav}}
    sample: int | None = Field(None, gt=1)  # random subsample of respondents (seeded)
    lower_bound_splits: int = Field(100, gt=0)
    # Traits to report per subgroup, or merges of a trait's options into named groups:
    # {race: {White: [White non-Hispanic], Other: [Black non-Hispanic, Hispanic, Other]}}
    # None (not given): race, age and party where the study has them; [] : no subgroups.
    subgroups: list[str] | dict[str, dict[str, list[str]]] | None = None


class QuestionnaireConfig(StrictModel):
    order: Literal["random", "fixed"] = "random"  # one seeded order for everyone, or as listed
    series: bool = True  # keep previous answers in the context ("keeping in mind your previous answers")
    questions: list[str] | None = None  # subset of question ids (default: all)


class AnalysisConfig(StrictModel):
    """Which estimator produces every figure; every report names it.

    ``positions``: WD on option positions rescaled to [0, 1] (OpinionQA, SubPOP)
    or on raw positions 1..K (the Anthology code and its published lower
    bounds). ``persona_answers``: each persona's exact option probabilities, or
    the frequencies of ``samples`` answers drawn from them per persona and item
    (seeded; the papers sample answers at temperature 1, which is a draw from
    the same distribution). ``position_bias_personas``: personas per condition
    asked every item in forward and reversed option order for the position-bias
    diagnostic (0 = skip; costs 2 engine calls per persona and item).
    """

    positions: Literal["normalized", "raw"] = "normalized"
    persona_answers: Literal["probabilities", "samples"] = "probabilities"
    samples: int = Field(1, gt=0)
    position_bias_personas: int = Field(3, ge=0)


class ScenarioConfig(StrictModel):
    name: str
    scenario: str  # module in scenarios/
    description: str = ""
    seed: int = Field(0, json_schema_extra=control("Seed", "SliderInt", min=0, max=99, step=1))
    # How the seed is split between the run's own random draws (draw_seed): 2 gives each
    # draw its own stream; 1 is the scheme of runs stored before 2 existed (every draw
    # seeded with `seed` itself), kept so that their replays reproduce their reports.
    draws: Literal[1, 2] = 2
    output: str = "runs"
    store: str = "personae.db"
    engine: EngineConfig = EngineConfig()
    population: PopulationConfig = PopulationConfig()
    human: HumanConfig | None = None
    matching: list[Literal["greedy", "max_weight", "random"]] = ["greedy"]  # MATCHINGS
    questionnaire: QuestionnaireConfig = QuestionnaireConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    # Scenario-specific settings (e.g. consensus rounds), validated by the scenario.
    options: dict[str, Any] = Field(default_factory=dict)
    # Values to sweep: {"seed": [0, 1], "population.conditions": [[qa], [bio]]}
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    # A published table's rows, in its order: the paper's label -> the condition this
    # run reports under it ({Ours: interview (greedy)}); reports print the label
    # beside the condition. Presentation only: not part of the run id.
    rows: dict[str, str] = Field(default_factory=dict)

    def reported_labels(self) -> list[str]:
        """Every condition label a run of this file can report (scenarios.population.Population.label)."""
        out: list[str] = []
        for c in self.population.conditions:
            out += [c] if c in PER_RESPONDENT else [f"{c} ({m})" for m in [*self.matching, "none"]]
        return out

    def rows_not_run(self) -> list[str]:
        """The paper's rows whose condition this run does not report (narrowed by ``--set``, say)."""
        labels = self.reported_labels()
        return [row for row, label in self.rows.items() if label not in labels]

    @field_validator("rows")
    @classmethod
    def _rows_name_conditions(cls, rows: dict[str, str]) -> dict[str, str]:
        # Any label a run could report, not only this file's conditions: narrowing
        # population.conditions with --set leaves the other rows out of the report.
        known = list(PER_RESPONDENT) + [f"{c} ({m})" for c in get_args(Condition) if c not in PER_RESPONDENT for m in (*MATCHINGS, "none")]
        for row, label in rows.items():
            if label not in known:
                hint = difflib.get_close_matches(label, known, n=1)
                raise ValueError(f"row '{row}' names '{label}', not a condition label{f' (did you mean {hint[0]!r}?)' if hint else ''}; expected 'condition (matching)', e.g. 'interview (greedy)', or one of {', '.join(PER_RESPONDENT)}")
        return rows

    def draw_seed(self, draw: str) -> int:
        """The seed of one named random draw of the run ("human sample", "question
        order"): ``derive_seed(seed, draw)``, so draws do not share a stream and
        adding one leaves the others unchanged (``draws: 1``: ``seed`` itself)."""
        return self.seed if self.draws == 1 else derive_seed(self.seed, draw)

    def row_labels(self) -> dict[str, str]:
        """Condition label -> the paper's row label (``rows`` read backwards)."""
        return {label: row for row, label in self.rows.items()}

    def run_id(self) -> str:
        """Deterministic: the same resolved configuration is the same run, so
        starting it again resumes it. The engines' serving settings (endpoints,
        concurrency, ...) are not part of it: a server that moved serves the same run."""
        # population.chunk changes batching only, not results: the same run at another chunk size;
        # rows only labels the report.
        data = self.model_dump(exclude={"output": True, "store": True, "sweep": True, "rows": True, "population": {"chunk"}})
        # At their defaults, not left out: configurations that set none keep the ids they had.
        data = EngineConfig.unserved(data)
        if data.get("human") is not None:
            # Hashed as before human.subgroups could be left unset (then []), so existing runs
            # keep their ids; an explicit "no subgroups" gets its own.
            sg = data["human"]["subgroups"]
            data["human"]["subgroups"] = [] if sg is None else ("none" if not sg else sg)
        blob = yaml.safe_dump(data, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def notes(self) -> list[str]:
        """Settings that load but do less than they seem to, one line each (the report repeats them).

        Computed from the values alone, so a replay (validated from the store) says the same.
        """
        out = []
        conditions = self.population.conditions
        # Only when no condition uses the size: beside a generated condition (anthology, ...) it
        # is that condition's size, as the README says, and a note on every such run would be noise.
        if self.human is not None and all(c in PER_RESPONDENT for c in conditions) and self.population.size != PopulationConfig.model_fields["size"].default:
            out.append(
                f"population.size: {self.population.size} is not used: {', '.join(conditions)} build one persona per "
                "sampled respondent (human.sample sets their number)"
            )
        return out


# A key segment: bare (no . [ ] quotes =), or quoted to hold dots: "a.b", ["a.b"], ['a.b'].
_KEY_SEGMENT = re.compile(r"""\["([^"]*)"\]|\['([^']*)'\]|"([^"]*)"|'([^']*)'|([^.\[\]"'=]+)""")


def _split_key(key: str) -> list[str] | None:
    """``a.b["c.d"].e`` -> ``[a, b, c.d, e]``; None if malformed (hand-written: no library parses this)."""
    parts, pos, need_dot = [], 0, False
    while pos < len(key):
        if need_dot and key[pos] == ".":
            pos, need_dot = pos + 1, False
            continue
        m = _KEY_SEGMENT.match(key, pos)
        if m is None or (need_dot and not key.startswith("[", pos)):
            return None
        value = next(g for g in m.groups() if g is not None)
        if value == "":
            return None
        parts.append(value)
        pos, need_dot = m.end(), True
    return parts if need_dot else None


def _shown(text: str) -> str:
    """The override as typed, with control characters escaped (an error message stays one line)."""
    return text if text.isprintable() else repr(text)[1:-1]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``path.to.key=value``; a name holding dots is quoted: ``human.overrides.filters["political.knowledge"]=2``."""
    expected = "expected path.to.key=value (quote a name with dots: a.b[\"c.d\"]=value)"
    quote, cut = None, -1
    for i, ch in enumerate(text):  # the first "=" outside quotes ends the key
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            cut = i
            break
    if cut < 0:
        raise ConfigError(f"--set {_shown(text)}: {expected}")
    key, raw = text[:cut], text[cut + 1 :]
    parts = _split_key(key)
    if not parts:
        raise ConfigError(f"--set {_shown(text)}: {expected}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict, path: list[str], value: Any, label: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(_shown(f"{label}: --set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a section"))
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
    # Top-level x-* keys are ignored: a place for YAML anchors (x-common: &common ...).
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    study_from_set = False
    for text in overrides or []:
        keys, value = parse_override(text)
        apply_override(data, keys, value, label)
        study_from_set = study_from_set or keys == ["human", "study"]
    cfg = validate_config(data, label, model)
    if isinstance(cfg, ScenarioConfig):
        if cfg.human is not None:
            cfg.human.study = resolve_study(cfg.human.study, path, label, from_set=study_from_set)
        for note in cfg.notes():
            warnings.warn(f"{label}: {note}", ConfigWarning, stacklevel=2)
    return cfg


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):  # a name no file system accepts (NUL, too long): not a file
        return False


def resolve_study(study: str, scenario: Path, label: str, *, from_set: bool = False) -> str:
    """``human.study``: a built-in name, or a study YAML path -- relative to the scenario
    file's folder, then to the working directory (a ``--set`` value: the other way round).
    Returns the name, or the path that exists; an error says where it looked."""
    builtins = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
    try:
        p = Path(study).expanduser()
    except RuntimeError:  # "~someone" with no such user: the name as written
        p = Path(study)
    path_like = p.suffix in (".yaml", ".yml") or "/" in study or "\\" in study
    if not path_like and study in builtins:
        return study
    candidates = [p] if p.is_absolute() else ([p, scenario.parent / p] if from_set else [scenario.parent / p, p])
    for c in candidates:
        if _is_file(c):
            return study if c == p else str(c)
    looked = " and ".join(dict.fromkeys(str(c.absolute()) for c in candidates))
    if path_like:
        raise ConfigError(_shown(
            f"{label}: human.study: no study file '{study}' (looked in {looked}; a relative path is read from the scenario file's folder, then the working directory)"
        ))
    close = difflib.get_close_matches(study, builtins, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(_shown(f"{label}: human.study: '{study}' is not a built-in study ({hint}built-ins: {', '.join(builtins)}) nor a study file (looked in {looked})"))


def stored_config(data: dict, label: str) -> ScenarioConfig:
    """The configuration of a run read back from the store (replays): one stored
    before ``draws`` existed drew everything from ``seed`` (``draws: 1``)."""
    return validate_config({"draws": 1, **data}, label)


def validate_config(data: dict, label: str, model: type[BaseModel] | None = None):
    try:
        return (model or ScenarioConfig).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_shown(validation_line(label, exc))) from None
