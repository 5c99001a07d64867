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
seeded rollouts -- the discrepancy in expected payoff (eq. 21) with a bootstrap
interval, and the consensus autorater's win rate (eq. 22).

Every engine request goes through the store, so a rerun, a resume after a kill
and a replay make no repeated LLM call; every utterance is in the episode log.
"""
from __future__ import annotations

import time
from typing import Literal

import mesa
import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from core.config import StrictModel
from core.errors import validation_line

from agents.persona import PersonaAgent
from mechanisms.budget import GenerationBudget
from mechanisms.episode import Episode, EpisodeConfig, Participant, load_questions, run_episode
from mechanisms.mediators import HabermasMediator, LLMMediator, OpinionMediator
from agents import demographics as demo
from agents.llm.factory import EngineConfig, cached_engine
from mechanisms.representatives import ParticipantRecord, most_probable_profile, records_from_episodes, representativity, require_parts
from simulation.config import ConfigError, ScenarioConfig
from simulation.store import Store

from . import population as pop
from .contract import GroupView, ScenarioModel, ScenarioReport
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
    retries: int = Field(8, ge=0)  # re-generations of an unusable candidate (HM: 8)
    judge: EngineConfig | None = None  # consensus autorater (eq. 22); None = the scenario's model, with a warning
    budget: GenerationBudget = GenerationBudget()  # tokens per opinion, critique, statement


def surveyed_profiles(engine, store: Store, people: list[dict], method: str = "probs", progress=None) -> dict[str, dict[str, str]]:
    """D for each persona: its surveyed demographic profile (the Pew ATP W92
    questions, the analysis layer's default survey), the most probable option
    per trait; answers are stored, so a rerun asks nothing again."""
    traits = demo.default_traits()
    if progress:
        progress("demographic survey (D)", 0, len(people))
    surveyed = demo.survey(engine, store, people, traits, "consensus-ATP_W92", method=method)
    if progress:
        progress("demographic survey (D)", len(people), len(people))
    options = {t.trait: [*t.options, demo.REFUSAL] for t in traits}
    return {p["persona_id"]: most_probable_profile(surveyed[p["persona_id"]], options, demo.REFUSAL) for p in people}


class ConsensusModel(ScenarioModel):
    title = "Consensus with a mediator, and digital representatives"
    kind = "deliberation"

    def __init__(self, cfg: ScenarioConfig, engine, store: Store, run_id: str, *, progress=None) -> None:
        super().__init__(cfg, engine, store, run_id, progress=progress)
        try:
            self.opts = ConsensusOptions.model_validate(cfg.options)
        except ValidationError as exc:
            raise ConfigError(validation_line("options", exc)) from None
        need = self.opts.groups * self.opts.group_size
        if cfg.population.size < need:
            raise ConfigError(f"population.size: {cfg.population.size} personas cannot fill {self.opts.groups} groups of {self.opts.group_size}")
        self.populations = pop.build(cfg.model_copy(update={"human": None}), engine, store, None, progress=progress)
        people = self.populations[0].personas[:need]
        self.agent_list = [
            PersonaAgent(self, p, seed=cfg.seed, series=False, condition=self.populations[0].label, group=i // self.opts.group_size)
            for i, p in enumerate(people)
        ]
        questions = load_questions(n=self.opts.groups * (self.opts.history + 1), seed=cfg.seed)
        self.groups = []
        for g in range(self.opts.groups):
            members = self.agent_list[g * self.opts.group_size : (g + 1) * self.opts.group_size]
            qs = questions[g * (self.opts.history + 1) : (g + 1) * (self.opts.history + 1)]
            self.groups.append({"members": members, "history_questions": qs[:-1], "question": qs[-1]})
        self.episode_config = EpisodeConfig(
            rounds=self.opts.rounds,
            seed=cfg.seed,
            budget=self.opts.budget,
            represented_acts=tuple("rank" if a == "ranking" else a for a in self.opts.acts),
        )
        demographics = {}
        if any("D" in s for s in self.opts.representatives):
            demographics = surveyed_profiles(engine, store, people, cfg.population.demographics, progress)
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
        self.episodes = [Episode(engine, grp["question"], self.participants(grp), self.mediator(), self.episode_config) for grp in self.groups]
        self.item_list = [Item(ph, ph, ()) for ph in self.episodes[0].phases]
        self.statements: dict[int, list[str]] = {}
        self.agreement: dict[int, list[list[float]]] = {}
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "step": lambda m: m.step_index,
                "phase": lambda m: m.item_list[m.step_index - 1].id if m.step_index else "",
                "mean_agreement": lambda m: m.mean_agreement(),
            }
        )
        self.running = True

    # ------------------------------------------------------------ parts
    def mediator(self):
        o = self.opts
        if o.mediator == "habermas":
            return HabermasMediator(num_candidates=o.candidates, max_tokens=o.budget.statement, ranking=o.ranking, retries=o.retries)
        if o.mediator == "llm":
            return LLMMediator(max_tokens=o.budget.statement, retries=o.retries)
        return OpinionMediator()

    @staticmethod
    def participants(grp) -> list[Participant]:
        return [Participant(a.persona_id, a.conditioning) for a in grp["members"]]

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
        if not self.store.readonly:  # a replay reads the logged run, it never writes
            self.store.log_events(self.run_id, self.step_index, events)
        self.step_index += 1
        self.datacollector.collect(self)
        if all(ep.done for ep in self.episodes):
            self.running = False

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
        return [
            GroupView(
                label=f"group {g}",
                question=ep.question.question,
                participants=tuple(p.id for p in ep.participants),
                statements=tuple(ep.statements),
                agreement=np.asarray(self.agreement[g], dtype=float) if g in self.agreement else None,
                phase="finished" if ep.done else ep.phase,
            )
            for g, ep in enumerate(self.episodes)
        ]

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
        positions = self.positions_table()
        reps, alerts = [], []
        if self.opts.representatives:
            judge, alert = self.judge()
            alerts.append(alert)
            total = self.representative_episodes()
            done, t0 = [0], time.perf_counter()
            if self.progress:
                self.progress("representatives: episodes", 0, total)

            def tick(_res):
                done[0] += 1
                if self.progress:
                    left = (time.perf_counter() - t0) / done[0] * (total - done[0])
                    self.progress(f"representatives: episodes (~{int(left) // 60}m{int(left) % 60:02d}s left)", done[0], total)

            for g, (grp, ep) in enumerate(zip(self.groups, self.episodes)):
                records = [self.records[p.id] for p in self.participants(grp)]
                _, reports = representativity(
                    self.engine, grp["question"], self.participants(grp), records, self.opts.representatives,
                    self.mediator(), self.episode_config, baseline=ep.result(), rollouts=self.opts.rollouts,
                    judge=judge, on_episode=tick,
                )
                for rep in reports:
                    reps.append({
                        "group": g, "subset": rep.subset or "none", "mode": rep.mode, "payoff_gap": rep.gap,
                        "ci_low": rep.ci_low, "ci_high": rep.ci_high, "rollouts": rep.rollouts,
                        "win_rate": rep.win_rate, "n_substituted": len(rep.per_slot),
                    })
        tables = {"consensus": pd.DataFrame(rounds), "positions": positions}
        if reps:
            tables["representativity"] = pd.DataFrame(reps)
        acts = ", ".join(self.opts.acts)
        notes = [
            "consensus: agreement of each participant with each round's statement on a 7-point Likert scale, read as an "
            "option distribution and reduced to its expected value (1-7); min = the worst-off participant.",
            "positions: each participant's agreement (1-7, expected value) with the question's affirming statement before "
            "deliberation and after it (recalling their opinion and the group's final statement); change = after - before; "
            "disagreement = mean |p_i - p_j| over pairs of participants.",
            f"representativity: representatives act in: {acts}" + (" (the paper's setting)" if self.opts.acts == ["critique"] else "")
            + f". payoff_gap = mean over substituted participants of |E[final payoff with representatives] - E[final payoff "
            f"of the originals]| (eq. 21; payoffs = the original personas' self-ratings, 1-7), expectations over "
            f"{self.opts.rollouts} seeded rollouts, ci = 95% percentile bootstrap over rollouts; one = each participant "
            "substituted alone, all = everyone; win_rate = the judge's preference for the representatives' final statement "
            "over the originals' (eq. 22; 0.5 = indistinguishable).",
        ]
        # Every episode (history and main) as training data for fine-tuned
        # representatives: python run.py represent ... with data.path = episodes.jsonl
        episodes = [{"group": f"g{g}", **res.to_json()} for g, res in self.history_results]
        episodes += [{"group": f"g{g}", **ep.result().to_json()} for g, ep in enumerate(self.episodes)]
        return ScenarioReport(tables=tables, notes=notes, jsonl={"episodes": episodes}, alerts=[a for a in alerts if a])

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
        o = self.opts
        per_group = (o.rollouts - 1) + len(o.representatives) * (o.group_size + 1) * o.rollouts
        return o.groups * per_group

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
