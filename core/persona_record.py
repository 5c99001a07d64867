"""The stored persona: one row of a persona bank, as every layer passes it.

The store (:mod:`core.store`) reads and writes these; banks (:mod:`agents.bank`,
:mod:`agents.generative_agent`) build them; agents, surveys, populations and
groups read their fields. It lives in the bottom layer so agents can build it
without importing the store.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Callable


class StoredText:
    """A persona's text left in the store, read when a prompt needs it: a
    population holds its personas' ids and settings, not their texts (~8-12 KB
    each), so its memory does not grow with their texts. Equal to the text
    it names (and to a ``StoredText`` naming the same text)."""

    __slots__ = ("_source", "text_id")

    def __init__(self, source: "TextCache", text_id: int) -> None:
        self._source = source
        self.text_id = text_id

    def read(self) -> str:
        return self._source.read(self.text_id)

    def __eq__(self, other) -> bool:
        if isinstance(other, StoredText):
            return (other._source is self._source and other.text_id == self.text_id) or self.read() == other.read()
        return self.read() == other if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.read())

    def __repr__(self) -> str:
        return f"StoredText({self.text_id})"


class TextCache:
    """Reads stored texts by id, keeping the last ``size`` read (a chunk's
    personas are asked several questions in a row); thread-safe."""

    def __init__(self, read: Callable[[int], str], size: int = 1024) -> None:
        self._read, self._size = read, size
        self._recent: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, text_id: int) -> str:
        with self._lock:
            text = self._recent.get(text_id)
            if text is None:
                text = self._recent[text_id] = self._read(text_id)
                if len(self._recent) > self._size:
                    self._recent.popitem(last=False)
            else:
                self._recent.move_to_end(text_id)
            return text


@dataclass(frozen=True, slots=True, init=False)
class PersonaRecord:
    """A persona of a bank (``slots``: a 40k-persona bank in memory costs little
    more than its ids). Values read from the store may be shared between records
    (equal JSON fields are decoded once): treat ``prompts``, ``params``, ``critic``
    and ``profile`` as read-only; build a modified record with ``dataclasses.replace``.

    persona_id   ``"<bank>:<idx>"`` (imported banks: ``"<bank>:<id in the file>"``)
    bank, idx    the bank it belongs to and its position there
    method       anthology | interview | anthology_dp | generative_agent | qa | bio | portray | imported | rejected
    conditioning the text every question is asked after ("" when rejected); read from the
                 store when the record came from there (``text``: the text or a ``StoredText``)
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
    text: str | StoredText
    model: str | None
    prompts: Any
    params: Any
    seed: int
    critic: Any
    profile: dict[str, str] | None
    created: float | None

    # By hand: the text's field is ``text`` (a string or where the store keeps it) and
    # ``conditioning`` the string, but callers build records with ``conditioning=``
    # (``dataclasses.replace`` passes ``text=``).
    def __init__(self, persona_id: str, bank: str, idx: int, method: str, conditioning: str | StoredText = "",
                 model: str | None = None, prompts: Any = None, params: Any = None, seed: int = 0, critic: Any = None,
                 profile: dict[str, str] | None = None, created: float | None = None, *, text: str | StoredText | None = None) -> None:
        values = (persona_id, bank, idx, method, conditioning if text is None else text, model, prompts, params, seed, critic, profile, created)
        for name, value in zip(_FIELDS, values):
            object.__setattr__(self, name, value)

    @property
    def conditioning(self) -> str:
        t = self.text
        return t if isinstance(t, str) else t.read()

    @property
    def has_text(self) -> bool:
        """Whether it has a text (without reading it from the store)."""
        return not isinstance(self.text, str) or bool(self.text)


_FIELDS = tuple(f.name for f in fields(PersonaRecord))


# The record's fields, in order: the store's ``personas`` columns.
PERSONA_FIELDS: tuple[str, ...] = tuple("conditioning" if f == "text" else f for f in _FIELDS)
# The fields stored as JSON text.
PERSONA_JSON_FIELDS: tuple[str, ...] = ("prompts", "params", "critic", "profile")
