"""The stored persona: one row of a persona bank, as every layer passes it.

The store (:mod:`core.store`) reads and writes these; banks (:mod:`agents.bank`,
:mod:`agents.generative_agent`) build them; agents, surveys, populations and
groups read their fields. It lives in the bottom layer so agents can build it
without importing the store.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class PersonaRecord:
    """A persona of a bank (``slots``: a 40k-persona bank in memory costs about
    its texts). Values read from the store may be shared between records (equal
    JSON fields are decoded once): treat ``prompts``, ``params``, ``critic`` and
    ``profile`` as read-only; build a modified record with ``dataclasses.replace``.

    persona_id   ``"<bank>:<idx>"`` (imported banks: ``"<bank>:<id in the file>"``)
    bank, idx    the bank it belongs to and its position there
    method       anthology | interview | anthology_dp | generative_agent | qa | bio | portray | imported | rejected
    conditioning the text every question is asked after ("" when rejected)
    model        the engine fingerprint that generated it ("rule-based" for baselines; None when imported without one)
    prompts      the prompts used (JSON), params the sampling parameters (JSON), seed
    critic       the critics' verdicts (JSON list), if any
    profile      the demographic profile it was built from (trait -> category), if any
    created      when it was stored (None until it is)
    """

    persona_id: str
    bank: str
    idx: int
    method: str
    conditioning: str
    model: str | None = None
    prompts: Any = None
    params: Any = None
    seed: int = 0
    critic: Any = None
    profile: dict[str, str] | None = None
    created: float | None = None


# The record's fields, in order: the store's ``personas`` columns.
PERSONA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PersonaRecord))
# The fields stored as JSON text.
PERSONA_JSON_FIELDS: tuple[str, ...] = ("prompts", "params", "critic", "profile")
