"""Building the persona populations a scenario compares: one per condition.

* Generated conditions (anthology, interview) and imported banks: personas are
  generated (or read) into a bank, surveyed on the human study's demographic
  questions, and matched to the humans (greedy / max-weight / random).
* Rule-based conditions (qa, bio, portray): one persona per human, from that
  human's demographic answers; no matching ("n/a").

Either way the result pairs every human with a persona, so the scenario can
ask one agent per (condition, matching, human) and score it against that human.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents import bank as banks
from agents import demographics as demo
from agents.llm.base import Engine
from simulation.config import ScenarioConfig
from simulation.store import Store


@dataclass
class Population:
    condition: str
    matching: str | None  # None for rule-based conditions (one persona per human)
    personas: list[dict]  # the persona of each human, in human order
    match: object | None = None  # analysis.matching.MatchResult
    demographics: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.condition} ({self.matching})" if self.matching else self.condition


def bank_name(cfg: ScenarioConfig, condition: str) -> str:
    """Banks are shared across scenarios: the same engine, method, size-free
    generation settings and seed give the same personas."""
    fp = cfg.engine.fingerprint()
    model = fp["model"].replace("/", "_")
    if condition in banks.GENERATED:
        bs = cfg.population.backstories
        tag = f"t{bs.temperature}-m{bs.max_tokens}" + ("-cit" if bs.citizenship_filter else "")
        if condition == "interview":
            tag += f"-q{bs.interview_questions}" + ("-critic" if bs.critic else "")
        return f"{condition}-{model}-{tag}-s{cfg.seed}"
    return condition


def human_profiles(study) -> list[dict]:
    """Each human's demographics as labels (refusals left out)."""
    codes = study.trait_codes()
    out = []
    for h in range(study.n):
        prof = {}
        for t in study.traits:
            c = int(codes[t.name][h])
            if c >= 0:
                prof[t.name] = t.options[c]
        out.append(prof)
    return out


def survey_traits(study) -> list[demo.TraitQuestion]:
    return [demo.TraitQuestion(t.name, t.question, tuple(t.options)) for t in study.traits]


def survey_name(study) -> str:
    return study.name


def persona_trait_probs(personas: list[dict], surveyed: dict, traits: list[demo.TraitQuestion]) -> dict[str, np.ndarray]:
    return {
        t.trait: np.array([demo.without_refusal(surveyed[p["persona_id"]][t.trait]) for p in personas]) for t in traits
    }


def build(
    cfg: ScenarioConfig,
    engine: Engine,
    store: Store,
    study,
    *,
    progress=None,
) -> list[Population]:
    from analysis.matching import match_study

    pops: list[Population] = []
    for condition in cfg.population.conditions:
        name = bank_name(cfg, condition)
        if condition in ("qa", "bio", "portray"):
            if study is None:
                raise ValueError(f"population.conditions: '{condition}' needs a human study to take profiles from (set human.study)")
            people = banks.from_profiles(store, f"{condition}-{study.name}", condition, human_profiles(study))
            by_idx = {p["idx"]: p for p in people}
            pops.append(Population(condition, None, [by_idx[h] for h in range(study.n)]))
            continue
        if condition == "imported":
            if not cfg.population.import_path:
                raise ValueError("population.import_path: required for the 'imported' condition (a JSONL file)")
            name = f"imported-{cfg.name}"
            banks.import_jsonl(store, name, cfg.population.import_path)
            people = banks.usable(store, name)
        else:
            cb = (lambda done, total, c=condition: progress(f"backstories: {c}", done, total)) if progress else None
            people = banks.generate(engine, store, name, condition, cfg.population.size, seed=cfg.seed, params=cfg.population.backstories.params(), progress=cb)
            people = people[: cfg.population.size]
        if not people:
            raise ValueError(f"population: no usable personas for condition '{condition}' (all rejected?)")
        if study is None:
            pops.append(Population(condition, "none", people))
            continue
        traits = survey_traits(study)
        if progress:
            progress(f"demographic survey: {condition}", 0, len(people))
        surveyed = demo.survey(engine, store, people, traits, survey_name(study), method=cfg.population.demographics)
        if progress:
            progress(f"demographic survey: {condition}", len(people), len(people))
        probs = persona_trait_probs(people, surveyed, traits)
        for method in cfg.matching:
            if method == "max_weight" and len(people) < study.n:
                raise ValueError(
                    f"matching: max_weight needs at least as many personas as humans ({len(people)} < {study.n}); "
                    "raise population.size or lower human.sample"
                )
            result = match_study(study, probs, method, seed=cfg.seed)
            pops.append(Population(condition, method, [people[int(v)] for v in result.persona_index], match=result, demographics=probs))
    return pops
