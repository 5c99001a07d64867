"""Discussion groups of a consensus run, and what they do before the main debate.

A :class:`Group` is who debates what: its participants (persona id and
conditioning text), the other questions it debates first (``history``) and its
main question. Before the main debate

* every persona answers the demographic survey when a conditioning set holds D
  (:func:`surveyed_profiles`: its most probable answer per trait);
* every group debates its history questions (:func:`play_history`: one call per
  history question, every group's episode on it, each utterance an event);

and :func:`group_records` builds each participant's record from both, from
which digital representatives are conditioned (:mod:`mechanisms.representatives`).

Every engine request goes through the caller's (store-cached) engine and the
survey's answers through the store, so doing any of it again after a kill
repeats no finished call, and a replay makes none.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agents import demographics as demo
from agents.llm.base import Engine
from core.persona_record import PersonaRecord

from .episode import EpisodeConfig, EpisodeResult, Participant, Question, run_episode
from .mediators import LogRecord, Mediator
from .representatives import PART_FIELDS, ConditioningError, ParticipantRecord, check_subset, most_probable_profile, records_from_episodes

# The stored survey of D (the Pew ATP W92 demographic questions).
SURVEY = "consensus-ATP_W92"


@dataclass(frozen=True)
class Group:
    """Discussion group ``index``: its participants, the questions it debates
    first (their episodes form the participants' records) and its main question."""

    index: int
    participants: tuple[Participant, ...]
    history: tuple[Question, ...]
    question: Question

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.participants)

    @property
    def label(self) -> str:
        """How episodes.jsonl and the cluster bootstrap name the group."""
        return f"g{self.index}"


def surveyed_profiles(engine: Engine, store: demo.DemographicsStore, people: list[PersonaRecord], method: str = "probs", progress=None, *,
                      chunk: int = demo.CHUNK) -> dict[str, dict[str, str]]:
    """D for each persona: its surveyed demographic profile (the Pew ATP W92
    questions, the analysis layer's default survey), the most probable option
    per trait; answers are stored, so a rerun asks nothing again."""
    traits = demo.default_traits()
    cb = (lambda done, total: progress("demographic survey (D)", done, total)) if progress else None
    surveyed = demo.survey(engine, store, people, traits, SURVEY, method=method, chunk=chunk, progress=cb)
    options = {t.trait: [*t.options, demo.REFUSAL] for t in traits}
    return {p.persona_id: most_probable_profile(surveyed[p.persona_id], options, demo.REFUSAL) for p in people}


def utterance_events(records: Sequence[LogRecord], about: dict) -> list[dict]:
    """Episode log records as step-log events, each tagged with ``about``."""
    events = []
    for rec in records:
        payload = rec.to_json()
        events.append({"kind": "utterance", "agent": payload.get("actor", ""), "payload": {**about, **payload}})
    return events


def play_history(engine: Engine, groups: Sequence[Group], h: int, mediator: Callable[[], Mediator], config: EpisodeConfig,
                 progress: Callable[[str, int, int], None] | None = None) -> tuple[list[EpisodeResult], list[dict]]:
    """Every group's episode on its history question ``h`` (one group after
    another, a fresh mediator each); returns the results in group order and the
    step's events: each utterance, then one ``history`` event per episode."""
    results, events = [], []
    for done, g in enumerate(groups):
        if progress:
            progress(f"history {h + 1}: episodes", done, len(groups))
        res = run_episode(engine, g.history[h], list(g.participants), mediator(), config)
        results.append(res)
        about = {"group": g.index, "history": h}
        events += utterance_events(res.log, about)
        events.append({"kind": "history", "agent": "", "payload": {**about, "question": res.question.id, "statements": res.statements,
                                                                    "positions": res.positions}})
    if progress:
        progress(f"history {h + 1}: episodes", len(groups), len(groups))
    return results, events


def group_records(groups: Sequence[Group], history: Sequence[Sequence[EpisodeResult]], demographics: dict[str, dict[str, str]]) -> dict[str, ParticipantRecord]:
    """Each participant's record: what it said in its group's history episodes
    (``history[g]``, in order) and its demographic profile; a participant with
    no history holds its demographics only."""
    records: dict[str, ParticipantRecord] = {}
    for g, done in zip(groups, history):
        records.update(records_from_episodes(done, demographics))
        for pid in g.ids:
            records.setdefault(pid, ParticipantRecord(pid, dict(demographics.get(pid, {}))))
    return records


def check_record_parts(subsets: Sequence[str], history: int, rounds: int, source: str) -> None:
    """Before any LLM call: stop (one line) when a conditioning set asks for a
    part no record can hold -- O and P come from the history episodes, C from
    their critiques (rounds >= 1); D is surveyed whenever a set holds it."""
    missing = {"O": "options.history is 0", "P": "options.history is 0", "C": "options.history is 0" if not history else "options.rounds is 0"}
    have = {"D"} | ({"O", "P"} if history else set()) | ({"C"} if history and rounds else set())
    for subset in subsets:
        try:
            check_subset(subset)
        except ConditioningError as exc:
            raise ConditioningError(f"{source}: {exc}") from None
        for letter in subset:
            if letter not in have:
                raise ConditioningError(f"{source}: conditioning set '{subset}' needs the participants' {PART_FIELDS[letter]} ({letter}), "
                                        f"but the data hold none ({missing[letter]})")
