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

Representativity of a substitution (paper eq. 16/21) compares the expected
final payoffs of the *original* participants when some of them are played by
representatives with those when everyone plays themselves, over R seeded
rollouts (the same seeds on both sides):

    d_i = mean_r payoff_i^r(with representatives) - mean_r payoff_i^r(originals)
    gap = mean_{i in substituted} |d_i|        signed gap = mean_{i in substituted} d_i

on the 1..7 agreement scale (0 = value-equivalent). One episode's report
bootstraps its rollouts; pooled figures over groups (cluster bootstrap) and
the null row (each original re-played as its own representative under other
seeds) come from :mod:`mechanisms.value_equivalence`. Payoffs are always judged by the originals
(see :mod:`mechanisms.episode`), so only the representatives' actions differ
(by default their critiques only, the paper's setting). Reported for
substituting one participant (each slot in turn, pooled) and all of them, per
conditioning subset; with a judge engine also the consensus autorater's win
rate (eq. 22, :mod:`mechanisms.autorater`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations

import numpy as np

from agents.llm.base import Engine
from core.errors import PersonaeError
from core.seeds import derive_seed

from .autorater import ConsensusPair, consensus_win_rate
from .episode import EpisodeConfig, EpisodeResult, Participant, Question, run_episode
from .mediators import Mediator
from .payoff import LIKERT7
from .value_equivalence import NULL_SET, pooled_gap

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


def most_probable_profile(probs: dict[str, Sequence[float]], options: dict[str, Sequence[str]], refusal: str | None = None) -> dict[str, str]:
    """A persona's demographic profile for D from its survey answers: per trait
    the most probable option (``probs[trait]`` over ``options[trait]``), the
    label capitalised as in the paper's Table 2 ("Age: 30-49."); a trait whose
    most probable answer is ``refusal`` is left out."""
    out = {}
    for trait, p in probs.items():
        choice = options[trait][int(np.argmax(p))]
        if choice != refusal:
            out[trait.replace("_", " ").capitalize()] = choice
    return out


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


class ConditioningError(PersonaeError, ValueError):
    """A conditioning set asks for a part of the record the data do not hold."""


PART_FIELDS = {"D": "demographics", "O": "opinions", "C": "critiques", "P": "positions"}


def check_subset(subset: str) -> None:
    bad = set(subset) - set(PARTS)
    if bad:
        raise ConditioningError(f"conditioning set '{subset}': unknown part(s) {sorted(bad)} (expected letters of {PARTS})")


def require_parts(records: Sequence[ParticipantRecord], subsets: Sequence[str], source: str = "data") -> None:
    """Stop (one line naming the set and the missing field) when no record
    holds a part some conditioning set asks for: a D block without
    demographics would silently equal the base prompt."""
    for subset in subsets:
        check_subset(subset)
        for letter in subset:
            name = PART_FIELDS[letter]
            if not any(getattr(r, name) for r in records):
                raise ConditioningError(
                    f"{source}: conditioning set '{subset}' needs the participants' {name} ({letter}), "
                    f"but the data hold none" + (" (Habermas-format data: add demographics.* columns)" if letter == "D" else "")
                )


def conditioning(record: ParticipantRecord, subset: str = "DOCP", max_items: int = 3, skip: int = 0) -> str:
    """Conditioning text of a representative from the ``subset`` of the record
    (letters of ``DOCP``, any order), laid out as the paper's Table 2: D as
    "You represent a participant with the following demographic profile.
    Trait: value. ...", then one block per past question (at most
    ``max_items``) with the participant's opinion (O), critique (C) and
    position (P) on it. A part this participant lacks leaves no empty block;
    :func:`require_parts` stops when the whole data set lacks it. ``skip``
    leaves out the first (oldest) ``skip`` of those blocks: how a prompt too
    long for training is shortened, history first, the rest kept."""
    check_subset(subset)
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
    for n, q in enumerate(questions[skip:max_items], start=1):
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
    """|final payoff with representatives - final payoff of the originals| per slot (one rollout)."""
    slots = list(slots)
    return np.abs(substituted.final_payoffs[slots] - original.final_payoffs[slots])


def expected_payoff_gap(substituted: np.ndarray, original: np.ndarray, axis: int = 0) -> np.ndarray:
    """Discrepancy in expected payoff (paper eq. 21) from paired rollouts:
    ``substituted[r, j]`` / ``original[r, j]`` are the final payoffs of
    substituted participant j in rollout r with / without representatives,

        gap = mean_j | mean_r substituted[r, j] - mean_r original[r, j] |

    (1..7 agreement scale; 0 = value-equivalent). ``axis`` is the rollout
    axis; once it is averaged out, participants are the first axis (any
    further axes are batch axes, e.g. bootstrap resamples)."""
    diff = np.abs(np.mean(substituted, axis=axis) - np.mean(original, axis=axis))
    return np.mean(diff, axis=0)


def bootstrap_gap(substituted: np.ndarray, original: np.ndarray, seed: int, level: float = 0.95, n_resamples: int = 2000) -> tuple[float, float]:
    """Interval of :func:`expected_payoff_gap` over one episode's rollouts
    (paired resamples; NaN with fewer than 2 rollouts): the one-group case of
    :func:`mechanisms.value_equivalence.pooled_gap`."""
    est = pooled_gap([(substituted, original)], seed, level, n_resamples)
    return est.abs_low, est.abs_high


@dataclass
class RepresentativityReport:
    subset: str
    mode: str  # "one" (each slot substituted alone, pooled) or "all"
    gap: float  # discrepancy in expected payoff over substituted participants (1..7 scale), eq. 21
    ci_low: float  # bootstrap interval over this episode's rollouts (NaN with one rollout)
    ci_high: float
    rollouts: int
    per_slot: dict[int, float]  # |expected payoff difference| per substituted slot
    original_payoffs: list[float]  # expected final payoffs of the originals (mean over rollouts)
    substituted_payoffs: dict[int, list[float]]  # key: substituted slot, or -1 for "all"; mean over rollouts
    acts: tuple[str, ...] = ("critique",)  # what the representatives did
    payoff_source: str = "self-rating"
    win_rate: float | None = None  # consensus autorater (eq. 22); None = no judge
    signed_gap: float = float("nan")  # mean over substituted participants of d_i (signed)
    signed_ci_low: float = float("nan")
    signed_ci_high: float = float("nan")
    wins: tuple[float, ...] = ()  # the judge's preference per substituted rollout (eq. 22)
    substituted: np.ndarray | None = field(default=None, repr=False)  # (R, J) payoffs, columns = per_slot's keys
    original: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {
            "subset": self.subset or "base",
            "mode": self.mode,
            "gap": self.gap,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "signed_gap": self.signed_gap,
            "signed_ci_low": self.signed_ci_low,
            "signed_ci_high": self.signed_ci_high,
            "rollouts": self.rollouts,
            "acts": list(self.acts),
            "payoff_source": self.payoff_source,
            "win_rate": self.win_rate,
            "per_slot": {str(k): v for k, v in self.per_slot.items()},
            "original_payoffs": self.original_payoffs,
            "substituted_payoffs": {str(k): v for k, v in self.substituted_payoffs.items()},
        }


def rollout_config(config: EpisodeConfig, r: int) -> EpisodeConfig:
    """Rollout r of an episode: rollout 0 is the episode itself, later ones
    re-seed every random choice (sampling, shuffles, tie-breaks). The seed is
    a function of (episode seed, r) alone, so a resumed run asks the same
    requests and the store answers them."""
    return config if r == 0 else replace(config, seed=derive_seed(config.seed, "rollout", r))


def null_stand_in(original: Participant) -> Participant:
    """The original as its own representative, sampling under other seeds: what a
    perfect representative would do, so its gap is the estimator's noise floor."""
    return Participant(f"null:{original.id}", original.conditioning, original.engine, seed_salt=NULL_SET)


@dataclass(frozen=True)
class Substitution:
    """Who is played by representatives in one substituted episode: ``mode``
    "one" = slot ``key`` alone, "all" = every slot (``key`` -1)."""

    subset: str
    mode: str
    key: int
    stand_ins: dict[int, Participant] = field(hash=False, compare=False)

    @property
    def slots(self) -> list[int]:
        return sorted(self.stand_ins)


def substitutions(
    question: Question,
    records: Sequence[ParticipantRecord],
    subsets: Sequence[str],
    modes: Sequence[str] = ("one", "all"),
    one_slots: Sequence[int] | None = None,
    max_items: int = 3,
    rep_engine: Engine | None = None,
    tag: str = "rep",
    null: Sequence[Participant] | None = None,
) -> list[Substitution]:
    """Every substituted episode of a representativity measurement, per
    subset and mode (one: each slot of ``one_slots`` in turn; all: everyone);
    representatives see the records minus ``question`` itself. ``null``: the
    originals, played again as their own stand-ins under other seeds (the
    null row, subset :data:`NULL_SET`), after the sets."""
    out = []
    for subset in [*subsets, *([NULL_SET] if null is not None else [])]:
        if subset == NULL_SET:
            reps = {i: null_stand_in(p) for i, p in enumerate(null)}
        else:
            reps = {i: representative(rec.without_question(question.question), subset, max_items, rep_engine, tag) for i, rec in enumerate(records)}
        for mode in modes:
            if mode not in ("one", "all"):
                raise ValueError(f"mode must be 'one' or 'all', got {mode!r}")
            if mode == "one":
                out += [Substitution(subset, mode, i, {i: reps[i]}) for i in (range(len(records)) if one_slots is None else one_slots)]
            else:
                out.append(Substitution(subset, mode, -1, dict(reps)))
    return out


def report_from_rollouts(
    subset: str,
    mode: str,
    base_pay: np.ndarray,
    runs: dict[int, tuple[list[int], np.ndarray]],
    seed: int,
    acts: Sequence[str] = ("critique",),
    payoff_source: str = "self-rating",
    win_rate: float | None = None,
    wins: Sequence[float] = (),
) -> RepresentativityReport:
    """One (subset, mode) report from paired rollouts: ``base_pay[r, i]`` the
    originals' final payoffs, ``runs[key] = (substituted slots, pay[r, i])``
    with representatives; the gaps (eq. 21) pool the substituted slots of
    every run, the intervals bootstrap rollouts with ``seed``
    (:func:`mechanisms.value_equivalence.pooled_gap` on one group)."""
    sub = np.concatenate([pay[:, slots] for slots, pay in runs.values()], axis=1)
    orig = np.concatenate([base_pay[:, slots] for slots, _ in runs.values()], axis=1)
    seen = [s for slots, _ in runs.values() for s in slots]
    per_slot = dict(zip(seen, np.abs(sub.mean(axis=0) - orig.mean(axis=0)).round(6).tolist()))
    est = pooled_gap([(sub, orig)], seed)
    return RepresentativityReport(
        subset, mode, est.absolute, est.abs_low, est.abs_high, len(base_pay), per_slot,
        base_pay.mean(axis=0).round(6).tolist(), {key: pay.mean(axis=0).round(6).tolist() for key, (_, pay) in runs.items()},
        tuple(acts), payoff_source, win_rate, est.signed, est.signed_low, est.signed_high, tuple(wins), sub, orig,
    )


def bootstrap_seed(config: EpisodeConfig, question: Question, subset: str, mode: str) -> int:
    return derive_seed(config.seed, question.id, subset, mode, "bootstrap")


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
    rollouts: int = 1,
    judge: Engine | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    null: bool = False,
) -> tuple[EpisodeResult, list[RepresentativityReport]]:
    """Run the originals ``rollouts`` times (seeded), then each substitution
    as many times with the same seeds; return the first baseline episode and
    one report per (subset, mode): the discrepancy in expected payoff with a
    bootstrap interval over rollouts and, given a ``judge``, the consensus
    autorater's win rate of the representatives' final statements against the
    originals' (eq. 22). ``records[i]`` belongs to ``participants[i]``; items
    about ``question`` itself are dropped. ``rep_engine``: the representatives'
    own engine (a fine-tuned adapter); which acts they perform is
    ``config.represented_acts``. ``on_episode`` is called after every episode.
    ``null``: also the null row (subset :data:`NULL_SET`: each original as its
    own stand-in under other seeds), the estimator's noise floor.
    (The consensus scenario plays the same episodes as Mesa steps, many at a
    time, and assembles them with :func:`report_from_rollouts`.)"""
    if len(records) != len(participants):
        raise ValueError("one record per participant")
    if rollouts < 1:
        raise ValueError("rollouts must be >= 1")
    config = config or EpisodeConfig()
    participants = list(participants)
    done = on_episode or (lambda res: None)

    def play(r: int, stand_ins=None) -> EpisodeResult:
        res = run_episode(engine, question, participants, mediator, rollout_config(config, r), stand_ins)
        done(res)
        return res

    bases = [baseline if (r == 0 and baseline is not None) else play(r) for r in range(rollouts)]
    base_pay = np.array([b.final_payoffs for b in bases])  # (R, n)
    plan = substitutions(question, records, subsets, modes, one_slots, max_items, rep_engine, tag, participants if null else None)
    reports = []
    for subset in dict.fromkeys(s.subset for s in plan):
        for mode in dict.fromkeys(s.mode for s in plan if s.subset == subset):
            runs, pairs = {}, []
            for sub in (s for s in plan if s.subset == subset and s.mode == mode):
                results = [play(r, sub.stand_ins) for r in range(rollouts)]
                runs[sub.key] = (sub.slots, np.array([res.final_payoffs for res in results]))
                pairs += [
                    ConsensusPair(question.question, tuple(b.opinions), res.final_statement, b.final_statement)
                    for res, b in zip(results, bases)
                ]
            judged = consensus_win_rate(judge, pairs) if judge is not None else None
            reports.append(
                report_from_rollouts(subset, mode, base_pay, runs, bootstrap_seed(config, question, subset, mode), config.represented_acts,
                                     win_rate=judged.win_rate if judged else None, wins=judged.per_pair if judged else ())
            )
    return bases[0], reports
