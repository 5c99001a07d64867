"""Evaluate digital representatives, vanilla vs fine-tuned (Jarrett et al. §5).

* Critique log-likelihood (eq. 19): for each held-out example, over the T
  tokens of the participant's real critique c,

      log-likelihood = sum_t log p(c_t | prompt, c_<t)       NLL/token = -log-likelihood / T

  reported per conditioning subset as the mean sequence log-likelihood (eq. 19
  as written), the mean NLL/token, and perplexity = exp(mean NLL/token) -- the
  one perplexity definition, also the training record's validation perplexity.
* Autorater win rate: a judge model sees the participant's question and
  opinion and two critiques, the representative's (sampled) and the real one,
  and picks the one more likely written by the participant. Both orders are
  asked and averaged (cancels the judge's letter bias):

      p_i = (P(A | rep shown as A) + P(B | rep shown as B)) / 2
      win rate = mean_i p_i;  wins = mean_i [p_i > 1/2] + [p_i = 1/2] / 2

  0.5 = indistinguishable from the ground truth.
* Payoff discrepancy: a held-out episode is replayed R times (seeded) with
  the personas that played it; one participant, or all, critique through the
  representative (the only act it performs, as in the paper), and per
  substituted participant

      d_i = mean_r payoff_i^r(with representatives) - mean_r payoff_i^r(originals)

  on the 1..7 agreement scale, plus the consensus autorater's win rate (eq. 22)
  of the representatives' final statements against the originals'
  (mechanisms.representatives.representativity). The signed (mean d_i) and
  absolute (mean |d_i|, eq. 21) gaps are pooled over the held-out episodes with
  intervals from resampling groups, beside the null row (the originals as
  their own representatives under other seeds), by
  :func:`mechanisms.value_equivalence.pooled_table` -- the consensus
  scenario's estimator.
  Payoffs are the personas' self-ratings, which needs the persona texts
  (``personae.conditioning``): persona-played data only.
* Payoff discrepancy from a payoff model (:mod:`mechanisms.payoff_model`),
  computable on real human data: the held-out episode's real opinions and
  draft are kept; the substituted participants' critiques come from the
  representative, the others' are the real ones; the mediator revises the
  draft R times (seeded; the same seeds with the real critiques give the
  originals' outcome), and the payoff model scores each revision for each
  substituted participant; the same estimator and consensus autorater. The
  null row there: the real critiques, revised under other seeds (the
  recorded critiques cannot be re-sampled; the mediator's noise is what is left).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agents.llm.base import Engine, GenerateRequest, LoglikRequest, OptionRequest, option_letters
from core.seeds import derive_seed
from mechanisms import prompts
from mechanisms.autorater import ConsensusPair, consensus_win_rate
from mechanisms.budget import GenerationBudget
from mechanisms.episode import EpisodeConfig, Participant, Question
from mechanisms.mediators import MediationInput, Transcript, make_mediator
from mechanisms.representatives import ParticipantRecord, representativity
from mechanisms.value_equivalence import NULL_SET, PayoffSample, pooled_table

from .deliberations import CritiqueExample, Deliberations


class PayoffScorer(Protocol):
    """What the discrepancy needs of :class:`mechanisms.payoff_model.PayoffModel`
    (that module imports this package, so it is not imported here)."""

    def participant(self, opinion: str, record: ParticipantRecord | None = None, question: str = "") -> str: ...

    def score_matrix(self, question: str, statements: Sequence[str], participants: Sequence[str]) -> np.ndarray: ...


@dataclass
class NLL:
    per_token: list[float]  # per example
    tokens: list[int]
    loglik: list[float] | None = None  # per example: sum_t log p (eq. 19)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_token))

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.mean))

    @property
    def sequence_loglik(self) -> float:
        return float(np.mean(self.loglik)) if self.loglik else float("nan")

    def to_json(self) -> dict:
        return {"sequence_loglik": self.sequence_loglik, "nll_per_token": self.mean, "perplexity": self.perplexity,
                "mean_tokens": float(np.mean(self.tokens)) if self.tokens else float("nan")}


def critique_nll(engine: Engine, data: Deliberations, indices: Sequence[int], subset: str, tokenizer, max_items: int = 2) -> NLL:
    """Per-token negative log-likelihood of each real critique under ``engine``."""
    reqs, counts = [], []
    for i in indices:
        ex = data.examples[i]
        prompt, _ = data.prompt(ex, subset, max_items)
        reqs.append(LoglikRequest(prompt, ex.critique))
        counts.append(len(tokenizer(ex.critique, add_special_tokens=False).input_ids))
    scores = engine.loglikelihood(reqs)
    return NLL([-s / n for s, n in zip(scores, counts)], counts, [float(s) for s in scores])


def sample_critiques(engine: Engine, data: Deliberations, indices: Sequence[int], subset: str, seed: int, max_tokens: int = GenerationBudget().critique, temperature: float = 0.8, max_items: int = 2) -> list[str]:
    reqs = []
    for i in indices:
        ex = data.examples[i]
        prompt, plen = data.prompt(ex, subset, max_items)
        reqs.append(GenerateRequest(prompt, max_tokens, temperature, prompts.STOP, derive_seed(seed, "rep-critique", ex.episode, ex.participant, ex.round), plen))
    return [prompts.clean_text(g.text) for g in engine.generate(reqs)]


def judge_request(ex: CritiqueExample, first: str, second: str) -> OptionRequest:
    head = (
        f"Question under debate: {ex.question}\n"
        f"A participant's opinion: {ex.opinion}\n"
        f'Draft group statement: "{ex.draft}"\n\n'
    )
    body = prompts.choice_block(
        "Which critique of the draft was more likely written by this participant, given their opinion?",
        [first or "(no critique)", second or "(no critique)"],
    )
    return OptionRequest(prefix=head, suffix=body + " (", options=option_letters(2))


def autorater(judge: Engine, examples: Sequence[CritiqueExample], candidates: Sequence[str]) -> dict:
    """Win rate of ``candidates`` against the real critiques (both orders)."""
    reqs = []
    for ex, cand in zip(examples, candidates):
        reqs += [judge_request(ex, cand, ex.critique), judge_request(ex, ex.critique, cand)]
    res = judge.option_probs(reqs)
    p = np.array([(res[2 * k].probs[0] + res[2 * k + 1].probs[1]) / 2 for k in range(len(examples))])
    wins = np.where(np.isclose(p, 0.5), 0.5, (p > 0.5).astype(float))
    return {"win_rate": float(p.mean()), "wins": float(wins.mean()), "per_example": p.tolist()}


def payoff_discrepancy(
    engine: Engine,
    rep_engine: Engine | None,
    data: Deliberations,
    indices: Sequence[int],
    subsets: Sequence[str],
    seed: int,
    mediator: str = "llm",
    max_episodes: int = 2,
    max_items: int = 2,
    tag: str = "rep",
    budget: GenerationBudget = GenerationBudget(),
    rollouts: int = 1,
    judge: Engine | None = None,
    payoff_model: PayoffScorer | None = None,
    temperature: float = 0.8,
    null: bool = True,
    ranker: str = "words",
) -> list[PayoffSample]:
    """Replay up to ``max_episodes`` held-out episodes with the original personas
    and substitute representatives in the critique step (one / all), each
    ``rollouts`` times; with a ``judge`` also the consensus autorater (eq. 22).
    With a ``payoff_model`` the episodes are replayed from the data instead
    (no persona needed; see the module docstring). Returns one sample per
    (episode, subset, mode) -- and the null row's with ``null`` -- for
    :func:`discrepancy_rows`. ``ranker``: who ranks a Habermas mediator's
    candidates (default: from participants' words only)."""
    episodes: dict[str, list[CritiqueExample]] = {}
    for i in indices:
        ex = data.examples[i]
        if ex.round == 1:
            episodes.setdefault(ex.episode, []).append(ex)
    if payoff_model is not None:
        return _model_discrepancy(
            engine, rep_engine, data, episodes, subsets, seed, payoff_model, max_episodes, max_items, tag, budget, rollouts, judge, temperature, null,
        )
    if not data.conditionings:
        return []
    out: list[PayoffSample] = []
    config = EpisodeConfig(rounds=1, seed=seed, budget=budget, represented_acts=("critique",))
    for name in sorted(episodes)[:max_episodes]:
        members = sorted(episodes[name], key=lambda e: e.participant)
        if any(m.participant not in data.conditionings for m in members):
            continue
        first = members[0]
        question = Question(first.question_id, first.question, first.question)
        participants = [Participant(m.participant, data.conditionings[m.participant]) for m in members]
        records = [data.records[m.participant] for m in members]
        kwargs = {"max_tokens": budget.statement} if mediator in ("llm", "habermas") else {}
        med = make_mediator(mediator, **kwargs, **({"ranker": ranker} if mediator == "habermas" else {}))
        _, reports = representativity(
            engine, question, participants, records, list(subsets), med, config,
            max_items=max_items, rep_engine=rep_engine, tag=tag, rollouts=rollouts, judge=judge, null=null,
        )
        out += [PayoffSample(first.group, rep.subset, rep.mode, rep.substituted, rep.original, rep.wins) for rep in reports]
    return out


def discrepancy_rows(samples: list[PayoffSample], seed: int, payoff_source: str) -> list[dict]:
    """Eq. 21 / 22 pooled over the samples' clusters (held-out groups), one row
    per (subset, mode) and the null row: the consensus scenario's estimator
    (:func:`mechanisms.value_equivalence.pooled_table`); ``gap`` = mean |d_i|."""
    rows = []
    for r in pooled_table(samples, seed):
        row = r.to_json()
        row["gap"] = row.pop("payoff_gap")
        rows.append({"subset": r.subset, "mode": r.mode, **row, "n_substituted": r.units, "payoff_source": payoff_source})
    return rows


def _model_discrepancy(
    engine: Engine, rep_engine: Engine | None, data: Deliberations, episodes: dict[str, list[CritiqueExample]], subsets: Sequence[str],
    seed: int, payoff_model: PayoffScorer, max_episodes: int, max_items: int, tag: str, budget: GenerationBudget, rollouts: int,
    judge: Engine | None, temperature: float, null: bool = True,
) -> list[PayoffSample]:
    """Eq. 21 on recorded episodes, payoffs from the payoff model (the LLM
    mediator revises: the recorded rankings cannot be replayed without the people)."""
    mediator = make_mediator("llm", max_tokens=budget.statement)
    out: list[PayoffSample] = []
    for name in sorted(episodes)[:max_episodes]:
        members = sorted(episodes[name], key=lambda e: e.participant)
        first, n = members[0], len(members)
        opinions, real = [m.opinion for m in members], [m.critique for m in members]
        judges = [payoff_model.participant(m.opinion, data.records.get(m.participant), m.question) for m in members]

        def revision(critiques: list[str], r: int, *salt: str) -> MediationInput:
            return MediationInput(
                first.question, 1, "revision", opinions, critiques, first.draft, [m.participant for m in members], [""] * n, [False] * n,
                derive_seed(seed, name, "rollout", r, *salt),
            )

        def pay(statements: list[str]) -> np.ndarray:  # (statements, n)
            return payoff_model.score_matrix(first.question, statements, judges)

        # Every revision of this episode in one batched mediation (each input carries its
        # own seed, so the statements are those of one call per revision).
        inputs = [revision(real, r) for r in range(rollouts)]
        if null:  # the real critiques revised under other seeds: the same outcome in expectation
            inputs += [revision(real, r, NULL_SET) for r in range(rollouts)]
        plans: list[tuple[str, str, list[list[int]]]] = []
        for subset in subsets:
            reqs = []
            for r in range(rollouts):
                for m in members:
                    prompt, plen = data.prompt(m, subset, max_items)
                    reqs.append(GenerateRequest(prompt, budget.critique, temperature, prompts.STOP, derive_seed(seed, tag, "rep-critique", name, m.participant, subset, r), plen))
            texts = [prompts.clean_text(g.text) for g in (rep_engine or engine).generate(reqs)]
            rep = np.array(texts, dtype=object).reshape(rollouts, n)
            for mode, runs in (("one", [[i] for i in range(n)]), ("all", [list(range(n))])):
                plans.append((subset, mode, runs))
                for slots in runs:
                    inputs += [revision([rep[r, i] if i in slots else real[i] for i in range(n)], r) for r in range(rollouts)]
        statements = [o.statement for o in mediator.mediate_many(Transcript(engine), inputs)]
        payoffs = pay(statements)  # one batched scoring; row i is statement i's
        base, k = statements[:rollouts], rollouts
        base_pay = payoffs[:rollouts]
        if null:
            again = statements[k:k + rollouts]
            again_pay = payoffs[k:k + rollouts]
            k += rollouts
            pairs = [ConsensusPair(first.question, tuple(opinions), s, b) for s, b in zip(again, base)]
            wins = tuple(consensus_win_rate(judge, pairs).per_pair) if judge is not None else ()
            out += [PayoffSample(first.group, NULL_SET, "one", again_pay, base_pay, wins),
                    PayoffSample(first.group, NULL_SET, "all", again_pay, base_pay, wins)]
        for subset, mode, runs in plans:
            sub_cols, orig_cols, pairs = [], [], []
            for slots in runs:
                substituted = statements[k:k + rollouts]
                sub_cols.append(payoffs[k:k + rollouts][:, slots])
                k += rollouts
                orig_cols.append(base_pay[:, slots])
                pairs += [ConsensusPair(first.question, tuple(opinions), s, b) for s, b in zip(substituted, base)]
            sub, orig = np.concatenate(sub_cols, axis=1), np.concatenate(orig_cols, axis=1)
            wins = tuple(consensus_win_rate(judge, pairs).per_pair) if judge is not None else ()
            out.append(PayoffSample(first.group, subset, mode, sub, orig, wins))
    return out
