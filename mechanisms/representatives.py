"""Digital representatives and representativity (value equivalence).

A *digital representative* stands in for a participant: a conditioning text
built from any subset of that participant's record (Jarrett et al., "Language
agents as digital representatives in collective decision-making"):

* ``D`` demographics (questionnaire answers),
* ``O`` opinions written on other debate questions,
* ``C`` critiques written on other debate questions,
* ``P`` position scores on other questions (as text, e.g. "agree").

The sections follow the paper's prompt layout ("You represent a participant
with the following demographic profile. ...", "Question 1 from a past debate:
...", "Opinion of the participant about question 1: ..."). The subset ``""``
is the uninformed base representative.

Representativity of a substitution (paper eq. 16/21) compares the final
payoffs of the *original* participants when some of them are played by
representatives with the payoffs when everyone plays themselves:

    gap = mean_{i in substituted} | payoff_i(with representatives) - payoff_i(originals) |

on the 1..7 agreement scale (0 = value-equivalent). Payoffs are always judged
by the originals (see :mod:`mechanisms.episode`), so only the representatives'
actions differ. Reported for substituting one participant (each slot in turn,
averaged) and all of them, per conditioning subset.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from agents.llm.base import Engine

from .episode import EpisodeConfig, EpisodeResult, Participant, Question, run_episode
from .mediators import Mediator
from .payoff import LIKERT7

PARTS = "DOCP"
# Every subset of D, O, C, P in a fixed order: "", "D", "O", ..., "DOCP".
SUBSETS = tuple("".join(c) for k in range(len(PARTS) + 1) for c in combinations(PARTS, k))


@dataclass
class ParticipantRecord:
    id: str
    demographics: dict[str, str] = field(default_factory=dict)
    opinions: list[tuple[str, str]] = field(default_factory=list)  # (question, opinion)
    critiques: list[tuple[str, str]] = field(default_factory=list)  # (question, critique)
    positions: list[tuple[str, str]] = field(default_factory=list)  # (question, scale label)

    def add_episode(self, result: EpisodeResult, slot: int) -> None:
        """Add what slot ``slot`` said in an episode: opinion, first critique, position."""
        q = result.question.question
        self.opinions.append((q, result.opinions[slot]))
        if result.critiques:
            self.critiques.append((q, result.critiques[0][slot]))
        self.positions.append((q, position_label(result.positions[slot])))

    def without_question(self, question: str) -> "ParticipantRecord":
        """The record minus anything about ``question`` (representatives only
        see *other* questions)."""
        keep = lambda items: [(q, t) for q, t in items if q != question]  # noqa: E731
        return ParticipantRecord(self.id, dict(self.demographics), keep(self.opinions), keep(self.critiques), keep(self.positions))

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "demographics": self.demographics,
            "opinions": [list(x) for x in self.opinions],
            "critiques": [list(x) for x in self.critiques],
            "positions": [list(x) for x in self.positions],
        }


def position_label(expected: float, scale: Sequence[str] = LIKERT7) -> str:
    """Nearest scale label of an expected Likert value, lower case ("agree")."""
    k = int(np.clip(np.rint(expected), 1, len(scale)))
    return scale[k - 1].lower()


def records_from_episodes(
    results: Sequence[EpisodeResult], demographics: dict[str, dict[str, str]] | None = None
) -> dict[str, ParticipantRecord]:
    """Records keyed by participant id, from episodes on other questions."""
    records: dict[str, ParticipantRecord] = {}
    for res in results:
        for slot, pid in enumerate(res.participant_ids):
            rec = records.setdefault(pid, ParticipantRecord(pid, dict((demographics or {}).get(pid, {}))))
            rec.add_episode(res, slot)
    return records


def conditioning(record: ParticipantRecord, subset: str = "DOCP", max_items: int = 3) -> str:
    """Conditioning text of a representative from the ``subset`` of the record
    (letters of ``DOCP``, any order); at most ``max_items`` past questions."""
    bad = set(subset) - set(PARTS)
    if bad:
        raise ValueError(f"unknown record parts {sorted(bad)}; use letters of {PARTS!r}")
    parts = ["You represent a participant in a group discussion. Answer as this participant would."]
    if "D" in subset and record.demographics:
        profile = " ".join(f"{k}: {v}." for k, v in record.demographics.items())
        parts.append(f"You represent a participant with the following demographic profile. {profile}")
    # One block per past question so opinion, critique and position of the
    # same question stay together.
    questions: list[str] = []
    for items, letter in ((record.opinions, "O"), (record.critiques, "C"), (record.positions, "P")):
        if letter in subset:
            for q, _ in items:
                if q not in questions:
                    questions.append(q)
    for n, q in enumerate(questions[:max_items], start=1):
        lines = [f"Question {n} from a past debate: {q}"]
        if "O" in subset:
            lines += [f"Opinion of the participant about question {n}: {t}" for qq, t in record.opinions if qq == q]
        if "C" in subset:
            lines += [f"Critique of the participant about question {n}: {t}" for qq, t in record.critiques if qq == q]
        if "P" in subset:
            lines += [f"Position of the participant about question {n}: {t}." for qq, t in record.positions if qq == q]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def representative(record: ParticipantRecord, subset: str = "DOCP", max_items: int = 3, engine: Engine | None = None, tag: str = "rep") -> Participant:
    """A prompted representative (``engine`` None: the episode's engine), or a
    fine-tuned one speaking through ``engine`` (base model + adapter)."""
    return Participant(f"{tag}:{record.id}:{subset or 'base'}", conditioning(record, subset, max_items), engine)


def value_gap(original: EpisodeResult, substituted: EpisodeResult, slots: Sequence[int]) -> np.ndarray:
    """|final payoff with representatives - final payoff of the originals| per slot."""
    slots = list(slots)
    return np.abs(substituted.final_payoffs[slots] - original.final_payoffs[slots])


@dataclass
class RepresentativityReport:
    subset: str
    mode: str  # "one" (each slot substituted alone, averaged) or "all"
    gap: float  # mean |payoff difference| over substituted participants (1..7 scale)
    per_slot: dict[int, float]
    original_payoffs: list[float]
    substituted_payoffs: dict[int, list[float]]  # key: substituted slot, or -1 for "all"

    def to_json(self) -> dict:
        return {
            "subset": self.subset or "base",
            "mode": self.mode,
            "gap": self.gap,
            "per_slot": {str(k): v for k, v in self.per_slot.items()},
            "original_payoffs": self.original_payoffs,
            "substituted_payoffs": {str(k): v for k, v in self.substituted_payoffs.items()},
        }


def representativity(
    engine: Engine,
    question: Question,
    participants: Sequence[Participant],
    records: Sequence[ParticipantRecord],
    subsets: Sequence[str] = ("DOCP",),
    mediator: Mediator | None = None,
    config: EpisodeConfig | None = None,
    modes: Sequence[str] = ("one", "all"),
    one_slots: Sequence[int] | None = None,
    baseline: EpisodeResult | None = None,
    max_items: int = 3,
    rep_engine: Engine | None = None,
    tag: str = "rep",
) -> tuple[EpisodeResult, list[RepresentativityReport]]:
    """Run the originals once, then each substitution; return the baseline
    episode and one report per (subset, mode). ``records[i]`` belongs to
    ``participants[i]``; items about ``question`` itself are dropped.
    ``rep_engine``: the representatives' own engine (a fine-tuned adapter);
    which acts they perform is ``config.represented_acts``."""
    if len(records) != len(participants):
        raise ValueError("one record per participant")
    participants = list(participants)
    base = baseline or run_episode(engine, question, participants, mediator, config)
    slots_one = list(one_slots) if one_slots is not None else list(range(len(participants)))
    reports = []
    for subset in subsets:
        reps = {i: representative(rec.without_question(question.question), subset, max_items, rep_engine, tag) for i, rec in enumerate(records)}
        for mode in modes:
            if mode not in ("one", "all"):
                raise ValueError(f"mode must be 'one' or 'all', got {mode!r}")
            runs = {i: {i: reps[i]} for i in slots_one} if mode == "one" else {-1: reps}
            per_slot, payoffs = {}, {}
            for key, stand_ins in runs.items():
                res = run_episode(engine, question, participants, mediator, config, stand_ins)
                payoffs[key] = res.final_payoffs.tolist()
                for slot, g in zip(stand_ins, value_gap(base, res, list(stand_ins))):
                    per_slot[slot] = float(g)
            reports.append(
                RepresentativityReport(
                    subset, mode, float(np.mean(list(per_slot.values()))), per_slot, base.final_payoffs.tolist(), payoffs
                )
            )
    return base, reports
