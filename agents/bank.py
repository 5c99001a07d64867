"""The persona bank: personas stored in the SQLite store, generated in batches
(resumable), imported from and exported to JSONL.

A persona record (:class:`core.persona_record.PersonaRecord`)::

    persona_id  "<bank>:<idx>"
    bank, idx   the bank it belongs to and its position there
    method      anthology | interview | anthology_dp | generative_agent | qa | bio | portray | imported
    conditioning the text every question is asked after
    model       the engine fingerprint that generated it ("rule-based" for baselines)
    prompts     the prompts used (interview: questions, per-answer token budgets and
                generated lengths; generative_agent: source persona, experts, reflections);
                params: sampling parameters; seed
    critic      interview: per-answer format verdicts, then one {"check": "consistency"}
                record (verdicts per round, revisions, flagged, fixed; agents.critic);
                anthology: citizenship filter results
    profile     the demographic profile it was built from (baselines, anthology_dp), if any
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Protocol

from core.canonical import dumps
from core.errors import PersonaeError
from core.persona_record import PersonaRecord
from core.seeds import derive_seed

from . import backstories, baselines
from .backstories import Draft, GenerationParams
from .llm.base import Engine

GENERATED = ("anthology", "interview", "anthology_dp")
METHODS = GENERATED + baselines.METHODS + ("imported",)
EXPORT_FIELDS = ("id", "method", "conditioning", "model", "prompts", "params", "seed", "critic", "profile")


class PersonaStore(Protocol):
    """What a bank needs of a store (``core.store.Store`` is one); the
    caller passes it in, so agents never import the layers above them."""

    def personas(self, bank: str) -> list[PersonaRecord]: ...
    def persona_indices(self, bank: str) -> set[int]: ...
    def put_personas(self, rows: list[PersonaRecord]) -> None: ...


class BankError(PersonaeError, ValueError):
    """Bad persona input; the message is one line naming file, line and field."""


def persona_id(bank: str, idx: int) -> str:
    return f"{bank}:{idx}"


def generate(
    engine: Engine,
    store: PersonaStore,
    bank: str,
    method: str,
    n: int,
    *,
    seed: int = 0,
    params: GenerationParams | None = None,
    chunk: int = 8,
    progress: Callable[[int, int], None] | None = None,
    profiles: list[dict] | None = None,
) -> list[PersonaRecord]:
    """Generate ``n`` personas into ``bank`` (skipping those already there).

    ``anthology_dp``: one backstory per profile (``n = len(profiles)``), its
    prompt carrying that respondent's demographics; persona ``idx`` is the
    respondent's index (no citizenship filter: the profile fixes who it is).

    Personas are written chunk by chunk, so a killed run keeps finished chunks;
    the chunk in flight is redone from the response store without LLM calls.
    """
    if method not in GENERATED:
        raise BankError(f"population.method: '{method}' cannot be generated (expected one of {', '.join(GENERATED)})")
    params = params or GenerationParams()
    if method == "anthology_dp":
        if profiles is None:
            raise BankError("population.conditions: 'anthology_dp' needs the respondents' demographic profiles (set human.study)")
        n = len(profiles)
        params = replace(params, citizenship_filter=False)
    have = store.persona_indices(bank)  # not the texts: a resume at 40k personas reads only indices
    todo = [i for i in range(n) if i not in have]
    done = n - len(todo)
    if progress:
        progress(done, n)
    model = dumps(getattr(engine, "fingerprint")())
    for start in range(0, len(todo), chunk):
        drafts = [Draft(idx=i, seed=derive_seed(seed, bank, i), profile=profiles[i] if profiles else None) for i in todo[start : start + chunk]]
        if method in ("anthology", "anthology_dp"):
            backstories.anthology(engine, drafts, params)
        else:
            backstories.interview(engine, drafts, params)

        def row(d: Draft, method: str, text: str) -> PersonaRecord:
            return PersonaRecord(
                persona_id=persona_id(bank, d.idx),
                bank=bank,
                idx=d.idx,
                method=method,
                conditioning=text,
                model=model,
                prompts=d.prompts,
                params=asdict(params),
                seed=d.seed,
                critic=d.critic,
                profile=d.profile,
            )

        # A rejected draft (citizenship filter) still takes its index, recorded
        # with empty conditioning, so a resume does not retry it forever.
        rows = [row(d, "rejected", "") if d.rejected else row(d, method, d.conditioning) for d in drafts if d.done or d.rejected]
        store.put_personas(rows)
        done += len(drafts)
        if progress:
            progress(done, n)
    return usable(store, bank)


def usable(store: PersonaStore, bank: str) -> list[PersonaRecord]:
    return [p for p in store.personas(bank) if p.method != "rejected" and p.has_text]


def from_profiles(store: PersonaStore, bank: str, method: str, profiles: list[dict]) -> list[PersonaRecord]:
    """Rule-based personas (QA / Bio / Portray), one per profile, in order."""
    rows = [
        PersonaRecord(
            persona_id=persona_id(bank, i),
            bank=bank,
            idx=i,
            method=method,
            conditioning=baselines.render(method, prof),
            model="rule-based",
            prompts=None,
            params=None,
            seed=0,
            critic=None,
            profile=prof,
        )
        for i, prof in enumerate(profiles)
    ]
    store.put_personas(rows)
    return store.personas(bank)


def _record_to_export(p: PersonaRecord) -> dict:
    """The JSONL line's object (``EXPORT_FIELDS``: the record's fields, ``id``
    without the bank, no ``bank``, ``idx`` or ``created``)."""
    return {
        "id": p.persona_id.split(":", 1)[1],
        "method": p.method,
        "conditioning": p.conditioning,
        "model": p.model,
        "prompts": p.prompts,
        "params": p.params,
        "seed": p.seed,
        "critic": p.critic,
        "profile": p.profile,
    }


def export_jsonl(store: PersonaStore, bank: str, path: str | Path) -> int:
    """One canonical JSON object per line (sorted keys), so import -> export
    reproduces a file byte for byte."""
    people = store.personas(bank)
    with open(path, "w", encoding="utf-8") as f:
        for p in people:
            f.write(dumps(_record_to_export(p)) + "\n")
    return len(people)


def import_jsonl(store: PersonaStore, bank: str, path: str | Path) -> int:
    """Import personas from JSONL. All-or-nothing: every line is validated
    before anything is written, so a bad line leaves the store unchanged."""
    path = Path(path)
    if not path.exists():
        raise BankError(f"{path}: file not found")
    rows: list[PersonaRecord] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BankError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(rec, dict):
                raise BankError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            text = rec.get("conditioning")
            if not isinstance(text, str) or not text.strip():
                raise BankError(f"{path}:{lineno}: field 'conditioning': expected a non-empty string")
            unknown = set(rec) - set(EXPORT_FIELDS)
            if unknown:
                raise BankError(f"{path}:{lineno}: unknown field(s) {sorted(unknown)} (expected some of {list(EXPORT_FIELDS)})")
            seed = rec.get("seed", 0)
            if not isinstance(seed, int):
                raise BankError(f"{path}:{lineno}: field 'seed': expected an integer")
            profile = rec.get("profile")
            if profile is not None and not isinstance(profile, dict):
                raise BankError(f"{path}:{lineno}: field 'profile': expected an object mapping trait to category")
            idx = len(rows)
            pid = rec.get("id", str(idx))
            if not isinstance(pid, str) or not pid:
                raise BankError(f"{path}:{lineno}: field 'id': expected a non-empty string")
            if persona_id(bank, pid) in seen:
                raise BankError(f"{path}:{lineno}: field 'id': '{pid}' repeats an earlier line")
            seen.add(persona_id(bank, pid))
            rows.append(
                PersonaRecord(
                    persona_id=persona_id(bank, pid),
                    bank=bank,
                    idx=idx,
                    method=rec.get("method", "imported"),
                    conditioning=text,
                    model=rec.get("model"),
                    prompts=rec.get("prompts"),
                    params=rec.get("params"),
                    seed=seed,
                    critic=rec.get("critic"),
                    profile=profile,
                )
            )
    if not rows:
        raise BankError(f"{path}: no personas (the file is empty)")
    store.put_personas(rows)
    return len(rows)
