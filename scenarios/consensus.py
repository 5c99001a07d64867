"""Consensus and digital representatives as a Mesa model: every piece of LLM work a step.

Groups of personas (:class:`mechanisms.groups.Group`) debate questions from the
Habermas Machine corpus with a mediator. The steps, each logged to the store
and shown on the browser page:

* ``demographic survey`` (when a conditioning set holds D): every persona's
  demographic profile, D of its record;
* ``history 1`` ... ``history H``: every group debates ``options.history``
  other questions first; those episodes form each participant's record
  (opinions, critiques, positions), from which representatives are conditioned;
* the main debate, one phase of every group's episode per step (opinions,
  draft, critiques, revision, ..., payoff);
* the representatives phase (:class:`mechanisms.representatives_phase.RepresentativesPhase`):
  one step per (rollout, conditioning set) -- representatives substitute one
  participant and all of them; the payoff gap (eq. 21, the originals'
  self-ratings or a payoff model's scores) and the consensus autorater's win
  rate (eq. 22), pooled over groups beside the null row.

Every engine request goes through the store with seeds fixed by (seed,
rollout, question, act, slot), so a rerun, a resume after a kill in any step
and a replay make no repeated LLM call. ``evaluate()`` only assembles tables
(:mod:`mechanisms.consensus_report`).
"""
from __future__ import annotations

from functools import partial

import mesa
import numpy as np

from agents.llm.factory import EngineConfig, cached_engine
from agents.persona import PersonaAgent
from core.errors import PersonaeError
from core.store import Store
from mechanisms import consensus_report as report
from mechanisms.episode import Episode, EpisodeConfig, Participant, load_questions
from mechanisms.groups import Group, group_records, play_history, surveyed_profiles, utterance_events
from mechanisms.representatives import require_parts
from mechanisms.representatives_phase import RepresentativesPhase
from scenarios.config import ConfigError, ScenarioConfig

from . import population as pop
from .consensus_options import ConsensusOptions, build_mediator, options_of, questions_path, resolved_ranker
from .consensus_options import preflight as check_options
from .contract import GroupView, RepresentativeView, ScenarioModel, ScenarioReport
from .items import Item


class ConsensusModel(ScenarioModel):
    scenario = "consensus"
    title = "Consensus with a mediator, and digital representatives"
    kind = "deliberation"
    options_model = ConsensusOptions

    @classmethod
    def options_of(cls, cfg: ScenarioConfig) -> ConsensusOptions:
        return options_of(cfg)

    @classmethod
    def preflight(cls, cfg: ScenarioConfig) -> list[EngineConfig]:
        """See :func:`scenarios.consensus_options.preflight`: one line before any LLM call."""
        return check_options(cfg)

    def __init__(self, cfg: ScenarioConfig, engine, store: Store, run_id: str, *, progress=None) -> None:
        super().__init__(cfg, engine, store, run_id, progress=progress)
        o = self.opts = self.options_of(cfg)
        self.preflight(cfg)  # also when built outside the runner (tests, the browser page)
        payoff_model = self.load_payoff_model()  # before any LLM work: a wrong path fails at once
        self.populations = pop.build(cfg.model_copy(update={"human": None}), engine, store, None, progress=progress)
        self.people = self.populations[0].personas[: o.groups * o.group_size]
        self.agent_list = [PersonaAgent(self, p, seed=cfg.seed, series=False, condition=self.populations[0].label, group=i // o.group_size)
                           for i, p in enumerate(self.people)]
        self.groups = self.make_groups()
        self.episode_config = EpisodeConfig(rounds=o.rounds, seed=cfg.seed, budget=o.budget,
                                            represented_acts=tuple("rank" if a == "ranking" else a for a in o.acts))
        self.episodes = [Episode(engine, g.question, list(g.participants), self.mediator(), self.episode_config) for g in self.groups]
        self.judge_engine, self.judge_alert = self.judge() if o.evaluated else (None, "")
        self.ft_engines = {s: cached_engine(c, store, replay=engine.replaying) for s, c in o.finetuned.items()}
        self.representatives = RepresentativesPhase(
            engine, self.groups, self.episode_config, self.mediator, sets=o.representatives, finetuned=self.ft_engines, null_row=o.null_row,
            rollouts=o.rollouts, judge=self.judge_engine, payoff=o.payoff, payoff_model=payoff_model, chunk=cfg.population.chunk, progress=progress)
        self.demographics: dict[str, dict[str, str]] = {}  # D per persona, once surveyed
        self.history: dict[int, list] = {g.index: [] for g in self.groups}  # each group's history episodes played so far
        self.agreement: dict[int, list[list[float]]] = {}  # per group: [round][participant] agreement with the main statements
        setup = [(Item("demographic survey", f"D: the {len(self.people)} personas' demographic profiles (Pew ATP W92, most probable answers)", ()),
                  self.survey_step)] if o.surveyed else []
        setup += [(Item(f"history {h + 1}", f"history question {h + 1}/{o.history}: every group's episode on it, for the representatives' records", ()),
                   partial(self.history_step, h)) for h in range(o.history)]
        self.setup_steps = len(setup)
        self.step_plan = [*setup, *((Item(ph, ph, ()), self.main_step) for ph in self.episodes[0].phases),
                          *((Item(s.id, s.text, ()), partial(self.representatives_step, k)) for k, s in enumerate(self.representatives.plan))]
        self.item_list = [item for item, _ in self.step_plan]
        self.datacollector = mesa.DataCollector(model_reporters={
            "step": lambda m: m.step_index, "phase": lambda m: m.item_list[m.step_index - 1].id if m.step_index else "",
            "mean_agreement": lambda m: m.mean_agreement(), "representative_episodes": lambda m: m.representatives.done})
        self.running = True

    # ------------------------------------------------------------ parts
    def mediator(self):
        return build_mediator(self.opts)

    def make_groups(self) -> list[Group]:
        """Groups of ``group_size`` consecutive personas, each with history + 1 debate questions of its own."""
        o, per = self.opts, self.opts.history + 1
        questions = load_questions(questions_path(o), n=o.groups * per, seed=self.cfg.seed)
        groups = []
        for g in range(o.groups):
            qs = questions[g * per : (g + 1) * per]
            if len(qs) != per:  # preflight guarantees the supply; never a silently shorter history
                raise ConfigError(f"options.questions: group {g} gets {len(qs)} of its {per} debate questions")
            members = self.agent_list[g * o.group_size : (g + 1) * o.group_size]
            groups.append(Group(g, tuple(Participant(a.persona_id, a.conditioning) for a in members), tuple(qs[:-1]), qs[-1]))
        return groups

    def load_payoff_model(self):
        """The trained payoff model when ``options.payoff`` is "model" (its answers cached in the store), else None."""
        if self.opts.payoff != "model":
            return None
        from mechanisms.payoff_model import load_payoff_model

        try:
            return load_payoff_model(self.opts.payoff_model, store=self.store)
        except PersonaeError as exc:
            raise ConfigError(f"options.payoff_model: {exc}") from None

    def judge(self):
        """(judge engine, alert): options.judge, else the representatives' own
        model, with a one-line warning when the two are the same model."""
        rep_model = self.cfg.engine.model_name()
        if self.opts.judge is None:
            return self.engine, (f"consensus autorater: the judge is the representatives' own model ({rep_model}); "
                                 "set options.judge to a separate (larger) model")
        judge = cached_engine(self.opts.judge, self.store, replay=self.engine.replaying)
        same = self.opts.judge.model_name() == rep_model
        return judge, (f"consensus autorater: the judge ({rep_model}) is the same model as the representatives" if same else "")

    # ------------------------------------------------------------ stepping
    def step(self) -> None:
        if not self.running:
            return
        if self.step_index == self.setup_steps and self.representatives.records is None:
            self.prepare_representatives()  # the records are complete: checked before the main debate
        if not self.restored():
            events = self.step_plan[self.step_index][1]()
            if not self.store.readonly:  # a replay reads the logged run, it never writes
                self.store.log_events(self.run_id, self.step_index, events)
        self.step_index += 1
        self.datacollector.collect(self)
        if self.step_index >= len(self.item_list):
            self.running = False

    def restored(self) -> bool:
        """A resumed run's finished representatives step, restored from its log:
        at full size each step reads ~100k stored answers to play again, and the
        phase is most of a run. A replay plays every step again (from the store:
        it checks the stored answers, not only the log)."""
        k = self.step_index - (len(self.step_plan) - len(self.representatives.plan))
        if k < 0 or self.engine.replaying:
            return False
        done = self.representatives.restore(k, self.store.events(self.run_id, step=self.step_index, kind="representatives"))
        if done and self.progress:
            self.progress("representatives: episodes (restored from the log)", self.representatives.done, self.representatives.episodes)
        return done

    def survey_step(self) -> list[dict]:
        """D: every persona's surveyed demographic profile (answers kept in the store)."""
        self.demographics = surveyed_profiles(self.engine, self.store, self.people, self.cfg.population.demographics, self.progress,
                                              chunk=self.cfg.population.chunk)
        return [{"kind": "demographics", "agent": pid, "payload": {"persona_id": pid, "profile": profile}} for pid, profile in self.demographics.items()]

    def history_step(self, h: int) -> list[dict]:
        """Every group's episode on its history question ``h``."""
        results, events = play_history(self.engine, self.groups, h, self.mediator, self.episode_config, self.progress)
        for g, res in zip(self.groups, results):
            self.history[g.index].append(res)
        return events

    def prepare_representatives(self) -> None:
        """Each participant's record (history episodes and D), checked against the sets, conditions the representatives."""
        records = group_records(self.groups, [self.history[g.index] for g in self.groups], self.demographics)
        for source, sets in (("options.representatives", self.opts.representatives), ("options.finetuned", list(self.opts.finetuned))):
            if sets:
                require_parts([records[a.persona_id] for a in self.agent_list], sets, source)
        self.representatives.prepare(records)

    def main_step(self) -> list[dict]:
        """The next phase of every group's main episode."""
        events = []
        for g, ep in zip(self.groups, self.episodes):
            events += utterance_events(ep.step(), {"group": g.index})
            if ep.payoff is not None:
                self.agreement[g.index] = ep.payoff.agreement.round(6).tolist()
        return events

    def representatives_step(self, k: int) -> list[dict]:
        """Step ``k`` of the representatives phase (rollout 0 of the originals: the main episodes)."""
        return self.representatives.play(k, self.main_results())

    def main_results(self) -> list:
        return [ep.result() for ep in self.episodes]

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
        """Each group's main episode; before it starts, its latest history episode."""
        phase = self.item_list[self.step_index].id if self.step_index < len(self.item_list) else "finished"
        views = []
        for g, ep in zip(self.groups, self.episodes):
            past = self.history[g.index]
            if past and self.step_index <= self.setup_steps:
                res = past[-1]
                views.append(GroupView(f"group {g.index} · history {len(past)}/{self.opts.history}", res.question.question, g.ids,
                                       tuple(res.statements), np.asarray(res.payoff.agreement.round(6), dtype=float), phase))
                continue
            agreement = np.asarray(self.agreement[g.index], dtype=float) if g.index in self.agreement else None
            views.append(GroupView(f"group {g.index}", g.question.question, g.ids, tuple(ep.statements), agreement, phase, self.representative_views(g)))
        return views

    def representative_views(self, g: Group) -> tuple[RepresentativeView, ...]:
        return tuple(RepresentativeView(p.subset, p.mode, tuple(g.ids[i] for i in p.slots), p.rollouts, p.statement, p.gap)
                     for p in self.representatives.played(g.index))

    # ------------------------------------------------------------ report
    def evaluate(self) -> ScenarioReport:
        o, main = self.opts, self.main_results()
        history = [(g, res) for g in self.groups for res in self.history[g.index]]
        fallbacks = {"history": report.mediation_fallbacks([res for _, res in history]), "main": report.mediation_fallbacks(main),
                     "representatives": self.representatives.fallbacks()}
        tables = {"consensus": report.consensus_table(main), "positions": report.positions_table(main),
                  "mediation": report.mediation_table(fallbacks, self.mediator().describe())}
        if o.evaluated:
            ranker = resolved_ranker(o) if o.mediator == "habermas" else "n/a"
            tables["representativity"], tables["representativity_by_group"] = self.representatives.tables(ranker)
        notes = [report.CONSENSUS_NOTE, report.POSITIONS_NOTE, report.representativity_note(o.acts, o.payoff, o.payoff_model, o.rollouts),
                 report.ranking_note(o.mediator, resolved_ranker(o), o.ranking, o.candidates, o.retries)]
        # Every episode (history and main) as training data for fine-tuned
        # representatives: python run.py represent ... with data.path = episodes.jsonl
        episodes = [{"group": g.label, **res.to_json()} for g, res in [*history, *zip(self.groups, main)]]
        return ScenarioReport(tables=tables, notes=notes, jsonl={"episodes": episodes}, alerts=[self.judge_alert] if self.judge_alert else [])
