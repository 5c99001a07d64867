"""Demographic survey of personas: each trait asked as a multiple-choice
question with a refusal option; the full probability vector is kept.

By default the distribution is read from the option-letter probabilities
(exact, one forward pass per trait) and averaged over the forward and reversed
option orders, which cancels the small models' strong bias toward the first
letter. ``method="sample"`` instead samples ``n`` answers at temperature 1 and
counts them, as the Anthology code does (40 samples per trait).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from core.persona_record import PersonaRecord
from core.seeds import derive_seed

from .llm.base import Engine, SampleRequest, option_letters
from .questions import Question, display_order, map_back, option_request

REFUSAL = "Prefer not to answer"
SURVEY_INSTRUCTION = "Please answer the following question about yourself."


class DemographicsStore(Protocol):
    """What the survey needs of a store (``core.store.Store`` is one); the
    caller passes it in, so agents never import the layers above them."""

    def demographics(self, persona_ids: list[str], survey: str) -> dict[str, dict[str, list[float]]]: ...
    def put_demographics(self, rows: list[dict]) -> None: ...


@dataclass(frozen=True)
class TraitQuestion:
    trait: str
    question: str
    options: tuple[str, ...]  # without the refusal option

    def asked(self) -> Question:
        return Question.make(self.trait, self.question, [*self.options, REFUSAL])


def default_traits() -> list[TraitQuestion]:
    """Pew ATP wave 92's demographic questions (Anthology's maps) plus ideology."""
    path = Path(__file__).resolve().parent.parent / "data" / "anthology_atp" / "ATP_W92_demographic_questions.json"
    data = json.loads(path.read_text())
    names = {"political_affiliation": "party"}
    out = []
    for spec in data.values():
        opts = [o for o in spec["choices"].values() if "refused" not in o.lower()]
        out.append(TraitQuestion(names.get(spec["topic"], spec["topic"]), spec["question_body"], tuple(opts)))
    out.append(
        TraitQuestion(
            "ideology",
            "In general, would you describe your political views as...",
            ("Very conservative", "Conservative", "Moderate", "Liberal", "Very liberal"),
        )
    )
    return out


# Personas surveyed per engine batch (and per commit to the store): memory
# grows with this, not with the population (scenarios pass population.chunk).
CHUNK = 256


def survey(engine: Engine, store: DemographicsStore, personas: list[PersonaRecord], traits: list[TraitQuestion], survey_name: str,
           **options) -> dict[str, dict[str, list[float]]]:
    """:func:`survey_missing`, then every persona's answers read back:
    ``{persona_id: {trait: probs over options + refusal}}`` (a population of
    any size reads them per chunk instead: ``scenarios.population``)."""
    survey_missing(engine, store, personas, traits, survey_name, **options)
    return store.demographics([p.persona_id for p in personas], survey_name)


def survey_missing(
    engine: Engine,
    store: DemographicsStore,
    personas: list[PersonaRecord],
    traits: list[TraitQuestion],
    survey_name: str,
    *,
    method: str = "probs",
    n_samples: int = 40,
    orders: tuple[bool, ...] = (False, True),
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Survey every persona not yet surveyed on every trait and store the answers
    (``method`` "probs": the option distribution in both orders; "sample":
    ``n_samples`` sampled answers). What is stored is checked ``chunk`` personas
    at a time, so a population of any size never holds all its answers (as
    Python lists, ~3 KB per persona on ATP W34's traits).

    Personas are surveyed ``chunk`` at a time, each chunk one engine batch
    whose answers are committed (engine cache, then the demographics table)
    before the next chunk is built: a killed survey loses at most one chunk,
    and only the chunk's requests are ever held in memory."""
    if method not in ("probs", "sample"):
        raise ValueError(f"demographics.method: '{method}' (expected 'probs' or 'sample')")
    step = max(1, chunk)
    wanted = {t.trait for t in traits}
    todo = []
    for start in range(0, len(personas), step):
        part = personas[start : start + step]
        have = store.demographics([p.persona_id for p in part], survey_name)
        todo += [p for p in part if set(have.get(p.persona_id, {})) != wanted]
    done = len(personas) - len(todo)
    if progress:
        progress(done, len(personas))
    for start in range(0, len(todo), step):
        part = todo[start : start + step]
        if method == "probs":
            rows = _survey_by_probs(engine, part, traits, survey_name, orders)
        else:
            rows = _survey_by_sampling(engine, part, traits, survey_name, n_samples)
        store.put_demographics(rows)
        done += len(part)
        if progress:
            progress(done, len(personas))


def _survey_by_probs(engine: Engine, personas: list[PersonaRecord], traits: list[TraitQuestion], survey_name: str, orders: tuple[bool, ...]) -> list[dict]:
    reqs, where = [], []
    for p in personas:
        for t in traits:
            q = t.asked()
            for rev in orders:
                order = display_order(len(q.options), rev)
                reqs.append(option_request(p.conditioning, q, order, SURVEY_INSTRUCTION))
                where.append((p.persona_id, t, order))
    results = engine.option_probs(reqs)
    acc: dict[tuple[str, str], np.ndarray] = {}
    for (pid, t, order), res in zip(where, results):
        acc[(pid, t.trait)] = acc.get((pid, t.trait), 0) + map_back(res.probs, order) / len(orders)
    by_name = {t.trait: t for t in traits}
    return [
        {"persona_id": pid, "survey": survey_name, "trait": trait, "options": [*by_name[trait].options, REFUSAL],
         "probs": [round(float(x), 8) for x in probs], "method": "logprobs"}
        for (pid, trait), probs in acc.items()
    ]


def sample_request(prompt: str, prefix_len: int, persona_id: str, trait: str, n: int) -> SampleRequest:
    """The ``n`` one-answer samples of one survey prompt, seeded by persona and
    trait: one request (one stored answer; one ``n``-sample call to a server)."""
    return SampleRequest(prompt=prompt, n=n, max_tokens=2, temperature=1.0, seed=derive_seed(persona_id, trait), prefix_len=prefix_len)


def _survey_by_sampling(engine: Engine, personas: list[PersonaRecord], traits: list[TraitQuestion], survey_name: str, n: int) -> list[dict]:
    reqs, where = [], []
    for p in personas:
        for t in traits:
            q = t.asked()
            order = display_order(len(q.options), False)
            req = option_request(p.conditioning, q, order, SURVEY_INSTRUCTION)
            reqs.append(sample_request(req.prompt, len(req.prefix), p.persona_id, t.trait, n))
            where.append((p.persona_id, t))
    rows = []
    for (pid, t), samples in zip(where, engine.sample(reqs)):
        letters = option_letters(len(t.options) + 1)
        c = np.zeros(len(letters))
        for g in samples:
            m = re.match(r"\s*\(?([A-Z])", g.text)
            if m and m.group(1) in letters:
                c[letters.index(m.group(1))] += 1
        probs = c / c.sum() if c.sum() else np.full(len(c), 1 / len(c))
        rows.append({"persona_id": pid, "survey": survey_name, "trait": t.trait, "options": [*t.options, REFUSAL], "probs": probs.round(8).tolist(), "method": f"sampling:{n}"})
    return rows


def without_refusal(probs) -> np.ndarray:
    """Drop the refusal option (last) and renormalise, for matching."""
    p = np.asarray(probs, dtype=float)[:-1]
    s = p.sum()
    return p / s if s > 0 else np.full(len(p), 1 / len(p))
