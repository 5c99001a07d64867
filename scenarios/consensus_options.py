"""The consensus scenario's options (``options:`` of a consensus YAML), typed,
and everything a run needs at its size, checked before any LLM call.

:class:`ConsensusOptions` is the one way the scenario reads its options;
:func:`preflight` stops a run that cannot finish (too few personas or debate
questions, no trained payoff model, a conditioning set no record can fill)
with one line naming the field, before the store is opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from agents.llm.factory import EngineConfig
from core.config import StrictModel
from core.errors import validation_line
from mechanisms.budget import GenerationBudget
from mechanisms.episode import QUESTIONS_FILE, load_questions
from mechanisms.groups import check_record_parts
from mechanisms.mediators import HabermasMediator, LLMMediator, OpinionMediator
from mechanisms.representatives import ConditioningError
from mechanisms.representatives_phase import finetuned_label
from scenarios.config import ConfigError, ScenarioConfig, control


class ConsensusOptions(StrictModel):
    groups: int = Field(2, gt=0, json_schema_extra=control("Groups", "SliderInt", min=1, max=8, step=1))
    group_size: int = Field(3, ge=2, le=8, json_schema_extra=control("Group size", "SliderInt", min=2, max=8, step=1))
    rounds: int = Field(1, ge=0, json_schema_extra=control("Critique rounds", "SliderInt", min=0, max=4, step=1))
    mediator: Literal["habermas", "llm", "opinion"] = Field("habermas", json_schema_extra=control("Mediator", "Select"))
    candidates: int = Field(4, ge=1, le=16)
    history: int = Field(1, ge=0)  # other questions debated first, for representatives' records
    representatives: list[str] = ["DOCP"]  # conditioning subsets: letters of DOCP ("" = none)
    # What representatives do instead of the participant: the critique only by
    # default (the paper's setting); opinion, ranking and position are opt-in.
    acts: list[Literal["critique", "opinion", "ranking", "position"]] = ["critique"]
    rollouts: int = Field(2, ge=1)  # seeded rollouts per episode for the expected-payoff gap and its CI
    ranking: Literal["rating", "choice", "cot"] = "rating"  # how participants rank candidates (HM: cot)
    # Who ranks: "words" = an assistant from each participant's words only (question,
    # opinion, statement under revision, critique; the Habermas Machine's ranking
    # model), "persona" = each participant as itself (its backstory in the prompt).
    # None: words when representatives are evaluated, else persona.
    ranker: Literal["words", "persona"] | None = None
    retries: int = Field(8, ge=0)  # re-generations of an unusable candidate, and re-asks of an unparsed CoT ranking (HM: 8)
    null_row: bool = True  # the null row: each original re-played as its own representative under other seeds
    # Fine-tuned representatives beside the prompted ones: conditioning set -> the
    # engine of that set's adapter, in process ({kind: transformers, model: embedded,
    # lora: runs/represent_demo/adapters/OC}) or served ({kind: openai, model: rep-OC,
    # endpoints: [...]}); reported as "OC (fine-tuned)".
    finetuned: dict[str, EngineConfig] = {}
    judge: EngineConfig | None = None  # consensus autorater (eq. 22); None = the scenario's model, with a warning
    # Payoffs of the value-equivalence gap: the originals' own agreement
    # ratings, or a trained payoff model's scores (mechanisms.payoff_model).
    payoff: Literal["self_rating", "model"] = "self_rating"
    payoff_model: str | None = None  # folder of a trained payoff model (python run.py represent payoff ...)
    budget: GenerationBudget = GenerationBudget()  # tokens per opinion, critique, statement
    # Debate questions (JSON list of Habermas Machine questions); None = the shipped
    # 200-question subset. Every group needs history + 1 of them, none shared.
    questions: str | None = None

    @field_validator("representatives")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"conditioning set(s) {twice} listed twice")
        return v

    @property
    def evaluated(self) -> bool:
        """Whether representatives are evaluated at all."""
        return bool(self.representatives or self.finetuned)

    @property
    def sets(self) -> list[str]:
        """Row labels of the evaluated sets: prompted, then fine-tuned (null row apart)."""
        return [*self.representatives, *(finetuned_label(s) for s in self.finetuned)]

    @property
    def surveyed(self) -> bool:
        """Whether a conditioning set holds D (each persona's surveyed demographics)."""
        return any("D" in s for s in [*self.representatives, *self.finetuned])


def questions_path(o: ConsensusOptions) -> Path:
    """``options.questions`` as given, or (when that is not a file) relative to
    the project folder, so a preset's ``data/habermas/...`` works from anywhere."""
    if not o.questions:
        return QUESTIONS_FILE
    path = Path(o.questions)
    inside = QUESTIONS_FILE.parents[2] / path
    return inside if not path.is_file() and not path.is_absolute() and inside.is_file() else path


def resolved_ranker(o: ConsensusOptions) -> str:
    """``options.ranker``, or its default: words when representatives are evaluated."""
    return o.ranker or ("words" if o.evaluated else "persona")


def build_mediator(o: ConsensusOptions):
    """The mediator ``options`` describe (a fresh one per episode)."""
    if o.mediator == "habermas":
        return HabermasMediator(num_candidates=o.candidates, max_tokens=o.budget.statement, ranking=o.ranking, retries=o.retries,
                                cot_retries=o.retries, ranker=resolved_ranker(o))
    if o.mediator == "llm":
        return LLMMediator(max_tokens=o.budget.statement, retries=o.retries)
    return OpinionMediator()


def options_of(cfg: ScenarioConfig) -> ConsensusOptions:
    """The configuration's options, typed (one ConfigError line when invalid)."""
    try:
        return ConsensusOptions.model_validate(cfg.options)
    except ValidationError as exc:
        raise ConfigError(validation_line("options", exc)) from None


def preflight(cfg: ScenarioConfig) -> list[EngineConfig]:
    """Everything the run needs at its size, checked before any LLM call
    (one ConfigError line naming the field or file); returns the further
    engines it will call (the judge) for the runner's reachability check."""
    o = options_of(cfg)
    if cfg.population.size < o.groups * o.group_size:
        raise ConfigError(f"population.size: {cfg.population.size} personas cannot fill {o.groups} groups of {o.group_size}")
    path, field = questions_path(o), "options.questions" if o.questions else f"options.questions (default {QUESTIONS_FILE.name})"
    if not path.is_file():
        raise ConfigError(f"{field}: {path}: file not found (expected a JSON list of debate questions)")
    try:
        have = len(load_questions(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{field}: {path}: not a JSON list of debate questions ({type(exc).__name__}: {exc})") from None
    if have < (want := o.groups * (o.history + 1)):
        raise ConfigError(f"{field}: {path} holds {have} debate questions; {o.groups} groups x (history {o.history} + 1) need {want}, "
                          "none shared (set options.questions to a larger file, e.g. data/habermas/questions_1000.json)")
    if o.payoff == "model":
        from mechanisms.payoff_model import RECORD

        if not o.payoff_model:
            raise ConfigError("options.payoff_model: required when options.payoff is 'model' (the folder of a trained payoff model)")
        if not ((folder := Path(o.payoff_model)) / "adapter_config.json").is_file() or not (folder / RECORD).is_file():
            raise ConfigError(f"options.payoff_model: {folder}: no trained payoff model (expected adapter_config.json and {RECORD}; "
                              "run 'python run.py represent payoff CONFIG')")
    try:
        for source, sets in (("options.representatives", o.representatives), ("options.finetuned", list(o.finetuned))):
            check_record_parts(sets, o.history, o.rounds, source)
    except ConditioningError as exc:
        raise ConfigError(str(exc)) from None
    return ([o.judge] if o.judge is not None and o.evaluated else []) + list(o.finetuned.values())
