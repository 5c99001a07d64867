"""A consensus episode as a step-able state machine.

Phases (one :meth:`Episode.step` each, so a Mesa model can run one per model step)::

    opinions -> draft -> critiques -> revision -> [critiques -> revision] ... -> payoff

* ``opinions`` (round 0): every participant gives a position score (7-point
  agreement with the question's affirming statement, read as probabilities)
  and writes an opinion. Two batched calls.
* ``draft`` (round 0): the mediator turns the opinions into a statement.
* ``critiques`` (round r >= 1): every participant critiques the current
  statement, seeing only the question, its own opinion (and own earlier
  critique) and the statement -- never another participant's words.
* ``revision`` (round r): the mediator revises from opinions + critiques.
* ``payoff``: each original participant rates every round's statement, and
  every participant gives its position score again, now recalling its opinion
  and the group's final statement (one batch); see
  :class:`mechanisms.payoff.PayoffSummary` and :func:`mechanisms.payoff.disagreement`.

Participants are conditioning texts (a persona backstory or a representative's
record). ``stand_ins`` replaces some slots' *actor* by another conditioning
(a digital representative) for the acts listed in ``EpisodeConfig.represented_acts``
(default: the critique only, the paper's setting);
the payoff is always judged by the original participant, so a substitution
changes the outcome only through what the stand-in said.

Every random choice (sampling seeds, opinion shuffles, option reversal,
tie-breaks) comes from :func:`core.seeds.derive_seed` on
``(config.seed, question id, round, act, slot, ...)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.llm.base import Engine, GenerateRequest
from core.seeds import derive_seed

from . import prompts
from .budget import GenerationBudget
from .mediators import HabermasMediator, LogRecord, MediationInput, MediationOutput, Mediator, Transcript
from .payoff import LIKERT7, PayoffSummary, agreement_requests, disagreement, likert_request

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "habermas"
QUESTIONS_FILE = DATA_DIR / "questions.json"
ACTS = ("position", "opinion", "critique", "rank")
# What a digital representative does by default: the critique (Jarrett et al. §4).
DEFAULT_ACTS = ("critique",)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    affirming_statement: str
    negating_statement: str = ""
    topic: int | None = None

    @classmethod
    def from_json(cls, d: dict) -> "Question":
        return cls(d["id"], d["question"], d["affirming_statement"], d.get("negating_statement", ""), d.get("topic"))

    @classmethod
    def from_text(cls, question: str, affirming_statement: str | None = None, id: str | None = None) -> "Question":
        return cls(id or f"q{derive_seed(question):x}", question, affirming_statement or question)


def load_questions(path: str | Path | None = None, n: int | None = None, seed: int | None = None) -> list[Question]:
    """Debate questions (Habermas Machine corpus subset shipped in data/habermas;
    CC-BY-4.0, Tessler et al., Science 2024). ``seed`` shuffles before taking ``n``."""
    rows = json.loads(Path(path or QUESTIONS_FILE).read_text())
    qs = [Question.from_json(r) for r in rows]
    if seed is not None:
        qs = [qs[i] for i in np.random.default_rng(seed).permutation(len(qs))]
    return qs[:n] if n is not None else qs


@dataclass(frozen=True)
class Participant:
    id: str
    conditioning: str
    # A fine-tuned representative speaks through its own engine (base model +
    # adapter); None = the episode's engine.
    engine: Engine | None = field(default=None, compare=False, hash=False, repr=False)
    # Salt of this actor's sampling seeds: "" = the slot's own seeds; the null
    # row's stand-in (the original re-played as itself) samples under other seeds.
    seed_salt: str = ""


def _salt(actor: Participant) -> tuple[str, ...]:
    return (actor.seed_salt,) if actor.seed_salt else ()


@dataclass
class EpisodeConfig:
    rounds: int = 1  # critique + revision rounds after the draft
    seed: int = 0
    budget: GenerationBudget = field(default_factory=GenerationBudget)  # tokens per opinion and critique
    temperature: float = 0.8  # participants' sampling temperature
    reverse_options: bool = True  # seeded forward/reversed Likert order per slot
    retry_empty: bool = True  # re-ask once when a generation comes back empty
    prompt_format: str = "chatml"  # free-text layout: "chatml" or "plain" (see mechanisms.prompts)
    represented_acts: tuple[str, ...] = DEFAULT_ACTS  # what a stand-in does instead of the original
    positions_after: bool = True  # ask the position again after deliberation (opinion change)

    def __post_init__(self):
        if self.prompt_format not in prompts.FORMATS:
            raise ValueError(f"prompt_format must be one of {prompts.FORMATS}")
        if self.rounds < 0:
            raise ValueError("rounds must be >= 0")
        bad = set(self.represented_acts) - set(ACTS)
        if bad:
            raise ValueError(f"unknown acts {sorted(bad)}; choose from {ACTS}")


@dataclass
class EpisodeResult:
    question: Question
    participant_ids: list[str]
    actor_ids: dict[str, list[str]]  # act -> actor id per slot
    mediator: dict
    config: dict
    positions: list[float]  # expected Likert (1..7) on the affirming statement, before deliberation
    position_probs: list[list[float]]
    positions_after: list[float] | None  # the same question after deliberation (None: not asked)
    position_after_probs: list[list[float]] | None
    opinions: list[str]
    critiques: list[list[str]]  # [round-1][slot]
    statements: list[str]  # [round]: draft, revision 1, ...
    mediations: list[MediationOutput]
    payoff: PayoffSummary
    log: list[LogRecord]

    @property
    def final_statement(self) -> str:
        return self.statements[-1]

    @property
    def final_payoffs(self) -> np.ndarray:
        return self.payoff.final

    @property
    def opinion_change(self) -> np.ndarray | None:
        """Per participant: position after minus before deliberation (1..7 scale)."""
        if self.positions_after is None:
            return None
        return np.asarray(self.positions_after) - np.asarray(self.positions)

    def positions_json(self) -> dict:
        out = {"before": self.positions, "disagreement_before": disagreement(self.positions)}
        if self.positions_after is not None:
            out.update(
                after=self.positions_after,
                change=self.opinion_change.round(6).tolist(),
                mean_abs_change=round(float(np.abs(self.opinion_change).mean()), 6),
                disagreement_after=disagreement(self.positions_after),
            )
        return out

    def to_json(self) -> dict:
        return {
            "question": self.question.__dict__,
            "participants": self.participant_ids,
            "actors": self.actor_ids,
            "mediator": self.mediator,
            "config": self.config,
            "positions": self.positions,
            "position_probs": self.position_probs,
            "positions_after": self.positions_after,
            "position_after_probs": self.position_after_probs,
            "position_summary": self.positions_json(),
            "opinions": self.opinions,
            "critiques": self.critiques,
            "statements": self.statements,
            "mediations": [m.to_json() for m in self.mediations],
            "payoff": self.payoff.to_json(),
            "log": [r.to_json() for r in self.log],
        }


class Episode:
    """Step-able consensus episode; ``step()`` runs the next phase and returns
    the log records it produced."""

    def __init__(
        self,
        engine: Engine,
        question: Question | str,
        participants: list[Participant],
        mediator: Mediator | None = None,
        config: EpisodeConfig | None = None,
        stand_ins: dict[int, Participant] | None = None,
    ):
        if len(participants) < 1:
            raise ValueError("an episode needs at least one participant")
        self.engine = engine
        self.question = question if isinstance(question, Question) else Question.from_text(question)
        self.participants = list(participants)
        self.mediator = mediator or HabermasMediator()
        self.config = config or EpisodeConfig()
        self.stand_ins = dict(stand_ins or {})
        for i in self.stand_ins:
            if not 0 <= i < len(participants):
                raise ValueError(f"stand-in slot {i} out of range")
        self.transcript = Transcript(engine, retry_empty=self.config.retry_empty)
        self.phases = ["opinions", "draft"] + ["critiques", "revision"] * self.config.rounds + ["payoff"]
        self._next = 0
        self.round = 0
        n = len(participants)
        self.reversed_flags = [
            bool(self.config.reverse_options and self._seed("reverse", i) % 2) for i in range(n)
        ]
        self.positions: list[float] = []
        self.position_probs: list[list[float]] = []
        self.positions_after: list[float] | None = None
        self.position_after_probs: list[list[float]] | None = None
        self.opinions: list[str] = []
        self.critiques: list[list[str]] = []
        self.statements: list[str] = []
        self.mediations: list[MediationOutput] = []
        self.payoff: PayoffSummary | None = None

    # -- state ---------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.participants)

    @property
    def phase(self) -> str | None:
        """The phase the next ``step()`` runs (None when done)."""
        return self.phases[self._next] if self._next < len(self.phases) else None

    @property
    def done(self) -> bool:
        return self._next >= len(self.phases)

    @property
    def log(self) -> list[LogRecord]:
        return self.transcript.records

    def actor(self, slot: int, act: str) -> Participant:
        if slot in self.stand_ins and act in self.config.represented_acts:
            return self.stand_ins[slot]
        return self.participants[slot]

    def _seed(self, *parts) -> int:
        return derive_seed(self.config.seed, self.question.id, *parts)

    # -- phases --------------------------------------------------------------
    def step(self) -> list[LogRecord]:
        if self.done:
            raise RuntimeError("episode is finished")
        phase = self.phases[self._next]
        start = len(self.transcript.records)
        if phase == "opinions":
            self._opinions()
        elif phase in ("draft", "revision"):
            self._mediate(phase)
        elif phase == "critiques":
            self.round += 1
            self._critiques()
        elif phase == "payoff":
            self._payoff()
        self._next += 1
        return self.transcript.records[start:]

    def run(self) -> EpisodeResult:
        while not self.done:
            self.step()
        return self.result()

    def _opinions(self) -> None:
        q = self.question
        reqs, metas = [], []
        for i in range(self.n):
            a = self.actor(i, "position")
            reqs.append(
                likert_request(
                    prompts.participant_prefix(a.conditioning),
                    lambda opts: prompts.position_suffix(q.question, q.affirming_statement, opts),
                    self.reversed_flags[i],
                )
            )
            metas.append(dict(round=0, phase="opinions", act="position", participant=i, actor=a.id))
        answers = self.transcript.likert(reqs, self.reversed_flags, metas)
        self.positions = [a.expected for a in answers]
        self.position_probs = [a.probs for a in answers]

        greqs, metas = [], []
        for i in range(self.n):
            a = self.actor(i, "opinion")
            prompt, plen = prompts.opinion_prompt(a.conditioning, q.question, self.config.prompt_format)
            greqs.append(
                GenerateRequest(
                    prompt, self.config.budget.opinion, self.config.temperature, prompts.STOP, self._seed(0, "opinion", i, *_salt(a)), plen
                )
            )
            metas.append(dict(round=0, phase="opinions", act="opinion", participant=i, actor=a.id))
        self.opinions = self.transcript.generate(greqs, metas)

    def _critiques(self) -> None:
        r = self.round
        reqs, metas = [], []
        for i in range(self.n):
            a = self.actor(i, "critique")
            previous = self.critiques[-1][i] if self.critiques else None
            prompt, plen = prompts.critique_prompt(
                a.conditioning, self.question.question, self.opinions[i], self.statements[-1], previous, self.config.prompt_format
            )
            reqs.append(
                GenerateRequest(
                    prompt, self.config.budget.critique, self.config.temperature, prompts.STOP, self._seed(r, "critique", i, *_salt(a)), plen
                )
            )
            metas.append(dict(round=r, phase="critiques", act="critique", participant=i, actor=a.id))
        # One batched call per engine (the episode's, and each fine-tuned stand-in's).
        by_engine: dict[int, list[int]] = {}
        engines = {}
        for i in range(self.n):
            e = self.actor(i, "critique").engine
            by_engine.setdefault(id(e), []).append(i)
            engines[id(e)] = e
        texts: list[str] = [""] * self.n
        for key, slots in by_engine.items():
            out = self.transcript.generate([reqs[i] for i in slots], [metas[i] for i in slots], engine=engines[key])
            for i, t in zip(slots, out):
                texts[i] = t
        self.critiques.append(texts)

    def _mediate(self, phase: str) -> None:
        rankers = [self.actor(i, "rank") for i in range(self.n)]
        inp = MediationInput(
            question=self.question.question,
            round=self.round,
            phase=phase,
            opinions=self.opinions,
            critiques=self.critiques[-1] if self.round > 0 else None,
            previous=self.statements[-1] if self.round > 0 else None,
            actor_ids=[a.id for a in rankers],
            actor_conditionings=[a.conditioning for a in rankers],
            reversed_flags=self.reversed_flags,
            seed=self._seed("mediator"),
            fmt=self.config.prompt_format,
        )
        out = self.mediator.mediate(self.transcript, inp)
        self.mediations.append(out)
        self.statements.append(out.statement)

    def _payoff(self) -> None:
        judges = [p.conditioning for p in self.participants]  # always the originals
        reqs = agreement_requests(judges, self.question.question, self.statements, self.reversed_flags)
        flags, metas = [], []
        for r in range(len(self.statements)):
            for i, p in enumerate(self.participants):
                flags.append(self.reversed_flags[i])
                metas.append(dict(round=r, phase="payoff", act="agreement", participant=i, actor=p.id))
        n_pay = len(reqs)
        if self.config.positions_after:
            q, final = self.question, self.statements[-1]
            for i in range(self.n):
                a = self.actor(i, "position")
                reqs.append(
                    likert_request(
                        prompts.participant_prefix(a.conditioning),
                        lambda opts, i=i: prompts.position_after_suffix(q.question, q.affirming_statement, opts, self.opinions[i], final),
                        self.reversed_flags[i],
                    )
                )
                flags.append(self.reversed_flags[i])
                metas.append(dict(round=self.round, phase="payoff", act="position_after", participant=i, actor=a.id))
        answers = self.transcript.likert(reqs, flags, metas)  # one batch: payoffs and positions after
        values = np.array([a.expected for a in answers[:n_pay]]).reshape(len(self.statements), self.n)
        self.payoff = PayoffSummary(values)
        if self.config.positions_after:
            self.positions_after = [a.expected for a in answers[n_pay:]]
            self.position_after_probs = [a.probs for a in answers[n_pay:]]

    def result(self) -> EpisodeResult:
        if not self.done:
            raise RuntimeError(f"episode not finished (next phase: {self.phase})")
        return EpisodeResult(
            question=self.question,
            participant_ids=[p.id for p in self.participants],
            actor_ids={act: [self.actor(i, act).id for i in range(self.n)] for act in ACTS},
            mediator=self.mediator.describe(),
            config={**self.config.__dict__, "budget": self.config.budget.model_dump(), "represented_acts": list(self.config.represented_acts)},
            positions=self.positions,
            position_probs=self.position_probs,
            positions_after=self.positions_after,
            position_after_probs=self.position_after_probs,
            opinions=self.opinions,
            critiques=self.critiques,
            statements=self.statements,
            mediations=self.mediations,
            payoff=self.payoff,
            log=list(self.transcript.records),
        )


def run_episode(
    engine: Engine,
    question: Question | str,
    participants: list[Participant],
    mediator: Mediator | None = None,
    config: EpisodeConfig | None = None,
    stand_ins: dict[int, Participant] | None = None,
) -> EpisodeResult:
    return Episode(engine, question, participants, mediator, config, stand_ins).run()


__all__ = [
    "ACTS",
    "Episode",
    "EpisodeConfig",
    "EpisodeResult",
    "LIKERT7",
    "LogRecord",
    "Participant",
    "Question",
    "load_questions",
    "run_episode",
]
