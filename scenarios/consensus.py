"""Consensus and digital representatives as a Mesa model (one step per phase).

Groups of personas debate questions from the Habermas Machine corpus with a
mediator. Each model step runs the next phase (opinions, draft, critiques,
revision, ..., payoff) of every group's episode. Before the main question each
group debates ``options.history`` other questions: those episodes form every
participant's record (opinions, critiques, positions), from which digital
representatives are conditioned (any subset of D/O/C/P; D = each persona's
surveyed demographic profile). After the last step the report gives the mean
and minimum agreement per round, each participant's position before and after
deliberation with the group's disagreement, and the representativity:
representatives (by default critiquing only, the paper's setting) substitute
one participant and all of them, per conditioning subset, over ``rollouts``
seeded rollouts -- the signed and absolute discrepancy in expected payoff
(eq. 21) and the consensus autorater's win rate (eq. 22), pooled over groups
with cluster-bootstrap intervals beside the null row (each original re-played
as its own representative under other seeds), by
:mod:`mechanisms.value_equivalence`. With representatives the mediator's
candidates are ranked from what participants said only (``ranker: words``, the
Habermas Machine's ranking model); ``options.finetuned`` adds sets played by
fine-tuned representatives (their adapters' engines).

The representatives' episodes are Mesa steps too: after the main phases, one
step per (rollout, conditioning subset) plays every group's substituted
episodes (and the originals' rollout) together, their engine calls merged into
large batches (:mod:`mechanisms.lockstep`); each step is logged like the
others, reports done/total episodes and the time left, and shows the
representatives' statements and payoff gaps on the browser page. Payoffs are
the originals' self-ratings (default) or a trained payoff model's scores
(``payoff: model``, :mod:`mechanisms.payoff_model`). ``evaluate()`` only
assembles the tables.

Every engine request (payoff model included) goes through the store with
seeds fixed by (seed, rollout, question, act, slot), so a rerun, a resume
after a kill anywhere -- also inside the representatives phase -- and a replay
make no repeated LLM call; every utterance is in the episode log.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import mesa
import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator

from agents import demographics as demo
from agents.llm.factory import EngineConfig, cached_engine
from agents.persona import PersonaAgent
from core.config import StrictModel
from core.errors import PersonaeError, validation_line
from core.seeds import derive_seed
from core.store import Store
from mechanisms.autorater import ConsensusPair, consensus_win_rate
from mechanisms.budget import GenerationBudget
from mechanisms.episode import QUESTIONS_FILE, Episode, EpisodeConfig, EpisodeResult, Participant, load_questions, run_episode
from mechanisms.lockstep import run_together
from mechanisms.mediators import HabermasMediator, LLMMediator, OpinionMediator
from mechanisms.representatives import (
    ConditioningError,
    ParticipantRecord,
    Substitution,
    bootstrap_seed,
    check_subset,
    expected_payoff_gap,
    most_probable_profile,
    records_from_episodes,
    report_from_rollouts,
    require_parts,
    rollout_config,
    substitutions,
)
from mechanisms.value_equivalence import NULL_SET, PayoffSample, pooled_table
from scenarios.config import ConfigError, ScenarioConfig

from . import population as pop
from .contract import GroupView, RepresentativeView, ScenarioModel, ScenarioReport
from .items import Item


class ConsensusOptions(StrictModel):
    groups: int = Field(2, gt=0)
    group_size: int = Field(3, ge=2, le=8)
    rounds: int = Field(1, ge=0)
    mediator: Literal["habermas", "llm", "opinion"] = "habermas"
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

    @property
    def evaluated(self) -> bool:
        """Whether representatives are evaluated at all."""
        return bool(self.representatives or self.finetuned)

    @property
    def sets(self) -> list[str]:
        """Row labels of the evaluated sets: prompted, then fine-tuned (null row apart)."""
        return [*self.representatives, *(finetuned_label(s) for s in self.finetuned)]
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


def finetuned_label(subset: str) -> str:
    return f"{subset or 'none'} (fine-tuned)"


def questions_path(o: ConsensusOptions) -> Path:
    """``options.questions`` as given, or (when that is not a file) relative to
    the project folder, so a preset's ``data/habermas/...`` works from anywhere."""
    if not o.questions:
        return QUESTIONS_FILE
    path = Path(o.questions)
    inside = QUESTIONS_FILE.parents[2] / path
    return inside if not path.is_file() and not path.is_absolute() and inside.is_file() else path


# How the report names each payoff source (as mechanisms.finetuned_representatives.evaluation does).
PAYOFF_SOURCES = {"self_rating": "self-rating", "model": "payoff model"}


@dataclass(frozen=True)
class RepEpisode:
    """One episode of the representatives phase: group ``group``'s rollout
    ``rollout``, with ``substitution`` (None: the originals themselves)."""

    group: int
    rollout: int
    substitution: Substitution | None = None

    def to_json(self) -> dict:
        sub = self.substitution
        return {"group": self.group, "rollout": self.rollout, "subset": None if sub is None else sub.subset or "none",
                "mode": "originals" if sub is None else sub.mode, "substituted": [] if sub is None else sub.slots}


@dataclass
class RepOutcome:
    """What the report needs of a representatives-phase episode (the rest is in the episode log)."""

    statement: str  # the final statement
    opinions: tuple[str, ...]
    self_ratings: np.ndarray  # the originals' agreement with the final statement (1-7)
    model_scores: np.ndarray | None = None  # the payoff model's scores of it per original (1-7)
    win: float | None = None  # the judge's preference for it over the originals' statement of the same rollout (eq. 22)
    fallbacks: dict[str, int] | None = None  # mediation_fallbacks of the episode

    def to_json(self) -> dict:
        return {"statement": self.statement, "self_ratings": self.self_ratings.round(6).tolist(),
                "model_scores": None if self.model_scores is None else self.model_scores.round(6).tolist(), "win": self.win,
                "fallbacks": self.fallbacks}


def surveyed_profiles(engine, store: Store, people: list[dict], method: str = "probs", progress=None, *, chunk: int = demo.CHUNK) -> dict[str, dict[str, str]]:
    """D for each persona: its surveyed demographic profile (the Pew ATP W92
    questions, the analysis layer's default survey), the most probable option
    per trait; answers are stored, so a rerun asks nothing again."""
    traits = demo.default_traits()
    cb = (lambda done, total: progress("demographic survey (D)", done, total)) if progress else None
    surveyed = demo.survey(engine, store, people, traits, "consensus-ATP_W92", method=method, chunk=chunk, progress=cb)
    options = {t.trait: [*t.options, demo.REFUSAL] for t in traits}
    return {p["persona_id"]: most_probable_profile(surveyed[p["persona_id"]], options, demo.REFUSAL) for p in people}


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


def mediation_fallbacks(results) -> dict[str, int]:
    """Counts over episodes' mediations: statements that are no ranked candidate
    (every candidate unusable after the retries) and participants' CoT rankings
    replaced by ratings (unparsed after the retries)."""
    meds = [m for res in results for m in res.mediations]
    return {"mediations": len(meds), "statement_fallbacks": sum(bool(m.fallback) for m in meds),
            "ranking_fallbacks": sum(len(m.ranking_fallbacks) for m in meds)}


class ConsensusModel(ScenarioModel):
    title = "Consensus with a mediator, and digital representatives"
    kind = "deliberation"

    @classmethod
    def options_of(cls, cfg: ScenarioConfig) -> ConsensusOptions:
        try:
            return ConsensusOptions.model_validate(cfg.options)
        except ValidationError as exc:
            raise ConfigError(validation_line("options", exc)) from None

    @classmethod
    def preflight(cls, cfg: ScenarioConfig) -> list[EngineConfig]:
        """Everything the run needs at its size, checked before any LLM call
        (one ConfigError line naming the field or file); returns the further
        engines it will call (the judge) for the runner's reachability check."""
        o = cls.options_of(cfg)
        need = o.groups * o.group_size
        if cfg.population.size < need:
            raise ConfigError(f"population.size: {cfg.population.size} personas cannot fill {o.groups} groups of {o.group_size}")
        path = questions_path(o)
        field = "options.questions" if o.questions else f"options.questions (default {QUESTIONS_FILE.name})"
        if not path.is_file():
            raise ConfigError(f"{field}: {path}: file not found (expected a JSON list of debate questions)")
        try:
            have = len(load_questions(path))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{field}: {path}: not a JSON list of debate questions ({type(exc).__name__}: {exc})") from None
        want = o.groups * (o.history + 1)
        if have < want:
            raise ConfigError(
                f"{field}: {path} holds {have} debate questions; {o.groups} groups x (history {o.history} + 1) need {want}, "
                "none shared (set options.questions to a larger file, e.g. data/habermas/questions_1000.json)"
            )
        if o.payoff == "model":
            if not o.payoff_model:
                raise ConfigError("options.payoff_model: required when options.payoff is 'model' (the folder of a trained payoff model)")
            from mechanisms.payoff_model import RECORD

            folder = Path(o.payoff_model)
            if not (folder / "adapter_config.json").is_file() or not (folder / RECORD).is_file():
                raise ConfigError(f"options.payoff_model: {folder}: no trained payoff model (expected adapter_config.json and {RECORD}; "
                                  "run 'python run.py represent payoff CONFIG')")
        for subset in o.finetuned:
            try:
                check_subset(subset)
            except ConditioningError as exc:
                raise ConfigError(f"options.finetuned: {exc}") from None
        return ([o.judge] if o.judge is not None and o.evaluated else []) + list(o.finetuned.values())

    def __init__(self, cfg: ScenarioConfig, engine, store: Store, run_id: str, *, progress=None) -> None:
        super().__init__(cfg, engine, store, run_id, progress=progress)
        self.opts = self.options_of(cfg)
        self.preflight(cfg)  # also when built outside the runner (tests, the browser page)
        need = self.opts.groups * self.opts.group_size
        self.payoff_model = self.load_payoff_model()  # before any LLM work: a wrong path fails at once
        self.populations = pop.build(cfg.model_copy(update={"human": None}), engine, store, None, progress=progress)
        people = self.populations[0].personas[:need]
        self.agent_list = [
            PersonaAgent(self, p, seed=cfg.seed, series=False, condition=self.populations[0].label, group=i // self.opts.group_size)
            for i, p in enumerate(people)
        ]
        per_group = self.opts.history + 1
        questions = load_questions(questions_path(self.opts), n=self.opts.groups * per_group, seed=cfg.seed)
        self.groups = []
        for g in range(self.opts.groups):
            members = self.agent_list[g * self.opts.group_size : (g + 1) * self.opts.group_size]
            qs = questions[g * per_group : (g + 1) * per_group]
            if len(qs) != per_group:  # preflight guarantees the supply; never a silently shorter history
                raise ConfigError(f"options.questions: group {g} gets {len(qs)} of its {per_group} debate questions")
            self.groups.append({"members": members, "history_questions": qs[:-1], "question": qs[-1]})
        self.episode_config = EpisodeConfig(
            rounds=self.opts.rounds,
            seed=cfg.seed,
            budget=self.opts.budget,
            represented_acts=tuple("rank" if a == "ranking" else a for a in self.opts.acts),
        )
        demographics = {}
        if any("D" in s for s in [*self.opts.representatives, *self.opts.finetuned]):
            demographics = surveyed_profiles(engine, store, people, cfg.population.demographics, progress, chunk=cfg.population.chunk)
        # Records for representatives: the history episodes, run in setup.
        self.records = {}
        self.history_results: list[tuple[int, object]] = []
        for g, grp in enumerate(self.groups):
            parts = self.participants(grp)
            done = [run_episode(engine, q, parts, self.mediator(), self.episode_config) for q in grp["history_questions"]]
            self.history_results += [(g, res) for res in done]
            self.records.update(records_from_episodes(done, demographics))
            for a in grp["members"]:  # no history: the record holds demographics only
                self.records.setdefault(a.persona_id, ParticipantRecord(a.persona_id, dict(demographics.get(a.persona_id, {}))))
        if self.opts.representatives:
            require_parts([self.records[a.persona_id] for a in self.agent_list], self.opts.representatives, "options.representatives")
        if self.opts.finetuned:
            require_parts([self.records[a.persona_id] for a in self.agent_list], list(self.opts.finetuned), "options.finetuned")
        self.episodes = [Episode(engine, grp["question"], self.participants(grp), self.mediator(), self.episode_config) for grp in self.groups]
        self.main_steps = len(self.episodes[0].phases)
        self.judge_engine, self.judge_alert = self.judge() if self.opts.evaluated else (None, "")
        replay = getattr(engine, "_factory", True) is None  # a replay engine answers from the store only
        self.ft_engines = {s: cached_engine(c, store, replay=replay) for s, c in self.opts.finetuned.items()}
        self.substitutions = {g: self.group_substitutions(grp) for g, grp in enumerate(self.groups)}
        self.rep_plan = self.representatives_plan()
        self.item_list = [Item(ph, ph, ()) for ph in self.episodes[0].phases] + [item for item, _ in self.rep_plan]
        self.statements: dict[int, list[str]] = {}
        self.agreement: dict[int, list[list[float]]] = {}
        self.rep_outcomes: dict[RepEpisode, RepOutcome] = {}
        self.rep_done = 0  # representatives-phase episodes played
        self._rep_clock: tuple[float, int] | None = None  # (start, episodes done then) in this process, for the time left
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "step": lambda m: m.step_index,
                "phase": lambda m: m.item_list[m.step_index - 1].id if m.step_index else "",
                "mean_agreement": lambda m: m.mean_agreement(),
                "representative_episodes": lambda m: m.rep_done,
            }
        )
        self.running = True

    # ------------------------------------------------------------ parts
    def mediator(self):
        return build_mediator(self.opts)

    @staticmethod
    def participants(grp) -> list[Participant]:
        return [Participant(a.persona_id, a.conditioning) for a in grp["members"]]

    def load_payoff_model(self):
        """The trained payoff model when ``options.payoff`` is "model" (its
        answers cached in the store), else None."""
        o = self.opts
        if o.payoff != "model":
            return None
        if not o.payoff_model:
            raise ConfigError("options.payoff_model: required when options.payoff is 'model' (the folder of a trained payoff model)")
        from mechanisms.payoff_model import load_payoff_model

        try:
            return load_payoff_model(o.payoff_model, store=self.store)
        except PersonaeError as exc:
            raise ConfigError(f"options.payoff_model: {exc}") from None

    @property
    def rep_sets(self) -> list[str]:
        """The conditioning sets played, then the null row (when on)."""
        o = self.opts
        return [*o.sets, *([NULL_SET] if o.null_row and o.evaluated else [])]

    def group_substitutions(self, grp) -> list[Substitution]:
        """A group's substituted episodes: prompted sets (and the null row), then
        each fine-tuned set, its representatives speaking through its engine."""
        o, q = self.opts, grp["question"]
        parts = self.participants(grp)
        records = [self.records[p.id] for p in parts]
        subs = substitutions(q, records, o.representatives, null=parts if o.null_row and o.evaluated else None)
        for subset, eng in self.ft_engines.items():
            subs += [replace(s, subset=finetuned_label(subset)) for s in substitutions(q, records, [subset], rep_engine=eng, tag="ft")]
        return subs

    def representatives_plan(self) -> list[tuple[Item, list[RepEpisode]]]:
        """The representatives phase as steps: per rollout, per conditioning
        subset, every group's substituted episodes (one slot at a time, all),
        plus -- in the rollout's first step -- the originals' own rollout
        (rollout 0 is the main episode)."""
        o = self.opts
        plan = []
        for r in range(o.rollouts):
            for k, subset in enumerate(self.rep_sets):
                eps = [RepEpisode(g, r) for g in range(o.groups)] if r and not k else []
                eps += [RepEpisode(g, r, sub) for g in range(o.groups) for sub in self.substitutions[g] if sub.subset == subset]
                name = subset or "none"
                about = "the originals as their own representatives (null row)" if subset == NULL_SET else f"representatives conditioned on {name}"
                plan.append((Item(f"representatives r{r + 1} {name}", f"rollout {r + 1}/{o.rollouts}, {about}: {len(eps)} episodes", ()), eps))
        return plan

    # ------------------------------------------------------------ stepping
    def step(self) -> None:
        if not self.running:
            return
        if self.step_index < self.main_steps:
            events = self.main_step()
        else:
            events = self.representatives_step(self.rep_plan[self.step_index - self.main_steps][1])
        if not self.store.readonly:  # a replay reads the logged run, it never writes
            self.store.log_events(self.run_id, self.step_index, events)
        self.step_index += 1
        self.datacollector.collect(self)
        if self.step_index >= len(self.item_list):
            self.running = False

    def main_step(self) -> list[dict]:
        """The next phase of every group's main episode."""
        events = []
        for g, ep in enumerate(self.episodes):
            for rec in ep.step():
                events.append({"kind": "utterance", "agent": rec.to_json().get("actor", ""), "payload": {"group": g, **rec.to_json()}})
            self.statements[g] = list(ep.statements)
            if ep.payoff is not None:
                self.agreement[g] = ep.payoff.agreement.round(6).tolist()
        return events

    def representatives_step(self, eps: list[RepEpisode]) -> list[dict]:
        """Play ``eps`` together (one merged engine batch per act), then judge
        their final statements (eq. 22) and, with a payoff model, score them."""
        total = self.representative_episodes()
        if self._rep_clock is None:
            self._rep_clock = (time.perf_counter(), self.rep_done)
            self._report_progress(total)

        def play(e: RepEpisode):
            grp = self.groups[e.group]
            stand_ins = e.substitution.stand_ins if e.substitution is not None else None
            config = rollout_config(self.episode_config, e.rollout)
            return lambda engine: Episode(engine, grp["question"], self.participants(grp), self.mediator(), config, stand_ins).run()

        # Episodes in chunks of about population.chunk participants: each chunk is
        # played (engine calls merged), judged and scored, its answers committed
        # by the engine cache, before the next chunk's prompts are built.
        step = max(1, self.cfg.population.chunk // self.opts.group_size)
        events = []
        # The originals' rollout 0 is the main episode: recorded (and scored) first,
        # as the baseline the chunks' substituted episodes are judged against.
        base = {}
        for g, ep in enumerate(self.episodes):
            if RepEpisode(g, 0) not in self.rep_outcomes:
                res = ep.result()
                base[RepEpisode(g, 0)] = RepOutcome(res.final_statement, tuple(res.opinions), res.final_payoffs.copy(), fallbacks=mediation_fallbacks([res]))
        if base:
            self._finish_outcomes(base)
        base_events = [{"kind": "representatives", "agent": "", "payload": {**e.to_json(), **out.to_json()}} for e, out in base.items()]
        for start in range(0, len(eps), step):
            part = eps[start : start + step]
            # A fine-tuned stand-in speaks through its own engine: such episodes run one
            # by one in this thread (the merged batches serve one engine from worker threads).
            alone = [e for e in part if e.substitution is not None and any(p.engine is not None for p in e.substitution.stand_ins.values())]
            merged = [e for e in part if e not in alone]
            results: dict[RepEpisode, EpisodeResult] = dict(zip(merged, run_together(self.engine, [play(e) for e in merged])))
            results.update({e: play(e)(self.engine) for e in alone})
            results = {e: results[e] for e in part}
            fresh = {e: RepOutcome(res.final_statement, tuple(res.opinions), res.final_payoffs.copy(), fallbacks=mediation_fallbacks([res]))
                     for e, res in results.items()}
            self._finish_outcomes(fresh)
            self.rep_done += len(part)
            self._report_progress(total)
            for e, res in results.items():
                about = e.to_json()
                events += [{"kind": "utterance", "agent": rec.to_json().get("actor", ""), "payload": {**about, **rec.to_json()}} for rec in res.log]
            events += [{"kind": "representatives", "agent": "", "payload": {**e.to_json(), **out.to_json()}} for e, out in fresh.items()]
        return events + base_events

    def _finish_outcomes(self, fresh: dict[RepEpisode, RepOutcome]) -> None:
        """Record outcomes, judge (eq. 22) and, with a payoff model, score them."""
        self.rep_outcomes.update(fresh)
        self._judge_statements(fresh)
        if self.payoff_model is not None:
            self._score_statements(fresh)

    def _report_progress(self, total: int) -> None:
        if not self.progress:
            return
        task = "representatives: episodes"
        start, before = self._rep_clock
        if self.rep_done > before:
            left = (time.perf_counter() - start) / (self.rep_done - before) * (total - self.rep_done)
            task += f" (~{int(left) // 60}m{int(left) % 60:02d}s left)"
        self.progress(task, self.rep_done, total)

    def _baseline(self, e: RepEpisode) -> RepOutcome:
        return self.rep_outcomes[RepEpisode(e.group, e.rollout)]

    def _judge_statements(self, fresh: dict[RepEpisode, RepOutcome]) -> None:
        """Consensus autorater (eq. 22), one batch: each substituted episode's
        final statement against the originals' in the same rollout."""
        subs = [e for e in fresh if e.substitution is not None]
        pairs = [
            ConsensusPair(self.groups[e.group]["question"].question, self._baseline(e).opinions, fresh[e].statement, self._baseline(e).statement)
            for e in subs
        ]
        for e, p in zip(subs, consensus_win_rate(self.judge_engine, pairs).per_pair if pairs else []):
            fresh[e].win = p

    def _score_statements(self, fresh: dict[RepEpisode, RepOutcome]) -> None:
        """The payoff model's score of each final statement per original
        participant (their opinion in that rollout, as at training), one batch."""
        from mechanisms.payoff_model import PayoffItem

        items = []
        for e in fresh:
            grp, base = self.groups[e.group], self._baseline(e)
            q = grp["question"].question
            items += [
                PayoffItem(q, fresh[e].statement, self.payoff_model.participant(base.opinions[i], self.records[p.id], q))
                for i, p in enumerate(self.participants(grp))
            ]
        scores, k = self.payoff_model.score(items), 0
        for out in fresh.values():
            n = len(out.self_ratings)
            out.model_scores, k = np.asarray(scores[k : k + n], dtype=float), k + n

    # ------------------------------------------------------------ views
    def mean_agreement(self) -> float | None:
        """Mean over groups of the final statement's mean agreement (1-7), once measured."""
        if any(e.payoff is None for e in self.episodes):
            return None
        return float(np.mean([e.payoff.mean[-1] for e in self.episodes]))

    def running_values(self) -> dict:
        return {"mean_agreement": self.mean_agreement}

    def live_distributions(self) -> dict[str, np.ndarray]:
        """Per group: each participant's agreement with the last statement, /7."""
        return {f"group {g}": np.asarray(self.agreement[g][-1]) / 7 for g in self.agreement}

    def group_views(self) -> list[GroupView]:
        phase = self.item_list[self.step_index].id if self.step_index < len(self.item_list) else "finished"
        return [
            GroupView(
                label=f"group {g}",
                question=ep.question.question,
                participants=tuple(p.id for p in ep.participants),
                statements=tuple(ep.statements),
                agreement=np.asarray(self.agreement[g], dtype=float) if g in self.agreement else None,
                phase=phase,
                representatives=self.representative_views(g),
            )
            for g, ep in enumerate(self.episodes)
        ]

    def _payoffs(self, out: RepOutcome, source: str | None = None) -> np.ndarray:
        return out.model_scores if (source or self.opts.payoff) == "model" else out.self_ratings

    def _rollouts(self, g: int, sub: Substitution, source: str | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(finished rollouts, originals' payoffs [r, i], payoffs with representatives [r, i])."""
        rs = [r for r in range(self.opts.rollouts) if RepEpisode(g, r, sub) in self.rep_outcomes]
        base = np.array([self._payoffs(self.rep_outcomes[RepEpisode(g, r)], source) for r in rs], dtype=float)
        with_reps = np.array([self._payoffs(self.rep_outcomes[RepEpisode(g, r, sub)], source) for r in rs], dtype=float)
        return rs, base, with_reps

    def representative_views(self, g: int) -> tuple[RepresentativeView, ...]:
        """Group g's substitutions played so far, their latest final statement
        and payoff gap over the rollouts so far."""
        ids = [a.persona_id for a in self.groups[g]["members"]]
        views = []
        for sub in self.substitutions[g]:
            rs, base, with_reps = self._rollouts(g, sub)
            if rs:
                gap = float(expected_payoff_gap(with_reps[:, sub.slots], base[:, sub.slots]))
                statement = self.rep_outcomes[RepEpisode(g, rs[-1], sub)].statement
                views.append(RepresentativeView(sub.subset or "none", sub.mode, tuple(ids[i] for i in sub.slots), len(rs), statement, gap))
        return tuple(views)

    # ------------------------------------------------------------ report
    def evaluate(self) -> ScenarioReport:
        rounds = []
        for g, (grp, ep) in enumerate(zip(self.groups, self.episodes)):
            res = ep.result()
            pay = res.payoff
            for r, statement in enumerate(res.statements):
                rounds.append(
                    {
                        "group": g,
                        "question": grp["question"].question,
                        "round": r,
                        "mean_agreement": float(pay.mean[r]),
                        "min_agreement": float(pay.min[r]),
                        "statement": statement.replace("\n", " "),
                    }
                )
        tables = {"consensus": pd.DataFrame(rounds), "positions": self.positions_table(), "mediation": self.mediation_table()}
        if self.opts.evaluated:
            tables["representativity"], tables["representativity_by_group"] = self.representativity_tables()
        acts = ", ".join(self.opts.acts)
        source = (
            f"payoffs = the trained payoff model's scores ({self.opts.payoff_model}) of the final statement for each original "
            "participant (their opinion in that rollout), 1-7; self_rating_gap = the same gap from the originals' own ratings"
            if self.opts.payoff == "model" else "payoffs = the original personas' self-ratings, 1-7"
        )
        notes = [
            "consensus: agreement of each participant with each round's statement on a 7-point Likert scale, read as an "
            "option distribution and reduced to its expected value (1-7); min = the worst-off participant.",
            "positions: each participant's agreement (1-7, expected value) with the question's affirming statement before "
            "deliberation and after it (recalling their opinion and the group's final statement); change = after - before; "
            "disagreement = mean |p_i - p_j| over pairs of participants.",
            f"representativity: representatives act in: {acts}" + (" (the paper's setting)" if self.opts.acts == ["critique"] else "")
            + f". d_i = E[final payoff of participant i with representatives] - E[... of the originals] ({source}), expectations "
            f"over {self.opts.rollouts} seeded rollouts; signed_gap = mean d_i, payoff_gap = mean |d_i| (eq. 21) over the "
            "substituted participants of all groups; ci = 95% expanded-percentile bootstrap resampling groups (the column "
            "interval says when a single group forces rollouts instead); null = each original re-played as its own "
            "representative under other seeds: null_gap is the estimator's noise floor (|d_i| > 0 from rollout noise alone), "
            "excess_over_null = payoff_gap - null_gap with its own cluster-bootstrap interval; one = each participant "
            "substituted alone, all = everyone; win_rate = the judge's preference for the representatives' final statement "
            "over the originals' (eq. 22; 0.5 = indistinguishable), averaged per group, then over groups. "
            "representativity_by_group: the same per group, ci over its rollouts.",
            self.ranking_note(),
        ]
        # Every episode (history and main) as training data for fine-tuned
        # representatives: python run.py represent ... with data.path = episodes.jsonl
        episodes = [{"group": f"g{g}", **res.to_json()} for g, res in self.history_results]
        episodes += [{"group": f"g{g}", **ep.result().to_json()} for g, ep in enumerate(self.episodes)]
        return ScenarioReport(tables=tables, notes=notes, jsonl={"episodes": episodes}, alerts=[self.judge_alert] if self.judge_alert else [])

    def representativity_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(pooled, by group). Pooled: per conditioning set (and the null row)
        and mode, eq. 21's signed and absolute gap over every group's substituted
        participants with cluster-bootstrap intervals (groups resampled), the
        null row's gap beside it and the excess over it, and eq. 22's win rate
        the same way (:func:`mechanisms.value_equivalence.pooled_table`). By
        group: the same gaps per group, intervals over its rollouts."""
        o = self.opts
        sources = [o.payoff] + (["self_rating"] if o.payoff == "model" else [])
        rows, samples = [], {src: [] for src in sources}
        for g, grp in enumerate(self.groups):
            for subset in self.rep_sets:
                for mode in ("one", "all"):
                    subs = [s for s in self.substitutions[g] if s.subset == subset and s.mode == mode]
                    reports = []
                    for source in sources:
                        runs, wins = {}, []
                        for sub in subs:
                            _, base, with_reps = self._rollouts(g, sub, source)
                            runs[sub.key] = (sub.slots, with_reps)
                            won = tuple(w for w in (self.rep_outcomes[RepEpisode(g, r, sub)].win for r in range(o.rollouts)) if w is not None)
                            wins += won
                            samples[source].append(PayoffSample(f"g{g}", subset or "none", mode, with_reps[:, sub.slots], base[:, sub.slots], won))
                        seed = bootstrap_seed(self.episode_config, grp["question"], subset, mode)
                        reports.append(report_from_rollouts(subset, mode, base, runs, seed, self.episode_config.represented_acts,
                                                            PAYOFF_SOURCES[source], float(np.mean(wins)) if wins else float("nan")))
                    rep = reports[0]
                    row = {"group": g, "subset": subset or "none", "mode": mode, "signed_gap": rep.signed_gap, "payoff_gap": rep.gap,
                           "ci_low": rep.ci_low, "ci_high": rep.ci_high, "rollouts": rep.rollouts, "win_rate": rep.win_rate,
                           "n_substituted": len(rep.per_slot), "payoff_source": rep.payoff_source}
                    if len(reports) > 1:
                        row.update(self_rating_gap=reports[1].gap, self_rating_signed_gap=reports[1].signed_gap)
                    rows.append(row)
        seed = derive_seed(self.cfg.seed, "representativity", "pooled")
        pooled = pd.DataFrame([r.to_json() for r in pooled_table(samples[o.payoff], seed)])
        pooled["payoff_source"] = PAYOFF_SOURCES[o.payoff]
        pooled["ranker"] = resolved_ranker(o) if o.mediator == "habermas" else "n/a"
        if o.payoff == "model":
            other = pd.DataFrame([r.to_json() for r in pooled_table(samples["self_rating"], seed)])
            for col in ("signed_gap", "signed_ci_low", "signed_ci_high", "payoff_gap", "ci_low", "ci_high", "null_gap"):
                pooled[f"self_rating_{col}"] = other[col].to_numpy()
        return pooled, pd.DataFrame(rows)

    def representativity_table(self) -> pd.DataFrame:
        """The pooled table (see :meth:`representativity_tables`)."""
        return self.representativity_tables()[0]

    def ranking_note(self) -> str:
        """Which ranker ran, and the mediator's retry settings, for the report."""
        o = self.opts
        if o.mediator != "habermas":
            return f"ranking: the {o.mediator} mediator ranks no candidates."
        who = resolved_ranker(o)
        text = (f"ranking: ranker = {who}: " + (
            "an assistant ranks the candidates for each participant from their words only (question, opinion, statement under "
            "revision, critique; the Habermas Machine's ranking model), no backstory or record in the prompt" if who == "words" else
            "each participant ranks as itself, its backstory (or a stand-in's record, if ranking is represented) in the prompt"))
        text += f"; {o.ranking} ranking of {o.candidates} candidates; an unusable candidate is generated again up to {o.retries} times"
        if o.ranking == "cot":
            text += f", an unparsed chain-of-thought ranking is asked again up to {o.retries} times, then replaced by ratings"
        return text + " (mediation: the fallbacks counted per phase)."

    def mediation_table(self) -> pd.DataFrame:
        """Per phase of the run, the mediator's fallbacks: statements that are no
        ranked candidate and CoT rankings replaced by ratings, with the settings."""
        phases = {
            "history": mediation_fallbacks([res for _, res in self.history_results]),
            "main": mediation_fallbacks([ep.result() for ep in self.episodes]),
        }
        rep = [out.fallbacks for e, out in self.rep_outcomes.items() if out.fallbacks and not (e.substitution is None and e.rollout == 0)]
        phases["representatives"] = {k: sum(f[k] for f in rep) for k in ("mediations", "statement_fallbacks", "ranking_fallbacks")}
        med = self.mediator().describe()
        settings = {k: med.get(k) for k in ("name", "num_candidates", "ranking", "ranker", "retries", "cot_retries")}
        return pd.DataFrame([{"phase": ph, **counts, **settings} for ph, counts in phases.items()])

    def positions_table(self) -> pd.DataFrame:
        rows = []
        for g, ep in enumerate(self.episodes):
            res = ep.result()
            summary = res.positions_json()
            for i, pid in enumerate(res.participant_ids):
                rows.append({
                    "group": g, "participant": pid, "before": res.positions[i],
                    "after": res.positions_after[i] if res.positions_after else None,
                    "change": summary["change"][i] if "change" in summary else None,
                    "disagreement_before": summary["disagreement_before"],
                    "disagreement_after": summary.get("disagreement_after"),
                })
        return pd.DataFrame(rows)

    def representative_episodes(self) -> int:
        """Episodes the representatives phase plays: per group, the extra
        baseline rollouts and, per subset, (one slot at a time + all) x rollouts."""
        return sum(len(eps) for _, eps in self.rep_plan)

    def judge(self):
        """(judge engine, alert): options.judge, else the representatives' own
        model, with a one-line warning when the two are the same model."""
        rep_model = self.cfg.engine.model_name()
        if self.opts.judge is None:
            return self.engine, (
                f"consensus autorater: the judge is the representatives' own model ({rep_model}); "
                "set options.judge to a separate (larger) model"
            )
        replay = getattr(self.engine, "_factory", True) is None  # a replay engine answers from the store only
        judge = cached_engine(self.opts.judge, self.store, replay=replay)
        same = self.opts.judge.model_name() == rep_model
        return judge, (f"consensus autorater: the judge ({rep_model}) is the same model as the representatives" if same else "")
