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
  agreement scale (same question as the payoff, plus their own opinion and
  latest critique); the candidates are ranked by expected agreement, equal
  values tied. P x K option-probability requests in one batch; no position bias
  between candidates because each is asked separately, and the ranking targets
  the same quantity the payoff measures.
* ``"choice"``: one multiple-choice question listing all K candidates (order
  shuffled per participant with the seed, mapped back); candidates are ranked
  by the probability of their letter. P requests, but small models favour
  early letters, which the shuffle only turns into noise.

This module also holds the :class:`Transcript` every engine call of an episode
goes through, so each utterance lands in the episode log.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from agents.llm.base import Engine, GenerateRequest, OptionRequest, option_letters

from . import prompts
from .payoff import LIKERT7, LikertAnswer, likert_answer, likert_request
from .social_choice import SocialChoiceResult, aggregate, ranks_from_scores


def derive_seed(*parts) -> int:
    """A 31-bit seed from any labels (base seed, round, act, slot...). Seeds
    depend on labels, not on call order, so swapping one participant for a
    representative leaves every other random choice unchanged."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % (2**31 - 1)


@dataclass
class LogRecord:
    """One utterance (or rating) of an episode.

    ``kind`` is ``"generate"`` (text), ``"option_probs"`` (probabilities over
    ``options``, as returned by the engine in listed order) or ``"select"``
    (a mediator's chosen statement; no engine call). ``participant`` is the
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
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


class Transcript:
    """Sends batched engine calls and records every request and answer."""

    def __init__(self, engine: Engine, retry_empty: bool = True):
        self.engine = engine
        self.retry_empty = retry_empty
        self.records: list[LogRecord] = []

    def generate(self, requests: Sequence[GenerateRequest], metas: Sequence[dict], engine: Engine | None = None) -> list[str]:
        """One batched call (on ``engine`` if given, else the transcript's); empty
        texts are retried once (new seed) in a second batch. Returns cleaned
        texts; every attempt is logged."""
        engine = engine or self.engine
        gens = engine.generate(list(requests))
        texts = []
        for req, meta, g in zip(requests, metas, gens):
            texts.append(self._log_generation(req, meta, g, 0))
        if self.retry_empty:
            redo = [i for i, t in enumerate(texts) if not t]
            if redo:
                retry = [
                    GenerateRequest(
                        prompt=requests[i].prompt,
                        max_tokens=requests[i].max_tokens,
                        temperature=max(requests[i].temperature, 0.7),
                        stop=requests[i].stop,
                        seed=derive_seed(requests[i].seed, "retry"),
                        prefix_len=requests[i].prefix_len,
                    )
                    for i in redo
                ]
                for i, req, g in zip(redo, retry, engine.generate(retry)):
                    texts[i] = self._log_generation(req, metas[i], g, 1)
        return texts

    def _log_generation(self, req: GenerateRequest, meta: dict, g, attempt: int) -> str:
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
        return text

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
    chosen: int = 0  # index into candidates

    def to_json(self) -> dict:
        return {
            "statement": self.statement,
            "candidates": self.candidates,
            "rankings": None if self.rankings is None else self.rankings.tolist(),
            "social": None if self.social is None else self.social.to_json(),
            "chosen": self.chosen,
        }


class Mediator(ABC):
    name: str = "mediator"

    @abstractmethod
    def mediate(self, transcript: Transcript, inp: MediationInput) -> MediationOutput: ...

    def describe(self) -> dict:
        return {"name": self.name}

    def _select(self, t: Transcript, inp: MediationInput, out: MediationOutput) -> MediationOutput:
        extra = {"mediator": self.name}
        if out.social is not None:
            extra["social"] = out.social.to_json()
        t.note(round=inp.round, phase=inp.phase, act="statement", kind="select", candidate=out.chosen, text=out.statement, extra=extra)
        return out


def _statement_prompt(inp: MediationInput, order: Sequence[int]) -> tuple[str, int]:
    opinions = [inp.opinions[i] for i in order]
    if inp.previous is None:
        return prompts.draft_prompt(inp.question, opinions, inp.fmt)
    critiques = [inp.critiques[i] for i in order]  # same order: person k's opinion and critique align
    return prompts.revision_prompt(inp.question, opinions, inp.previous, critiques, inp.fmt)


class LLMMediator(Mediator):
    """One statement per round from one generation (opinions in a seeded order)."""

    name = "llm"

    def __init__(self, max_tokens: int = 80, temperature: float = 0.7):
        self.max_tokens = max_tokens
        self.temperature = temperature

    def describe(self) -> dict:
        return {"name": self.name, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def mediate(self, t: Transcript, inp: MediationInput) -> MediationOutput:
        n = len(inp.opinions)
        order = np.random.default_rng(derive_seed(inp.seed, inp.round, "order")).permutation(n)
        prompt, plen = _statement_prompt(inp, order)
        req = GenerateRequest(prompt, self.max_tokens, self.temperature, prompts.STOP, derive_seed(inp.seed, inp.round, "statement"), plen)
        meta = dict(round=inp.round, phase=inp.phase, act="candidate", candidate=0, extra={"order": order.tolist()})
        [text] = t.generate([req], [meta])
        return self._select(t, inp, MediationOutput(text, [text], chosen=0))


class HabermasMediator(Mediator):
    """K candidates, participants rank them, Schulze picks the winner."""

    name = "habermas"

    def __init__(
        self,
        num_candidates: int = 8,
        ranking: str = "rating",
        method: str = "schulze",
        tie_break: str = "tbrc",
        max_tokens: int = 80,
        temperature: float = 0.9,
    ):
        if num_candidates < 1:
            raise ValueError("num_candidates must be >= 1")
        if ranking not in ("rating", "choice"):
            raise ValueError(f"ranking must be 'rating' or 'choice', got {ranking!r}")
        if ranking == "choice" and num_candidates > 26:
            raise ValueError("ranking='choice' lists candidates as letters: at most 26")
        self.num_candidates = num_candidates
        self.ranking = ranking
        self.method = method
        self.tie_break = tie_break
        self.max_tokens = max_tokens
        self.temperature = temperature

    def describe(self) -> dict:
        return {
            "name": self.name,
            "num_candidates": self.num_candidates,
            "ranking": self.ranking,
            "method": self.method,
            "tie_break": self.tie_break,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def mediate(self, t: Transcript, inp: MediationInput) -> MediationOutput:
        n, k = len(inp.opinions), self.num_candidates
        reqs, metas = [], []
        for c in range(k):
            order = np.random.default_rng(derive_seed(inp.seed, inp.round, "order", c)).permutation(n)
            prompt, plen = _statement_prompt(inp, order)
            seed = derive_seed(inp.seed, inp.round, "candidate", c)
            reqs.append(GenerateRequest(prompt, self.max_tokens, self.temperature, prompts.STOP, seed, plen))
            metas.append(dict(round=inp.round, phase=inp.phase, act="candidate", candidate=c, extra={"order": order.tolist()}))
        candidates = t.generate(reqs, metas)

        if k == 1:
            return self._select(t, inp, MediationOutput(candidates[0], candidates, chosen=0))
        scores = self._rate(t, inp, candidates) if self.ranking == "rating" else self._choose(t, inp, candidates)
        # An empty candidate (generation failed twice) is never preferred.
        empty = np.array([not c for c in candidates])
        if empty.any() and not empty.all():
            scores[:, empty] = -np.inf
        rankings = ranks_from_scores(np.nan_to_num(scores, neginf=-1e9))
        social = aggregate(rankings, self.method, self.tie_break, seed=derive_seed(inp.seed, inp.round, "tie_break"))
        out = MediationOutput(candidates[social.winner], candidates, rankings, social, social.winner)
        return self._select(t, inp, out)

    def _rate(self, t: Transcript, inp: MediationInput, candidates: list[str]) -> np.ndarray:
        n = len(inp.opinions)
        reqs, flags, metas = [], [], []
        for i in range(n):
            crit = inp.critiques[i] if inp.critiques else None
            # Conditioning + question + own opinion/critique: one cached prefix per participant.
            prefix = prompts.participant_prefix(inp.actor_conditionings[i]) + prompts.agreement_head(inp.question, inp.opinions[i], crit)
            rev = inp.reversed_flags[i]
            for c, cand in enumerate(candidates):
                reqs.append(likert_request(prefix, lambda opts, cand=cand: prompts.agreement_tail(cand, opts), rev))
                flags.append(rev)
                metas.append(dict(round=inp.round, phase=inp.phase, act="rank", participant=i, actor=inp.actor_ids[i], candidate=c))
        answers = t.likert(reqs, flags, metas)
        return np.array([a.expected for a in answers]).reshape(n, len(candidates))

    def _choose(self, t: Transcript, inp: MediationInput, candidates: list[str]) -> np.ndarray:
        n, k = len(inp.opinions), len(candidates)
        reqs, listed, metas, perms = [], [], [], []
        for i in range(n):
            perm = np.random.default_rng(derive_seed(inp.seed, inp.round, "choice_order", i)).permutation(k)
            shown = [candidates[j] for j in perm]
            crit = inp.critiques[i] if inp.critiques else None
            suffix = prompts.choice_rank_suffix(inp.question, inp.opinions[i], shown, crit)
            reqs.append(OptionRequest(prompts.participant_prefix(inp.actor_conditionings[i]), suffix, option_letters(k)))
            listed.append(shown)
            perms.append(perm)
            metas.append(dict(round=inp.round, phase=inp.phase, act="rank", participant=i, actor=inp.actor_ids[i], extra={"order": perm.tolist()}))
        probs = t.choice(reqs, listed, metas)
        scores = np.zeros((n, k))
        for i, (perm, p) in enumerate(zip(perms, probs)):
            scores[i, perm] = p  # listed position j showed candidate perm[j]
        return scores


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
