"""Building the persona populations a scenario compares: one per condition.

* Generated conditions (anthology, interview) and imported banks: personas are
  generated (or read) into a bank, surveyed on the human study's demographic
  questions, and matched to the humans (greedy / max-weight / random).
* Rule-based conditions (qa, bio, portray): one persona per human, from that
  human's demographic answers; no matching ("n/a").
* Anthology (DP): one Anthology backstory per human, its prompt carrying that
  human's demographics; bound to that human, no matching ("n/a").
* Generative Agent: expert reflections over generated backstories (the
  ``population.generative_agent.source`` bank), matched like the generated
  conditions; its agents reason before each answer.
* "Ours" is the interview condition: long interviews and the consistency critic.

Either way the result pairs every human with a persona, so the scenario can
ask one agent per (condition, matching, human) and score it against that human.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from agents import bank as banks
from agents import demographics as demo
from agents import generative_agent as ga
from agents.llm.base import Engine
from agents.persona import PersonaAgent
from analysis.matching import available_memory, max_weight_bytes
from core.persona_record import PersonaRecord
from core.store import Store
from scenarios.config import ConfigError, ScenarioConfig


@dataclass
class Population:
    condition: str
    matching: str | None  # None for rule-based conditions (one persona per human)
    personas: list[PersonaRecord]  # the persona of each human, in human order
    match: object | None = None  # analysis.matching.MatchResult
    demographics: dict = field(default_factory=dict)
    agent_class: object = PersonaAgent  # what the scenario builds for each persona

    @property
    def label(self) -> str:
        return f"{self.condition} ({self.matching})" if self.matching else self.condition

    def critic_shares(self) -> tuple[float, float]:
        """(share of personas the consistency critic flagged, share of the
        flagged ones its revisions fixed); NaN when there is nothing to count."""
        reviews = [c for p in self.personas for c in (p.critic or []) if isinstance(c, dict) and c.get("check") == "consistency"]
        flagged = [r for r in reviews if r["flagged"]]
        return (
            float(np.mean([r["flagged"] for r in reviews])) if reviews else float("nan"),
            float(np.mean([r["fixed"] for r in flagged])) if flagged else float("nan"),
        )


def bank_name(cfg: ScenarioConfig, condition: str) -> str:
    """Banks are shared across scenarios: the same engine, method, size-free
    generation settings and seed give the same personas."""
    fp = cfg.engine.fingerprint()
    model = fp["model"].replace("/", "_")
    if condition == "generative_agent":
        g = cfg.population.generative_agent
        return f"ga-{'+'.join(g.experts)}-r{g.reflection_tokens}-of-{bank_name(cfg, g.source)}"
    if condition in banks.GENERATED:
        bs = cfg.population.backstories
        tag = f"t{bs.temperature}-m{bs.max_tokens}" + ("-cit" if bs.citizenship_filter and condition == "anthology" else "")
        tag += "-plain" if bs.anthology_prompt == "plain" and condition != "interview" else ""  # the cued prompt keeps its historical name
        if condition == "interview":
            p = bs.params()
            budget = "-".join(str(b) for b in p.budgets())
            tag = f"t{bs.temperature}-q{bs.interview_questions}-b{budget}" + ("-fmt" if bs.critic else "") + (f"-cc{bs.consistency_rounds}@{bs.consistency_threshold}x{bs.consistency_max_flags}" if bs.consistency_rounds else "")
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


def persona_trait_probs(store: Store, personas: list[PersonaRecord], traits: list[demo.TraitQuestion], survey: str,
                        chunk: int = demo.CHUNK) -> dict[str, np.ndarray]:
    """Trait -> ``[personas, options]`` surveyed probabilities (refusal dropped),
    read from the store ``chunk`` personas at a time: holding the whole survey as
    Python lists cost ~3 KB per persona (31 MB at 10,000, measured)."""
    rows: dict[str, list[np.ndarray]] = {t.trait: [] for t in traits}
    for start in range(0, len(personas), max(1, chunk)):
        part = personas[start : start + max(1, chunk)]
        surveyed = store.demographics([p.persona_id for p in part], survey)
        for t in traits:
            rows[t.trait].append(np.array([demo.without_refusal(surveyed[p.persona_id][t.trait]) for p in part]))
    return {trait: np.concatenate(r) if r else np.array([]) for trait, r in rows.items()}


def check_files(cfg: ScenarioConfig) -> None:
    """Files the populations read, present before any work."""
    if "imported" in cfg.population.conditions:
        path = cfg.population.import_path
        if not path:
            raise ConfigError("population.import_path: required for the 'imported' condition (a JSONL file)")
        if not Path(path).is_file():
            raise ConfigError(f"population.import_path: {path}: file not found (expected a JSONL file of backstories)")


def check_sizes(cfg: ScenarioConfig, study) -> None:
    """The humans a run needs at its size, once the study is loaded and before
    any LLM call: for max-weight matching, at least as many personas requested
    as humans, and the memory its weight matrix needs, available now. Hours of
    generation must not end in an out-of-memory at the matching step."""
    if study is None:
        return  # (too few respondents for human.sample: the study loader says so)
    generated = [c for c in cfg.population.conditions if c in ("anthology", "interview", "generative_agent")]
    if not (study.is_individual and "max_weight" in cfg.matching and generated):
        return
    size = cfg.population.size if cfg.population.per_human is None else cfg.population.per_human * study.n
    if cfg.population.per_human is None and size < study.n:
        raise ConfigError(
            f"matching: max_weight needs at least as many personas as humans (population.size {size} < {study.n} humans); "
            "raise population.size or lower human.sample"
        )
    need = max_weight_bytes(study.n, size)
    available = available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f"matching: max_weight holds a {study.n} x {size} weight matrix ({need / 2**30:.1f} GB) and this machine has "
            f"{available / 2**30:.1f} GB available; use greedy, lower population.size or human.sample, or run it on a larger machine"
        )


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
    size = cfg.population.size
    if cfg.population.per_human is not None:
        if study is None:
            raise ConfigError("population.per_human: needs a human study (set human.study) or use population.size")
        size = cfg.population.per_human * study.n
    for condition in cfg.population.conditions:
        name = bank_name(cfg, condition)
        agent_class = PersonaAgent
        if condition == "anthology_dp":
            if study is None:
                raise ConfigError("population.conditions: 'anthology_dp' needs a human study to take profiles from (set human.study)")
            cb = (lambda done, total: progress("backstories: anthology_dp", done, total)) if progress else None
            banks.generate(engine, store, f"{name}-{study.name}", "anthology_dp", study.n, seed=cfg.seed, params=cfg.population.backstories.params(), progress=cb, profiles=human_profiles(study), chunk=cfg.population.chunk)
            by_idx = {p.idx: p for p in banks.usable(store, f"{name}-{study.name}")}
            pops.append(Population(condition, None, [by_idx[h] for h in range(study.n)]))
            continue
        if condition in ("qa", "bio", "portray"):
            if study is None:
                raise ConfigError(f"population.conditions: '{condition}' needs a human study to take profiles from (set human.study)")
            people = banks.from_profiles(store, f"{condition}-{study.name}", condition, human_profiles(study))
            by_idx = {p.idx: p for p in people}
            pops.append(Population(condition, None, [by_idx[h] for h in range(study.n)]))
            continue
        if condition == "imported":
            if not cfg.population.import_path:
                raise ConfigError("population.import_path: required for the 'imported' condition (a JSONL file)")
            name = f"imported-{cfg.name}"
            banks.import_jsonl(store, name, cfg.population.import_path)
            people = banks.usable(store, name)
        elif condition == "generative_agent":
            people = _generative_agents(cfg, engine, store, size, progress)
            g = cfg.population.generative_agent
            agent_class = partial(ga.GenerativeAgent, reasoning_tokens=g.reasoning_tokens, reasoning_temperature=g.temperature)
        else:
            cb = (lambda done, total, c=condition: progress(f"backstories: {c}", done, total)) if progress else None
            people = banks.generate(engine, store, name, condition, size, seed=cfg.seed, params=cfg.population.backstories.params(), progress=cb, chunk=cfg.population.chunk)
            people = people[:size]
        if not people:
            raise ConfigError(f"population: no usable personas for condition '{condition}' (all rejected?)")
        if study is None or not (study.is_individual or study.traits):
            pops.append(Population(condition, "none", people, agent_class=agent_class))
            continue
        traits = survey_traits(study)
        cb = (lambda done, total, c=condition: progress(f"demographic survey: {c}", done, total)) if progress else None
        demo.survey_missing(engine, store, people, traits, survey_name(study), method=cfg.population.demographics,
                            chunk=cfg.population.chunk, progress=cb)
        probs = persona_trait_probs(store, people, traits, survey_name(study), cfg.population.chunk)
        if not study.is_individual:  # aggregate counts: no respondents to match; the survey places personas in subgroups
            pops.append(Population(condition, "none", people, demographics=probs, agent_class=agent_class))
            continue
        for method in cfg.matching:
            if method == "max_weight" and len(people) < study.n:
                raise ConfigError(
                    f"matching: max_weight needs at least as many personas as humans ({len(people)} < {study.n}); "
                    "raise population.size or lower human.sample"
                )
            result = match_study(study, probs, method, seed=cfg.seed)
            pops.append(Population(condition, method, [people[int(v)] for v in result.persona_index], match=result, demographics=probs, agent_class=agent_class))
    return pops


def _generative_agents(cfg: ScenarioConfig, engine: Engine, store: Store, size: int, progress=None) -> list[PersonaRecord]:
    """Generative Agent personas over the source bank (generated first if
    needed); stored as their own bank, so a re-run reads them back."""
    g = cfg.population.generative_agent
    name = bank_name(cfg, "generative_agent")
    have = {p.idx: p for p in banks.usable(store, name)}
    cb = (lambda done, total: progress(f"backstories: {g.source}", done, total)) if progress else None
    sources = banks.generate(engine, store, bank_name(cfg, g.source), g.source, size, seed=cfg.seed, params=cfg.population.backstories.params(), progress=cb, chunk=cfg.population.chunk)[:size]
    todo = [p for p in sources if p.idx not in have]
    if todo:
        settings = ga.GenerativeAgentSettings(tuple(g.experts), g.reflection_tokens, g.reasoning_tokens, g.temperature)
        step = cfg.population.chunk
        for start in range(0, len(todo), step):  # one batch and one commit per chunk
            if progress:
                progress("expert reflections", start, len(todo))
            store.put_personas(ga.personas_from(engine, todo[start : start + step], name, settings))
        if progress:
            progress("expert reflections", len(todo), len(todo))
    by_idx = {p.idx: p for p in banks.usable(store, name)}
    return [by_idx[p.idx] for p in sources]


def critic_and_spread(model) -> pd.DataFrame:
    """Per population: the consistency critic's shares (flagged, fixed) and the
    spread of the sampled answers. ``answer_variance``: mean over items of the
    variance of the sampled option positions rescaled to [0, 1]
    (``Var[(s - 1) / (K - 1)]``); ``extreme_share``: share of sampled answers at
    the first or last option (the talk: the Generative Agent "rarely produces
    extreme responses"). ``backstory_words``: mean realized words each persona
    wrote in its backstory or interview (agents.backstories.answer_words; the
    interview's length setting is only a budget)."""
    from agents.backstories import answer_words

    rows = []
    for p_i, population in enumerate(model.populations):
        flagged, fixed = population.critic_shares()
        variances, extremes = [], []
        for item in model.item_list:
            pos = [a.answers[item.id].sampled / max(1, len(a.answers[item.id].probs) - 1) for a in model.agents_of(p_i) if item.id in a.answers]
            if len(pos) > 1:
                variances.append(float(np.var(pos)))
            extremes += [x in (0.0, 1.0) for x in pos]
        rows.append(
            {
                "condition": population.label,
                "personas": len(population.personas),
                "backstory_words": float(np.mean([answer_words(p.conditioning or "") for p in population.personas])) if population.personas else float("nan"),
                "critic_flagged": flagged,
                "critic_fixed": fixed,
                "answer_variance": float(np.mean(variances)) if variances else float("nan"),
                "extreme_share": float(np.mean(extremes)) if extremes else float("nan"),
            }
        )
    return pd.DataFrame(rows)
