"""Evaluate digital representatives, vanilla vs fine-tuned (Jarrett et al. §5).

* Critique log-likelihood: for each held-out example,

      NLL/token = -(1/T) sum_t log p(c_t | prompt, c_<t)

  over the T tokens of the participant's real critique c; reported as the mean
  over examples and as perplexity exp(mean NLL/token) (the paper's early
  stopping metric), per conditioning subset.
* Autorater win rate: a judge model sees the participant's question and
  opinion and two critiques, the representative's (sampled) and the real one,
  and picks the one more likely written by the participant. Both orders are
  asked and averaged (cancels the judge's letter bias):

      p_i = (P(A | rep shown as A) + P(B | rep shown as B)) / 2
      win rate = mean_i p_i;  wins = mean_i [p_i > 1/2] + [p_i = 1/2] / 2

  0.5 = indistinguishable from the ground truth.
* Payoff discrepancy: a held-out episode is replayed R times (seeded) with
  the personas that played it; one participant, or all, critique through the
  representative (the only act it performs, as in the paper), and

      gap = mean_{i substituted} | mean_r payoff_i^r(with representatives) - mean_r payoff_i^r(originals) |

  on the 1..7 agreement scale, with a bootstrap interval over rollouts, plus
  the consensus autorater's win rate (eq. 22) of the representatives' final
  statements against the originals' (mechanisms.representatives.representativity).
  Needs the persona texts (``personae.conditioning``), so it is computed on
  persona-played data only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.llm.base import Engine, GenerateRequest, LoglikRequest, OptionRequest, option_letters
from mechanisms import prompts
from mechanisms.episode import EpisodeConfig, Participant, Question
from core.seeds import derive_seed
from mechanisms.budget import GenerationBudget
from mechanisms.mediators import make_mediator
from mechanisms.representatives import representativity

from .deliberations import CritiqueExample, Deliberations


@dataclass
class NLL:
    per_token: list[float]  # per example
    tokens: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_token))

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.mean))


def critique_nll(engine: Engine, data: Deliberations, indices: Sequence[int], subset: str, tokenizer, max_items: int = 2) -> NLL:
    """Per-token negative log-likelihood of each real critique under ``engine``."""
    reqs, counts = [], []
    for i in indices:
        ex = data.examples[i]
        prompt, _ = data.prompt(ex, subset, max_items)
        reqs.append(LoglikRequest(prompt, ex.critique))
        counts.append(len(tokenizer(ex.critique, add_special_tokens=False).input_ids))
    scores = engine.loglikelihood(reqs)
    return NLL([-s / n for s, n in zip(scores, counts)], counts)


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
) -> list[dict]:
    """Replay up to ``max_episodes`` held-out episodes with the original personas
    and substitute representatives in the critique step (one / all), each
    ``rollouts`` times; with a ``judge`` also the consensus autorater (eq. 22)."""
    if not data.conditionings:
        return []
    episodes: dict[str, list[CritiqueExample]] = {}
    for i in indices:
        ex = data.examples[i]
        if ex.round == 1:
            episodes.setdefault(ex.episode, []).append(ex)
    rows = []
    config = EpisodeConfig(rounds=1, seed=seed, budget=budget, represented_acts=("critique",))
    for name in sorted(episodes)[:max_episodes]:
        members = sorted(episodes[name], key=lambda e: e.participant)
        if any(m.participant not in data.conditionings for m in members):
            continue
        first = members[0]
        question = Question(first.question_id, first.question, first.question)
        participants = [Participant(m.participant, data.conditionings[m.participant]) for m in members]
        records = [data.records[m.participant] for m in members]
        med = make_mediator(mediator, **({"max_tokens": budget.statement} if mediator in ("llm", "habermas") else {}))
        _, reports = representativity(
            engine, question, participants, records, list(subsets), med, config,
            max_items=max_items, rep_engine=rep_engine, tag=tag, rollouts=rollouts, judge=judge,
        )
        for rep in reports:
            rows.append({
                "episode": name, "subset": rep.subset, "mode": rep.mode, "gap": rep.gap, "ci_low": rep.ci_low,
                "ci_high": rep.ci_high, "rollouts": rep.rollouts, "win_rate": rep.win_rate, "n_substituted": len(rep.per_slot),
            })
    return rows
