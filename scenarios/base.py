"""The steppable survey model every questionnaire scenario builds on.

One Mesa step administers one questionnaire item to every persona agent, as
one engine batch. Each step's requests, distributions and sampled answers go to
the episode log in the store before the step counts as done, so a killed run
resumes at the first unlogged step and a replay re-applies the log without an
engine.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import mesa
import numpy as np

from agents.persona import PersonaAgent
from core.store import Store
from scenarios.config import ConfigError, ScenarioConfig

from . import population as pop
from .contract import RunningFidelity, ScenarioModel, ScenarioReport
from .items import OTHER, PLURAL, Item, party_names  # noqa: F401 - scenarios import these from here


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SurveyModel(ScenarioModel):
    """A questionnaire scenario (see ``scenarios.contract``). Subclasses set
    ``items()`` and ``evaluate()``; ``select_humans()`` may restrict the human
    sample (e.g. to partisans); ``human_distribution()`` gives the human
    reference of an item when there is one."""

    title = "Survey"
    kind = "survey"

    def __init__(
        self,
        cfg: ScenarioConfig,
        engine,
        store: Store,
        run_id: str,
        *,
        progress: Callable | None = None,
    ) -> None:
        super().__init__(cfg, engine, store, run_id, progress=progress)
        self.preflight(cfg)
        self.study = self.load_study()
        pop.check_sizes(cfg, self.study)  # the humans it needs, before the first LLM call
        self.populations = pop.build(cfg, engine, store, self.study, progress=progress)
        self.item_list = self.order_items(self.items())
        profiles = pop.human_profiles(self.study) if self.study is not None and self.study.is_individual else []
        for p_i, population in enumerate(self.populations):
            for h, persona in enumerate(population.personas):
                human = h if population.matching != "none" else None
                population.agent_class(
                    self,
                    persona,
                    seed=cfg.seed,
                    series=cfg.questionnaire.series,
                    condition=population.label,
                    population=p_i,
                    human=human,
                    human_profile=profiles[h] if (profiles and human is not None) else None,
                )
        self.agent_list: list[PersonaAgent] = sorted(self.agents, key=lambda a: a.unique_id)
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "step": lambda m: m.step_index,
                "item": lambda m: m.item_list[m.step_index - 1].id if m.step_index else "",
                "mean_outside_mass": lambda m: m.mean_outside_mass(),
            },
            agent_reporters={
                "condition": "condition",
                "answer": lambda a: a.current_answer.sampled if a.current_answer else None,
            },
        )
        self.running = bool(self.item_list)

    # ------------------------------------------------------------ hooks
    @classmethod
    def preflight(cls, cfg: ScenarioConfig) -> list:
        """What the run needs that can be checked without data or an engine
        (one ConfigError line); the human study's size is checked once it is
        loaded, still before any LLM call (``population.check_sizes``). Returns
        further engines it calls (none)."""
        pop.check_files(cfg)
        return []

    def load_study(self):
        if self.cfg.human is None:
            return None
        from analysis.studies import load_study

        study = load_study(self.cfg.human.study, self.cfg.human.overrides or None)
        study = self.select_humans(study)
        # Seeded; asking for more respondents than there are keeps them all, with a warning.
        return study.sample(self.cfg.human.sample, self.cfg.draw_seed("human sample"))

    def select_humans(self, study):
        return study

    def items(self) -> list[Item]:
        raise NotImplementedError

    # ------------------------------------------------------------ stepping
    def order_items(self, items: list[Item]) -> list[Item]:
        wanted = self.cfg.questionnaire.questions
        if wanted:
            known = {i.id for i in items}
            missing = [q for q in wanted if q not in known]
            if missing:
                raise ConfigError(f"questionnaire.questions: unknown id '{missing[0]}' (known: {', '.join(sorted(known))})")
            items = [i for i in items if i.id in wanted]
        if self.cfg.questionnaire.order == "random":
            order = np.random.default_rng(self.cfg.draw_seed("question order")).permutation(len(items))
            items = [items[i] for i in order]
        return items

    def step(self) -> None:
        if not self.running:
            return
        item = self.item_list[self.step_index]
        questions = [item.render(a) for a in self.agent_list]
        logged = self.store.events(self.run_id, step=self.step_index)
        if len(logged) == len(self.agent_list):
            for agent, q, ev in zip(self.agent_list, questions, logged):
                agent.restore(q, ev["payload"])
        else:
            # Agents in chunks: one engine batch (answers committed to the store)
            # per chunk, so only one chunk's prompts -- each holding a persona's
            # whole context -- exist at a time; a resumed step re-asks the
            # finished chunks from the store.
            events = []
            step = self.cfg.population.chunk
            for start in range(0, len(self.agent_list), step):
                agents, qs = self.agent_list[start : start + step], questions[start : start + step]
                events += self._answer(item, agents, qs)
            self.store.log_events(self.run_id, self.step_index, events)
        self.step_index += 1
        self.datacollector.collect(self)
        if self.step_index >= len(self.item_list):
            self.running = False

    def _answer(self, item: Item, agents: list[PersonaAgent], questions: list) -> list[dict]:
        """Ask ``agents`` the item (one batch; agents that reason first write it
        as one batch before); return their answer events."""
        thinking = [(a, q, r) for a, q in zip(agents, questions) if (r := a.reasoning_request(q)) is not None]
        if thinking:
            for (a, q, _), g in zip(thinking, self.engine.generate([r for _, _, r in thinking])):
                a.reasoned(q, g.text)
        requests = [a.ask(q) for a, q in zip(agents, questions)]
        results = self.engine.option_probs(requests)
        events = []
        for agent, q, req, res in zip(agents, questions, requests, results):
            ans = agent.receive(q, res)
            events.append(
                {
                    "kind": "answer",
                    "agent": agent.unique_id,
                    "payload": {
                        **ans.to_json(),
                        "item": item.id,
                        "persona_id": agent.persona_id,
                        "condition": agent.condition,
                        "human": agent.human,
                        "question": q.text,
                        "options": list(q.options),
                        "prefix_sha": _sha(req.prefix),
                        "suffix": req.suffix,
                    },
                }
            )
        return events

    # ------------------------------------------------------------ views
    def agents_of(self, p_i: int) -> list[PersonaAgent]:
        return [a for a in self.agent_list if a.population == p_i]

    def persona_distributions(self, item_id: str) -> dict[str, np.ndarray]:
        """Unweighted mean over each population's personas (the report applies
        the survey weights)."""
        out = {}
        for p_i, population in enumerate(self.populations):
            rows = [a.answers[item_id].probs for a in self.agents_of(p_i) if item_id in a.answers]
            if rows:
                out[population.label] = np.mean(np.array(rows), axis=0)
        return out

    def mean_outside_mass(self) -> float:
        item = self.current_item
        if item is None:
            return 0.0
        vals = [a.answers[item.id].outside_mass for a in self.agent_list if item.id in a.answers]
        return float(np.mean(vals)) if vals else 0.0

    def running_values(self) -> dict:
        return {"mean_outside_mass": self.mean_outside_mass}

    def item_lower_bounds(self) -> dict[str, float]:
        """Item id -> the humans' split-half WD, where the study allows one."""
        return {}

    def running_fidelity(self) -> RunningFidelity:
        """Mean WD so far per population (mean persona distribution vs the
        humans'), unweighted: the report computes the weighted, exact figures."""
        from analysis.distributions import wasserstein

        done = [(i, h) for i in self.item_list[: self.step_index] if (h := self.human_distribution(i.id)) is not None]
        if not done:
            return RunningFidelity()
        per_label: dict[str, list[float]] = {}
        for item, human in done:
            for label, probs in self.persona_distributions(item.id).items():
                per_label.setdefault(label, []).append(wasserstein(human, probs, item.positions))
        bounds = self.item_lower_bounds()
        lb = [bounds[i.id] for i, _ in done if np.isfinite(bounds.get(i.id, np.nan))]
        return RunningFidelity(
            items=tuple(i.id for i, _ in done),
            wd={label: float(np.mean(v)) for label, v in per_label.items()},
            lower_bound=float(np.mean(lb)) if lb else None,
        )

    def answer_arrays(self, p_i: int, item_ids: list[str], n_options: int) -> tuple[np.ndarray, np.ndarray]:
        """Per agent of population ``p_i`` (human order): ``[N, Q, K]`` distributions
        and ``[N, Q]`` sampled indices."""
        agents = self.agents_of(p_i)
        probs = np.zeros((len(agents), len(item_ids), n_options))
        sampled = np.full((len(agents), len(item_ids)), -1, dtype=np.int64)
        for r, a in enumerate(agents):
            for c, qid in enumerate(item_ids):
                ans = a.answers.get(qid)
                if ans is not None:
                    probs[r, c, : len(ans.probs)] = ans.probs
                    sampled[r, c] = ans.sampled
        return probs, sampled


def _most_likely(demographics: dict) -> dict | None:
    """Trait -> ``[V]`` most likely option per persona (-1 without any mass), from ``[V, K]`` probabilities."""
    return {t: np.where(p.sum(axis=1) > 0, p.argmax(axis=1), -1) for t, p in demographics.items()} or None


class StudySurveyModel(SurveyModel):
    """Ask the human study's own questions and score personas against the
    respondents they stand for (the Anthology pipeline)."""

    _human: dict | None = None  # the study's distributions, read once
    _item_lower_bounds: dict[str, float] | None = None

    def items(self) -> list[Item]:
        return [Item(q.id, q.text, tuple(q.options), tuple(q.positions)) for q in self.study.questions]

    def human_distribution(self, item_id: str) -> np.ndarray | None:
        if self.study is None:
            return None
        if self._human is None:
            self._human = self.study.distributions()
        return self._human.get(item_id)

    def item_lower_bounds(self) -> dict[str, float]:
        """The humans' split-half WD per asked item (individual data only),
        computed once per model."""
        if self.study is None or not self.study.is_individual:
            return {}
        if self._item_lower_bounds is None:
            from analysis.lower_bound import human_lower_bound

            study = self.study.select([i.id for i in self.item_list])
            lb = human_lower_bound(study, n_splits=self.cfg.human.lower_bound_splits, seed=self.cfg.seed)
            self._item_lower_bounds = dict(lb.per_question_wd)
        return self._item_lower_bounds

    def evaluate(self) -> ScenarioReport:
        from analysis.evaluation import evaluate
        from analysis.lower_bound import human_lower_bound
        from analysis.persona_answers import PersonaAnswers

        study = self.study.select([i.id for i in self.item_list]) if self.study is not None else None
        from analysis import estimators

        from .binding import add_diagnostics

        if study is None:
            return add_diagnostics(self, ScenarioReport())

        qids = study.question_ids
        k = max(q.n_options for q in study.questions)
        est = estimators.Estimator.of(self.cfg.analysis)
        lb = human_lower_bound(study, n_splits=self.cfg.human.lower_bound_splits, seed=self.cfg.seed, normalize=est.normalize) if study.is_individual or study.counts_kind == "counts" else None
        evaluations = []
        for p_i, population in enumerate(self.populations):
            probs, sampled = self.answer_arrays(p_i, qids, k)
            probs = estimators.apply(est, probs, self.cfg.seed, [a.persona_id for a in self.agents_of(p_i)], qids)
            evaluations.append(
                evaluate(
                    study,
                    PersonaAnswers(probs=probs, sampled=sampled),
                    None,
                    condition=population.condition,
                    matching=population.matching,
                    subgroups=self.cfg.human.subgroups,  # None: the defaults; []: none
                    lower_bound=lb if lb is not None else False,
                    seed=self.cfg.seed,
                    normalize=est.normalize,
                    # aggregate data: each persona's surveyed demographics (most likely option) place it in subgroups
                    persona_demographics=None if study.is_individual else _most_likely(population.demographics),
                )
            )
        return add_diagnostics(self, ScenarioReport(evaluations=evaluations, estimator=est.describe()))
