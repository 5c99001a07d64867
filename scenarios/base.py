"""The steppable survey model every questionnaire scenario builds on.

One Mesa step administers one questionnaire item to every persona agent, as
one engine batch. Each step's requests, distributions and sampled answers go to
the episode log in the store before the step counts as done, so a killed run
resumes at the first unlogged step and a replay re-applies the log without an
engine.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import mesa
import numpy as np

from agents.persona import PersonaAgent
from agents.questions import Question
from simulation.config import ScenarioConfig
from simulation.store import Store

from . import population as pop


@dataclass(frozen=True)
class Item:
    """A questionnaire item. ``text`` may hold {own} / {other} (the agent's party
    and the other party, plural) for partisan scenarios."""

    id: str
    text: str
    options: tuple[str, ...]
    positions: tuple[float, ...] | None = None
    group: str = ""  # scenario-specific tag (e.g. "self", "meta", "ingroup")

    def render(self, agent: PersonaAgent) -> Question:
        own, other = party_names(agent)
        return Question.make(self.id, self.text.format(own=own, other=other), self.options)


PLURAL = {"Democrat": "Democrats", "Republican": "Republicans"}
OTHER = {"Democrat": "Republican", "Republican": "Democrat"}


def party_names(agent) -> tuple[str, str]:
    party = getattr(agent, "party", None)
    if party in OTHER:
        return PLURAL[party], PLURAL[OTHER[party]]
    return "your party", "the other party"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SurveyModel(mesa.Model):
    """Subclasses set ``items()`` and ``evaluate()``; ``select_humans()`` may
    restrict the human sample (e.g. to partisans)."""

    title = "Survey"

    def __init__(
        self,
        cfg: ScenarioConfig,
        engine,
        store: Store,
        run_id: str,
        *,
        progress: Callable | None = None,
    ) -> None:
        super().__init__(seed=cfg.seed)
        self.cfg = cfg
        self.engine = engine
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.study = self.load_study()
        self.populations = pop.build(cfg, engine, store, self.study, progress=progress)
        self.item_list = self.order_items(self.items())
        self.step_index = 0
        self.last_answers: dict[str, list[float]] = {}  # population label -> mean distribution of the current item
        profiles = pop.human_profiles(self.study) if self.study is not None and self.study.is_individual else []
        for p_i, population in enumerate(self.populations):
            for h, persona in enumerate(population.personas):
                agent = PersonaAgent(self, persona, seed=cfg.seed, series=cfg.questionnaire.series)
                agent.condition = population.label
                agent.population = p_i
                agent.human = h if population.matching != "none" else None
                agent.human_profile = profiles[h] if (profiles and agent.human is not None) else (persona.get("profile") or {})
                agent.party = agent.human_profile.get("party")
        self.agent_list: list[PersonaAgent] = sorted(self.agents, key=lambda a: a.unique_id)
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "step": lambda m: m.step_index,
                "item": lambda m: m.item_list[m.step_index - 1].id if m.step_index else "",
                "mean_outside_mass": lambda m: m.mean_outside_mass(),
            },
            agent_reporters={
                "condition": "condition",
                "answer": lambda a: a.answers.get(a.current, {}).get("sampled") if a.current else None,
            },
        )
        self.running = bool(self.item_list)

    # ------------------------------------------------------------ hooks
    def load_study(self):
        if self.cfg.human is None:
            return None
        from analysis.human_data import load_study

        study = load_study(self.cfg.human.study, self.cfg.human.overrides or None)
        study = self.select_humans(study)
        n = self.cfg.human.sample
        if n and study.is_individual and study.n > n:
            rng = np.random.default_rng(self.cfg.seed)
            idx = np.sort(rng.choice(study.n, size=n, replace=False))
            study = study.subset(idx)
        return study

    def select_humans(self, study):
        return study

    def items(self) -> list[Item]:
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Return {"evaluations": [analysis Evaluation...], "tables": {name: DataFrame}}."""
        raise NotImplementedError

    # ------------------------------------------------------------ stepping
    def order_items(self, items: list[Item]) -> list[Item]:
        wanted = self.cfg.questionnaire.questions
        if wanted:
            known = {i.id for i in items}
            missing = [q for q in wanted if q not in known]
            if missing:
                raise ValueError(f"questionnaire.questions: unknown id '{missing[0]}' (known: {', '.join(sorted(known))})")
            items = [i for i in items if i.id in wanted]
        if self.cfg.questionnaire.order == "random":
            order = np.random.default_rng(self.cfg.seed).permutation(len(items))
            items = [items[i] for i in order]
        return items

    @property
    def current_item(self) -> Item | None:
        return self.item_list[self.step_index - 1] if self.step_index else None

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
            requests = [a.ask(q) for a, q in zip(self.agent_list, questions)]
            results = self.engine.option_probs(requests)
            events = []
            for agent, q, req, res in zip(self.agent_list, questions, requests, results):
                ans = agent.receive(q, res)
                events.append(
                    {
                        "kind": "answer",
                        "agent": agent.unique_id,
                        "payload": {
                            **ans,
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
            self.store.log_events(self.run_id, self.step_index, events)
        self.step_index += 1
        self.last_answers = self.population_distributions(item.id)
        self.datacollector.collect(self)
        if self.step_index >= len(self.item_list):
            self.running = False

    # ------------------------------------------------------------ views
    def agents_of(self, p_i: int) -> list[PersonaAgent]:
        return [a for a in self.agent_list if a.population == p_i]

    def population_distributions(self, item_id: str) -> dict[str, list[float]]:
        out = {}
        for p_i, population in enumerate(self.populations):
            rows = [a.answers[item_id]["probs"] for a in self.agents_of(p_i) if item_id in a.answers]
            if rows:
                out[population.label] = np.mean(np.array(rows), axis=0).tolist()
        return out

    def mean_outside_mass(self) -> float:
        item = self.current_item
        if item is None:
            return 0.0
        vals = [a.answers[item.id]["outside_mass"] for a in self.agent_list if item.id in a.answers]
        return float(np.mean(vals)) if vals else 0.0

    def answer_arrays(self, p_i: int, item_ids: list[str], n_options: int) -> tuple[np.ndarray, np.ndarray]:
        """Per agent of population ``p_i`` (human order): ``[N, Q, K]`` distributions
        and ``[N, Q]`` sampled indices."""
        agents = self.agents_of(p_i)
        probs = np.zeros((len(agents), len(item_ids), n_options))
        sampled = np.full((len(agents), len(item_ids)), -1, dtype=np.int64)
        for r, a in enumerate(agents):
            for c, qid in enumerate(item_ids):
                ans = a.answers.get(qid)
                if ans:
                    p = np.asarray(ans["probs"])
                    probs[r, c, : len(p)] = p
                    sampled[r, c] = ans["sampled"]
        return probs, sampled


class StudySurveyModel(SurveyModel):
    """Ask the human study's own questions and score personas against the
    respondents they stand for (the Anthology pipeline)."""

    def items(self) -> list[Item]:
        return [Item(q.id, q.text, tuple(q.options), tuple(q.positions)) for q in self.study.questions]

    def human_distributions(self) -> dict:
        return {k: v.tolist() for k, v in self.study.distributions().items()} if self.study is not None else {}

    def running_metrics(self) -> list[tuple[str, str]]:
        """Mean WD so far per condition (persona mean distribution vs the humans'),
        for the live console; the report computes the weighted, exact figures."""
        from analysis.metrics import wasserstein

        human = self.human_distributions()
        done = [i.id for i in self.item_list[: self.step_index] if i.id in human]
        if not done:
            return []
        sums: dict[str, list[float]] = {}
        for qid in done:
            for label, probs in self.population_distributions(qid).items():
                sums.setdefault(label, []).append(wasserstein(np.asarray(human[qid]), np.asarray(probs)))
        return [(label, f"{np.mean(v):.3f} over {len(v)} items") for label, v in sums.items()]

    def evaluate(self) -> dict:
        from analysis.lower_bound import human_lower_bound
        from analysis.subgroups import PersonaAnswers, evaluate

        study = self.study.select([i.id for i in self.item_list]) if self.study is not None else None
        if study is None:
            return {"evaluations": [], "tables": {}}
        qids = study.question_ids
        k = max(q.n_options for q in study.questions)
        lb = human_lower_bound(study, n_splits=self.cfg.human.lower_bound_splits, seed=self.cfg.seed) if study.is_individual else None
        evaluations = []
        for p_i, population in enumerate(self.populations):
            probs, sampled = self.answer_arrays(p_i, qids, k)
            evaluations.append(
                evaluate(
                    study,
                    PersonaAnswers(probs=probs, sampled=sampled),
                    None,
                    condition=population.condition,
                    matching=population.matching,
                    subgroups=self.cfg.human.subgroups or None,
                    lower_bound=lb if lb is not None else False,
                    seed=self.cfg.seed,
                )
            )
        return {"evaluations": evaluations, "tables": {}}
