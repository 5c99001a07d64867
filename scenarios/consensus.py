"""Consensus and digital representatives as a Mesa model (one step per phase).

Groups of personas debate questions from the Habermas Machine corpus with a
mediator. Each model step runs the next phase (opinions, draft, critiques,
revision, ..., payoff) of every group's episode. Before the main question each
group debates ``options.history`` other questions: those episodes form every
participant's record (opinions, critiques, positions), from which digital
representatives are conditioned (any subset of D/O/C/P). After the last step
the report gives the mean and minimum agreement per round, and the
representativity (mean |payoff with representatives - payoff of the originals|)
substituting one participant and all of them, per conditioning subset.

Every engine request goes through the store, so a rerun, a resume after a kill
and a replay make no repeated LLM call; every utterance is in the episode log.
"""
from __future__ import annotations

from typing import Literal

import mesa
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.persona import PersonaAgent
from mechanisms.episode import Episode, EpisodeConfig, Participant, load_questions, run_episode
from mechanisms.mediators import HabermasMediator, LLMMediator, OpinionMediator
from mechanisms.representatives import records_from_episodes, representativity
from simulation.config import ConfigError, ScenarioConfig
from simulation.store import Store

from . import population as pop


class ConsensusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: int = Field(2, gt=0)
    group_size: int = Field(3, ge=2, le=8)
    rounds: int = Field(1, ge=0)
    mediator: Literal["habermas", "llm", "opinion"] = "habermas"
    candidates: int = Field(4, ge=1, le=16)
    history: int = Field(1, ge=0)  # other questions debated first, for representatives' records
    representatives: list[str] = ["DOCP"]  # conditioning subsets: letters of DOCP ("" = none)
    opinion_tokens: int = Field(48, gt=0)
    critique_tokens: int = Field(40, gt=0)
    statement_tokens: int = Field(64, gt=0)


class ConsensusModel(mesa.Model):
    title = "Consensus with a mediator, and digital representatives"

    def __init__(self, cfg: ScenarioConfig, engine, store: Store, run_id: str, *, progress=None) -> None:
        super().__init__(seed=cfg.seed)
        try:
            self.opts = ConsensusOptions.model_validate(cfg.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"options.{field}: {err['msg']}") from None
        self.cfg, self.engine, self.store, self.run_id, self.progress = cfg, engine, store, run_id, progress
        self.study = None
        need = self.opts.groups * self.opts.group_size
        if cfg.population.size < need:
            raise ConfigError(f"population.size: {cfg.population.size} personas cannot fill {self.opts.groups} groups of {self.opts.group_size}")
        self.populations = pop.build(cfg.model_copy(update={"human": None}), engine, store, None, progress=progress)
        people = self.populations[0].personas[:need]
        self.agent_list = [PersonaAgent(self, p, seed=cfg.seed, series=False) for p in people]
        for g, a in enumerate(self.agent_list):
            a.group = g // self.opts.group_size
            a.condition = self.populations[0].label
            a.party = None
        questions = load_questions(n=self.opts.groups * (self.opts.history + 1), seed=cfg.seed)
        self.groups = []
        for g in range(self.opts.groups):
            members = self.agent_list[g * self.opts.group_size : (g + 1) * self.opts.group_size]
            qs = questions[g * (self.opts.history + 1) : (g + 1) * (self.opts.history + 1)]
            self.groups.append({"members": members, "history_questions": qs[:-1], "question": qs[-1]})
        self.episode_config = EpisodeConfig(
            rounds=self.opts.rounds,
            seed=cfg.seed,
            opinion_tokens=self.opts.opinion_tokens,
            critique_tokens=self.opts.critique_tokens,
        )
        # Records for representatives: the history episodes, run in setup.
        self.records = {}
        self.history_results: list[tuple[int, object]] = []
        for g, grp in enumerate(self.groups):
            parts = self.participants(grp)
            done = [run_episode(engine, q, parts, self.mediator(), self.episode_config) for q in grp["history_questions"]]
            self.history_results += [(g, res) for res in done]
            self.records.update(records_from_episodes(done, {a.persona_id: {"method": a.method} for a in grp["members"]}))
        self.episodes = [Episode(engine, grp["question"], self.participants(grp), self.mediator(), self.episode_config) for grp in self.groups]
        self.item_list = [type("Phase", (), {"id": ph, "text": ph, "options": ()})() for ph in self.episodes[0].phases]
        self.step_index = 0
        self.last_answers: dict = {}
        self.statements: dict[int, list[str]] = {}
        self.agreement: dict[int, list[list[float]]] = {}
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "step": lambda m: m.step_index,
                "phase": lambda m: m.item_list[m.step_index - 1].id if m.step_index else "",
                "mean_agreement": lambda m: float(np.mean([e.payoff.mean[-1] for e in m.episodes])) if all(e.payoff is not None for e in m.episodes) else None,
            }
        )
        self.running = True

    # ------------------------------------------------------------ parts
    def mediator(self):
        o = self.opts
        if o.mediator == "habermas":
            return HabermasMediator(num_candidates=o.candidates, max_tokens=o.statement_tokens)
        if o.mediator == "llm":
            return LLMMediator(max_tokens=o.statement_tokens)
        return OpinionMediator()

    @staticmethod
    def participants(grp) -> list[Participant]:
        return [Participant(a.persona_id, a.conditioning) for a in grp["members"]]

    @property
    def current_item(self):
        return self.item_list[self.step_index - 1] if self.step_index else None

    # ------------------------------------------------------------ stepping
    def step(self) -> None:
        if not self.running:
            return
        events = []
        for g, ep in enumerate(self.episodes):
            for rec in ep.step():
                events.append({"kind": "utterance", "agent": rec.to_json().get("actor", ""), "payload": {"group": g, **rec.to_json()}})
            self.statements[g] = list(ep.statements)
            if ep.payoff is not None:
                self.agreement[g] = ep.payoff.agreement.round(6).tolist()
        self.store.log_events(self.run_id, self.step_index, events)
        self.step_index += 1
        self.last_answers = {f"group {g}": (np.asarray(self.agreement[g][-1]) / 7).tolist() for g in self.agreement}
        self.datacollector.collect(self)
        if all(ep.done for ep in self.episodes):
            self.running = False

    def population_distributions(self, item_id: str) -> dict:
        return {}

    # ------------------------------------------------------------ report
    def evaluate(self) -> dict:
        rounds, reps = [], []
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
            if self.opts.representatives and self.opts.history:
                records = [self.records[p.id] for p in self.participants(grp)]
                _, reports = representativity(
                    self.engine, grp["question"], self.participants(grp), records, self.opts.representatives,
                    self.mediator(), self.episode_config, baseline=res,
                )
                for rep in reports:
                    reps.append({"group": g, "subset": rep.subset or "none", "mode": rep.mode, "representativity": rep.gap, "n_substituted": len(rep.per_slot)})
        tables = {"consensus": pd.DataFrame(rounds)}
        if reps:
            df = pd.DataFrame(reps)
            summary = df.groupby(["subset", "mode"], as_index=False, sort=True)["representativity"].mean()
            tables["representativity"] = summary
        notes = [
            "consensus: agreement of each participant with each round's statement on a 7-point Likert scale, read as an "
            "option distribution and reduced to its expected value (1-7); min = the worst-off participant.",
            "representativity: mean |final payoff with digital representatives - payoff with the original personas| over the "
            "substituted participants (one at a time, or all), per conditioning subset of D/O/C/P; 0 = value-equivalent.",
        ]
        # Every episode (history and main) as training data for fine-tuned
        # representatives: python run.py represent ... with data.path = episodes.jsonl
        episodes = [{"group": f"g{g}", **res.to_json()} for g, res in self.history_results]
        episodes += [{"group": f"g{g}", **ep.result().to_json()} for g, ep in enumerate(self.episodes)]
        return {"evaluations": [], "tables": tables, "notes": notes, "jsonl": {"episodes": episodes}}
