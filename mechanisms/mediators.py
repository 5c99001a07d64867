"""Mediators: turn the group's opinions (and critiques) into one statement.

* :class:`LLMMediator` -- one generated statement per round.
* :class:`HabermasMediator` -- the Habermas Machine recipe: K candidate
  statements (the opinions/critiques shuffled anew for each candidate, so no
  participant is always "person 1"), every participant ranks the candidates,
  the rankings are aggregated with the Schulze method and the winner is kept.
* :class:`OpinionMediator` -- baseline: one participant's own opinion, chosen
  by the seed; shows what mediation adds over simply adopting someone's view.

How participants rank the K candidates (``ranking=``):

* ``"rating"`` (default): each participant rates every candidate on the 7-point
  agreement scale (same question as the payoff, plus their own opinion and, in
  a revision round, the statement under revision and their critique of it,
  as in the Habermas Machine's ranking prompt); the candidates are ranked by expected agreement, equal
  values tied. P x K option-probability requests in one batch; no position bias
  between candidates because each is asked separately, and the ranking targets
  the same quantity the payoff measures.
* ``"choice"``: one multiple-choice question listing all K candidates (order
  shuffled per participant with the seed, mapped back); candidates are ranked
  by the probability of their letter. P requests, but small models favour
  early letters, which the shuffle only turns into noise.
* ``"cot"`` (the Habermas Machine's): each participant writes a step-by-step
  reasoning and a strict arrow ranking (``B > A > C``) of the candidates
  shuffled for them; see :class:`HabermasMediator` for retries and fallback.

Who ranks (``ranker=``):

* ``"words"`` (the Habermas Machine's): an assistant ranks for each participant
  from what they said -- the question, their opinion and, in a revision round,
  the statement under revision and their critique -- with no persona or record
  in the prompt. The mechanism is then a black box over participants' words,
  so a digital representative changes the outcome only through what it wrote.
* ``"persona"``: each participant ranks as itself, its conditioning (backstory,
  or the stand-in's record when the rank act is represented) in the prompt.

This module also holds the :class:`Transcript` every engine call of an episode
goes through, so each utterance lands in the episode log.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from agents.llm.base import Engine, GenerateRequest, OptionRequest, option_letters
from core.seeds import derive_seed

from . import prompts
from .budget import GenerationBudget
from .cot_ranking import parse_ranking
from .payoff import LIKERT7, LikertAnswer, likert_answer, likert_request
from .social_choice import SocialChoiceResult, aggregate, ranks_from_scores


@dataclass
class LogRecord:
    """One utterance (or rating) of an episode.

    ``kind`` is ``"generate"`` (text), ``"option_probs"`` (probabilities over
    ``options``, as returned by the engine in listed order), ``"select"``
    (a mediator's chosen statement; no engine call) or ``"fallback"`` (a
    participant's CoT ranking replaced by ratings; ``extra["reason"]`` says why). ``participant`` is the
    slot index (None for the mediator); ``actor`` who actually spoke (a
    participant id, a representative id, or ``"mediator"``).
    """

    round: int
    phase: str  # episode phase: opinions | draft | critiques | revision | payoff
    act: str  # position | opinion | candidate | rank | statement | critique | agreement
    kind: str
    participant: int | None = None
    actor: str = "mediator"
    candidate: int | None = None
    prompt: str = ""
    prefix_len: int = 0
    text: str | None = None  # cleaned text
    raw: str | None = None  # text as generated
    options: list[str] | None = None  # labels as listed in the prompt
    probs: list[float] | None = None  # engine output, listed order
    outside_mass: float | None = None
    value: float | None = None  # expected Likert value in scale order (1..n)
    reversed: bool | None = None
    seed: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    finish_reason: str | None = None
    n_tokens: int | None = None
    attempt: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        # Shallow: the fields are JSON values already, and asdict's deep copy of every
        # record was a seventh of a representatives run's client time (160k records per group).
        return {name: v for name in _LOG_FIELDS if (v := getattr(self, name)) is not None and v != {}}


_LOG_FIELDS = tuple(f.name for f in fields(LogRecord))  # looked up once: dataclasses.fields costs per call


class Transcript:
    """Sends batched engine calls and records every request and answer."""

    def __init__(self, engine: Engine, retry_empty: bool = True):
        self.engine = engine
        self.retry_empty = retry_empty
        self.records: list[LogRecord] = []

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        metas: Sequence[dict],
        engine: Engine | None = None,
        retries: int | None = None,
        usable: Callable[[str], bool] | None = None,
        raw: bool = False,
    ) -> list[str]:
        """One batched call (on ``engine`` if given, else the transcript's); texts
        that are not ``usable`` (default: empty after cleaning) are asked again
        with a new seed, up to ``retries`` times (default: once if the
        transcript retries empty texts), each retry one batch. Returns the
        cleaned texts (``raw``: as generated); every attempt is logged."""
        engine = engine or self.engine
        retries = (1 if self.retry_empty else 0) if retries is None else retries
        usable = usable or bool
        texts = [self._log_generation(req, meta, g, 0, raw) for req, meta, g in zip(requests, metas, engine.generate(list(requests)))]
        for attempt in range(1, retries + 1):
            redo = [i for i, t in enumerate(texts) if not usable(t)]
            if not redo:
                break
            retry = [
                GenerateRequest(
                    prompt=requests[i].prompt,
                    max_tokens=requests[i].max_tokens,
                    temperature=max(requests[i].temperature, 0.7),
                    stop=requests[i].stop,
                    # attempt 1 keeps the historical label, so stored answers stay valid
                    seed=derive_seed(requests[i].seed, "retry") if attempt == 1 else derive_seed(requests[i].seed, "retry", attempt),
                    prefix_len=requests[i].prefix_len,
                )
                for i in redo
            ]
            for i, req, g in zip(redo, retry, engine.generate(retry)):
                texts[i] = self._log_generation(req, metas[i], g, attempt, raw)
        return texts

    def _log_generation(self, req: GenerateRequest, meta: dict, g, attempt: int, raw: bool = False) -> str:
        text = prompts.clean_text(g.text)
        self.records.append(
            LogRecord(
                **meta,
                kind="generate",
                prompt=req.prompt,
                prefix_len=req.prefix_len,
                text=text,
                raw=g.text,
                seed=req.seed,
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                finish_reason=g.finish_reason,
                n_tokens=g.n_tokens,
                attempt=attempt,
            )
        )
        return g.text if raw else text

    def likert(
        self, requests: Sequence[OptionRequest], reversed_flags: Sequence[bool], metas: Sequence[dict], scale: Sequence[str] = LIKERT7
    ) -> list[LikertAnswer]:
        """One batched option_probs call on Likert questions; answers in scale order."""
        results = self.engine.option_probs(list(requests))
        out = []
        for req, rev, meta, res in zip(requests, reversed_flags, metas, results):
            ans = likert_answer(req, rev, res)
            out.append(ans)
            listed = list(reversed(scale)) if rev else list(scale)
            self.records.append(self._option_record(req, res, meta, listed, value=ans.expected, reversed=bool(rev)))
        return out

    def choice(self, requests: Sequence[OptionRequest], listed: Sequence[Sequence[str]], metas: Sequence[dict]) -> list[list[float]]:
        """One batched option_probs call on plain multiple-choice questions."""
        results = self.engine.option_probs(list(requests))
        for req, labels, meta, res in zip(requests, listed, metas, results):
            self.records.append(self._option_record(req, res, meta, list(labels)))
        return [list(r.probs) for r in results]

    @staticmethod
    def _option_record(req: OptionRequest, res, meta: dict, options: list[str], **kw) -> LogRecord:
        return LogRecord(
            **meta,
            kind="option_probs",
            prompt=req.prompt,
            prefix_len=len(req.prefix),
            options=options,
            probs=list(res.probs),
            outside_mass=res.outside_mass,
            **kw,
        )

    def note(self, **fields) -> None:
        self.records.append(LogRecord(**fields))


@dataclass
class MediationInput:
    question: str
    round: int  # 0 = draft from opinions; r >= 1 = revision after critique round r
    phase: str
    opinions: list[str]
    critiques: list[str] | None  # this round's critiques (None in round 0)
    previous: str | None  # the statement being revised (None in round 0)
    actor_ids: list[str]  # who ranks for each participant slot
    actor_conditionings: list[str]
    reversed_flags: list[bool]
    seed: int
    fmt: str = "chatml"  # free-text prompt layout, see mechanisms.prompts


@dataclass
class MediationOutput:
    statement: str
    candidates: list[str]
    rankings: np.ndarray | None = None  # (participants, candidates), 1 = best
    social: SocialChoiceResult | None = None
    chosen: int | None = 0  # index into candidates; None = no usable candidate (see fallback)
    fallback: str = ""  # why the statement is not a ranked candidate (all candidates unusable)
    ranking_fallbacks: dict[int, str] = field(default_factory=dict)  # slot -> why its CoT ranking was replaced by ratings

    def to_json(self) -> dict:
        out = {
            "statement": self.statement,
            "candidates": self.candidates,
            "rankings": None if self.rankings is None else self.rankings.tolist(),
            "social": None if self.social is None else self.social.to_json(),
            "chosen": self.chosen,
        }
        if self.fallback:
            out["fallback"] = self.fallback
        if self.ranking_fallbacks:
            out["ranking_fallbacks"] = {str(k): v for k, v in self.ranking_fallbacks.items()}
        return out


def usable_statement(text: str) -> bool:
    """A candidate statement worth ranking: more than 5 characters (the
    Habermas Machine's test before it retries a generation)."""
    return len(text.strip()) > 5


class Mediator(ABC):
    name: str = "mediator"

    @abstractmethod
    def mediate(self, transcript: Transcript, inp: MediationInput) -> MediationOutput: ...

    def mediate_many(self, transcript: Transcript, inputs: Sequence[MediationInput]) -> list[MediationOutput]:
        """Independent mediations (other groups, rollouts or substitutions), each as
        :meth:`mediate` would do it; a mediator that can batch their engine calls
        overrides this (the answers are the same: every request carries its own seed)."""
        return [self.mediate(transcript, inp) for inp in inputs]

    def describe(self) -> dict:
        return {"name": self.name}

    def _select(self, t: Transcript, inp: MediationInput, out: MediationOutput) -> MediationOutput:
        extra = {"mediator": self.name}
        if out.social is not None:
            extra["social"] = out.social.to_json()
        if out.fallback:
            extra["fallback"] = out.fallback
        t.note(round=inp.round, phase=inp.phase, act="statement", kind="select", candidate=out.chosen, text=out.statement, extra=extra)
        return out


def fallback_statement(inp: MediationInput, tries: int) -> tuple[str, str]:
    """(statement, reason) when no candidate is usable after ``tries``
    generations each: an empty statement never wins. A revision keeps the
    statement under revision; a draft adopts one participant's opinion (chosen
    with the seed among the non-empty ones), else the question itself."""
    why = f"all candidates unusable after {tries} generation(s) each"
    if inp.previous:
        return inp.previous, f"{why}: kept the statement under revision"
    filled = [i for i, o in enumerate(inp.opinions) if usable_statement(o)]
    if filled:
        i = filled[derive_seed(inp.seed, inp.round, "fallback") % len(filled)]
        return inp.opinions[i], f"{why}: adopted participant {i}'s opinion"
    return inp.question, f"{why}: no usable opinion either, the question stands"


def _statement_prompt(inp: MediationInput, order: Sequence[int]) -> tuple[str, int]:
    opinions = [inp.opinions[i] for i in order]
    if inp.previous is None:
        return prompts.draft_prompt(inp.question, opinions, inp.fmt)
    critiques = [inp.critiques[i] for i in order]  # same order: person k's opinion and critique align
    return prompts.revision_prompt(inp.question, opinions, inp.previous, critiques, inp.fmt)


class LLMMediator(Mediator):
    """One statement per round from one generation (opinions in a seeded order)."""

    name = "llm"

    def __init__(self, max_tokens: int = GenerationBudget().statement, temperature: float = 0.7, retries: int = 8):
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retries = retries

    def describe(self) -> dict:
        return {"name": self.name, "max_tokens": self.max_tokens, "temperature": self.temperature, "retries": self.retries}

    def mediate(self, t: Transcript, inp: MediationInput) -> MediationOutput:
        return self.mediate_many(t, [inp])[0]

    def mediate_many(self, t: Transcript, inputs: Sequence[MediationInput]) -> list[MediationOutput]:
        """One batched generation for all ``inputs`` (and one per retry round)."""
        reqs, metas = [], []
        for inp in inputs:
            order = np.random.default_rng(derive_seed(inp.seed, inp.round, "order")).permutation(len(inp.opinions))
            prompt, plen = _statement_prompt(inp, order)
            reqs.append(GenerateRequest(prompt, self.max_tokens, self.temperature, prompts.STOP, derive_seed(inp.seed, inp.round, "statement"), plen))
            metas.append(dict(round=inp.round, phase=inp.phase, act="candidate", candidate=0, extra={"order": order.tolist()}))
        texts = t.generate(reqs, metas, retries=self.retries, usable=usable_statement) if inputs else []
        out = []
        for inp, text in zip(inputs, texts):
            if not usable_statement(text):
                statement, why = fallback_statement(inp, self.retries + 1)
                out.append(self._select(t, inp, MediationOutput(statement, [text], chosen=None, fallback=why)))
            else:
                out.append(self._select(t, inp, MediationOutput(text, [text], chosen=0)))
        return out


RANKINGS = ("rating", "choice", "cot")
RANKERS = ("words", "persona")
COT_STOP = ("</answer>", "<|im_end|>", "<|im_start|>")


class HabermasMediator(Mediator):
    """K candidates, participants rank them, Schulze picks the winner.

    ``retries``: unusable candidates (see :func:`usable_statement`) are
    generated again up to this many times (the Habermas Machine: 8); unusable
    ones left over are ranked last by everyone, and if none is usable the
    statement comes from :func:`fallback_statement`. ``ranking="cot"``: each
    participant writes a chain-of-thought ranking of the candidates shuffled
    for them (parsed by :mod:`mechanisms.cot_ranking`, re-asked up to
    ``cot_retries`` times); a participant whose answer never parses is ranked
    by ratings instead, the reason recorded in the log and the output.
    """

    name = "habermas"

    def __init__(
        self,
        num_candidates: int = 8,
        ranking: str = "rating",
        method: str = "schulze",
        tie_break: str = "tbrc",
        max_tokens: int = GenerationBudget().statement,
        temperature: float = 0.9,
        retries: int = 8,
        cot_tokens: int = 256,
        cot_retries: int = 1,
        cot_temperature: float = 0.7,
        ranker: str = "persona",
    ):
        if num_candidates < 1:
            raise ValueError("num_candidates must be >= 1")
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        if ranker not in RANKERS:
            raise ValueError(f"ranker must be one of {RANKERS}, got {ranker!r}")
        if ranking in ("choice", "cot") and num_candidates > 26:
            raise ValueError(f"ranking={ranking!r} lists candidates as letters: at most 26")
        self.num_candidates = num_candidates
        self.ranking = ranking
        self.method = method
        self.tie_break = tie_break
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retries = retries
        self.cot_tokens = cot_tokens
        self.cot_retries = cot_retries
        self.cot_temperature = cot_temperature
        self.ranker = ranker

    # The public Habermas Machine code (google-deepmind/habermas_machine,
    # machine.py): 16 candidates, ``num_retries_on_error`` 8 for both the
    # statement and the ranking model, a CoT ranking model that sees the
    # question, opinion, previous winner and critique, Schulze aggregation.
    HM_SETTINGS = {"num_candidates": 16, "ranking": "cot", "retries": 8, "cot_retries": 8, "ranker": "words", "method": "schulze"}

    @classmethod
    def habermas_machine(cls, **overrides) -> "HabermasMediator":
        """The Habermas Machine's settings (:attr:`HM_SETTINGS`)."""
        return cls(**{**cls.HM_SETTINGS, **overrides})

    def describe(self) -> dict:
        out = {
            "name": self.name,
            "num_candidates": self.num_candidates,
            "ranking": self.ranking,
            "method": self.method,
            "tie_break": self.tie_break,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "retries": self.retries,
            "ranker": self.ranker,
        }
        if self.ranking == "cot":
            out.update(cot_tokens=self.cot_tokens, cot_retries=self.cot_retries, cot_temperature=self.cot_temperature)
        return out

    def mediate(self, t: Transcript, inp: MediationInput) -> MediationOutput:
        n, k = len(inp.opinions), self.num_candidates
        reqs, metas = [], []
        for c in range(k):
            order = np.random.default_rng(derive_seed(inp.seed, inp.round, "order", c)).permutation(n)
            prompt, plen = _statement_prompt(inp, order)
            seed = derive_seed(inp.seed, inp.round, "candidate", c)
            reqs.append(GenerateRequest(prompt, self.max_tokens, self.temperature, prompts.STOP, seed, plen))
            metas.append(dict(round=inp.round, phase=inp.phase, act="candidate", candidate=c, extra={"order": order.tolist()}))
        candidates = t.generate(reqs, metas, retries=self.retries, usable=usable_statement)
        bad = np.array([not usable_statement(c) for c in candidates])
        if bad.all():
            statement, why = fallback_statement(inp, self.retries + 1)
            return self._select(t, inp, MediationOutput(statement, candidates, chosen=None, fallback=why))
        if k == 1:
            return self._select(t, inp, MediationOutput(candidates[0], candidates, chosen=0))
        fallbacks: dict[int, str] = {}
        if self.ranking == "cot":
            scores, fallbacks = self._cot(t, inp, candidates)
        elif self.ranking == "rating":
            scores = self._rate(t, inp, candidates)
        else:
            scores = self._choose(t, inp, candidates)
        rankings = ranks_from_scores(np.nan_to_num(scores))
        # An unusable candidate is ranked below every usable one on every ballot,
        # so it cannot win (every usable candidate beats it unanimously).
        rankings[:, bad] = k + 1
        social = aggregate(rankings, self.method, self.tie_break, seed=derive_seed(inp.seed, inp.round, "tie_break"))
        out = MediationOutput(candidates[social.winner], candidates, rankings, social, social.winner, ranking_fallbacks=fallbacks)
        return self._select(t, inp, out)

    @property
    def voice(self) -> str:
        return "participant" if self.ranker == "persona" else "observer"

    def _ranker_prefix(self, inp: MediationInput, i: int) -> str:
        """The cacheable head of slot i's ranking prompt: its conditioning
        (persona ranker) or the fixed assistant header (words ranker)."""
        return prompts.participant_prefix(inp.actor_conditionings[i]) if self.ranker == "persona" else prompts.RANKER_HEADER

    def _rate(self, t: Transcript, inp: MediationInput, candidates: list[str], slots: Sequence[int] | None = None) -> np.ndarray:
        """Expected agreement of each ranker (``slots``, default all) with each candidate."""
        slots = list(range(len(inp.opinions))) if slots is None else list(slots)
        reqs, flags, metas = [], [], []
        for i in slots:
            crit = inp.critiques[i] if inp.critiques else None
            # Conditioning + question + own opinion/critique: one cached prefix per participant.
            prefix = self._ranker_prefix(inp, i) + prompts.agreement_head(inp.question, inp.opinions[i], crit, inp.previous, self.voice)
            rev = inp.reversed_flags[i]
            for c, cand in enumerate(candidates):
                reqs.append(likert_request(prefix, lambda opts, cand=cand: prompts.agreement_tail(cand, opts, self.voice), rev))
                flags.append(rev)
                metas.append(dict(round=inp.round, phase=inp.phase, act="rank", participant=i, actor=inp.actor_ids[i], candidate=c))
        answers = t.likert(reqs, flags, metas)
        return np.array([a.expected for a in answers]).reshape(len(slots), len(candidates))

    def _choose(self, t: Transcript, inp: MediationInput, candidates: list[str]) -> np.ndarray:
        n, k = len(inp.opinions), len(candidates)
        reqs, listed, metas, perms = [], [], [], []
        for i in range(n):
            perm = np.random.default_rng(derive_seed(inp.seed, inp.round, "choice_order", i)).permutation(k)
            shown = [candidates[j] for j in perm]
            crit = inp.critiques[i] if inp.critiques else None
            suffix = prompts.choice_rank_suffix(inp.question, inp.opinions[i], shown, crit, inp.previous, self.voice)
            reqs.append(OptionRequest(self._ranker_prefix(inp, i), suffix, option_letters(k)))
            listed.append(shown)
            perms.append(perm)
            metas.append(dict(round=inp.round, phase=inp.phase, act="rank", participant=i, actor=inp.actor_ids[i], extra={"order": perm.tolist()}))
        probs = t.choice(reqs, listed, metas)
        scores = np.zeros((n, k))
        for i, (perm, p) in enumerate(zip(perms, probs)):
            scores[i, perm] = p  # listed position j showed candidate perm[j]
        return scores

    def _cot(self, t: Transcript, inp: MediationInput, candidates: list[str]) -> tuple[np.ndarray, dict[int, str]]:
        """Scores (higher = better) from each participant's chain-of-thought
        ranking of the candidates in a per-participant shuffled order."""
        n, k = len(inp.opinions), len(candidates)
        reqs, metas, perms = [], [], []
        for i in range(n):
            perm = np.random.default_rng(derive_seed(inp.seed, inp.round, "cot_order", i)).permutation(k)
            shown = [candidates[j] for j in perm]
            crit = inp.critiques[i] if inp.critiques else None
            task = prompts.cot_rank_task(inp.question, inp.opinions[i], shown, inp.previous, crit, self.voice)
            prompt, plen = prompts.text_prompt(self._ranker_prefix(inp, i), task, "Answer", inp.fmt)
            reqs.append(GenerateRequest(prompt, self.cot_tokens, self.cot_temperature, COT_STOP, derive_seed(inp.seed, inp.round, "cot", i), plen))
            perms.append(perm)
            metas.append(dict(round=inp.round, phase=inp.phase, act="rank", participant=i, actor=inp.actor_ids[i], extra={"order": perm.tolist(), "ranking": "cot"}))
        texts = t.generate(reqs, metas, retries=self.cot_retries, usable=lambda s: parse_ranking(s, k).order is not None, raw=True)
        scores = np.zeros((n, k))
        fallbacks: dict[int, str] = {}
        for i, (perm, text) in enumerate(zip(perms, texts)):
            parsed = parse_ranking(text, k)
            if parsed.order is None:
                fallbacks[i] = f"CoT ranking unparsed after {self.cot_retries + 1} attempt(s) ({parsed.reason}): ranked by ratings"
                continue
            for place, listed_pos in enumerate(parsed.order):
                scores[i, perm[listed_pos]] = k - place  # listed position j showed candidate perm[j]
        if fallbacks:
            slots = sorted(fallbacks)
            for i in slots:
                t.note(round=inp.round, phase=inp.phase, act="rank", kind="fallback", participant=i, actor=inp.actor_ids[i], extra={"reason": fallbacks[i]})
            scores[slots] = self._rate(t, inp, candidates, slots)
        return scores, fallbacks


class OpinionMediator(Mediator):
    """Baseline: adopt one participant's own opinion as the group statement
    (the same participant every round, chosen with the seed unless given)."""

    name = "opinion"

    def __init__(self, participant: int | None = None):
        self.participant = participant

    def describe(self) -> dict:
        return {"name": self.name, "participant": self.participant}

    def mediate(self, t: Transcript, inp: MediationInput) -> MediationOutput:
        n = len(inp.opinions)
        i = self.participant if self.participant is not None else int(derive_seed(inp.seed, "baseline") % n)
        text = inp.opinions[i]
        out = MediationOutput(text, [text], chosen=0)
        t.note(round=inp.round, phase=inp.phase, act="statement", kind="select", participant=i, actor=inp.actor_ids[i], text=text, extra={"mediator": self.name})
        return out


MEDIATORS = {"llm": LLMMediator, "habermas": HabermasMediator, "opinion": OpinionMediator}


def make_mediator(name: str, **kwargs) -> Mediator:
    try:
        return MEDIATORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown mediator {name!r}; choose from {sorted(MEDIATORS)}") from None
