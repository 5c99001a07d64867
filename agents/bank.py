"""The persona bank: personas stored in the SQLite store, generated in batches
(resumable), imported from and exported to JSONL.

A persona record::

    persona_id  "<bank>:<idx>"
    bank, idx   the bank it belongs to and its position there
    method      anthology | interview | qa | bio | portray | imported
    conditioning the text every question is asked after
    model       the engine fingerprint that generated it ("rule-based" for baselines)
    prompts     the prompts used; params: sampling parameters; seed
    critic      critic verdicts (interview) / citizenship filter results (anthology)
    profile     the demographic profile it was built from (baselines), if any
"""
from __future__ import annotations

from core.errors import PersonaeError

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from simulation.store import Store, dumps

from . import backstories, baselines
from .backstories import Draft, GenerationParams, derive_seed
from .llm.base import Engine

GENERATED = ("anthology", "interview")
METHODS = GENERATED + baselines.METHODS + ("imported",)
EXPORT_FIELDS = ("id", "method", "conditioning", "model", "prompts", "params", "seed", "critic", "profile")


class BankError(PersonaeError, ValueError):
    """Bad persona input; the message is one line naming file, line and field."""


def persona_id(bank: str, idx: int) -> str:
    return f"{bank}:{idx}"


def generate(
    engine: Engine,
    store: Store,
    bank: str,
    method: str,
    n: int,
    *,
    seed: int = 0,
    params: GenerationParams | None = None,
    chunk: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Generate ``n`` personas into ``bank`` (skipping those already there).

    Personas are written chunk by chunk, so a killed run keeps finished chunks;
    the chunk in flight is redone from the response store without LLM calls.
    """
    if method not in GENERATED:
        raise BankError(f"population.method: '{method}' cannot be generated (expected one of {', '.join(GENERATED)})")
    params = params or GenerationParams()
    have = {p["idx"] for p in store.personas(bank)}
    todo = [i for i in range(n) if i not in have]
    done = n - len(todo)
    if progress:
        progress(done, n)
    model = dumps(getattr(engine, "fingerprint")())
    for start in range(0, len(todo), chunk):
        drafts = [Draft(idx=i, seed=derive_seed(seed, bank, i)) for i in todo[start : start + chunk]]
        if method == "anthology":
            backstories.anthology(engine, drafts, params)
        else:
            backstories.interview(engine, drafts, params)

        def row(d: Draft, method: str, text: str) -> dict:
            return {
                "persona_id": persona_id(bank, d.idx),
                "bank": bank,
                "idx": d.idx,
                "method": method,
                "conditioning": text,
                "model": model,
                "prompts": d.prompts,
                "params": asdict(params),
                "seed": d.seed,
                "critic": d.critic,
                "profile": None,
            }

        # A rejected draft (citizenship filter) still takes its index, recorded
        # with empty conditioning, so a resume does not retry it forever.
        rows = [row(d, "rejected", "") if d.rejected else row(d, method, d.conditioning) for d in drafts if d.done or d.rejected]
        store.put_personas(rows)
        done += len(drafts)
        if progress:
            progress(done, n)
    return usable(store, bank)


def usable(store: Store, bank: str) -> list[dict]:
    return [p for p in store.personas(bank) if p["method"] != "rejected" and p["conditioning"]]


def from_profiles(store: Store, bank: str, method: str, profiles: list[dict]) -> list[dict]:
    """Rule-based personas (QA / Bio / Portray), one per profile, in order."""
    rows = [
        {
            "persona_id": persona_id(bank, i),
            "bank": bank,
            "idx": i,
            "method": method,
            "conditioning": baselines.render(method, prof),
            "model": "rule-based",
            "prompts": None,
            "params": None,
            "seed": 0,
            "critic": None,
            "profile": prof,
        }
        for i, prof in enumerate(profiles)
    ]
    store.put_personas(rows)
    return store.personas(bank)


def _record_to_export(p: dict) -> dict:
    return {
        "id": p["persona_id"].split(":", 1)[1],
        "method": p["method"],
        "conditioning": p["conditioning"],
        "model": p["model"],
        "prompts": p["prompts"],
        "params": p["params"],
        "seed": p["seed"],
        "critic": p["critic"],
        "profile": p["profile"],
    }


def export_jsonl(store: Store, bank: str, path: str | Path) -> int:
    """One canonical JSON object per line (sorted keys), so import -> export
    reproduces a file byte for byte."""
    people = store.personas(bank)
    with open(path, "w", encoding="utf-8") as f:
        for p in people:
            f.write(dumps(_record_to_export(p)) + "\n")
    return len(people)


def import_jsonl(store: Store, bank: str, path: str | Path) -> int:
    """Import personas from JSONL. All-or-nothing: every line is validated
    before anything is written, so a bad line leaves the store unchanged."""
    path = Path(path)
    if not path.exists():
        raise BankError(f"{path}: file not found")
    rows, seen = [], set()
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
                {
                    "persona_id": persona_id(bank, pid),
                    "bank": bank,
                    "idx": idx,
                    "method": rec.get("method", "imported"),
                    "conditioning": text,
                    "model": rec.get("model"),
                    "prompts": rec.get("prompts"),
                    "params": rec.get("params"),
                    "seed": seed,
                    "critic": rec.get("critic"),
                    "profile": profile,
                }
            )
    if not rows:
        raise BankError(f"{path}: no personas (the file is empty)")
    store.put_personas(rows)
    return len(rows)
