"""A deliberation set played by personas, each with a known "true" style.

Real deliberation data (the Habermas Machine release) is ~450 MB behind a
download; tests and first runs need a set that exists offline. Here each
participant is a short persona card with a fixed occupation, home state and
main concern, and a signature: every critique opens with "As a <job> from
<state>," -- a style a representative can only learn from the participant's
own texts (their critiques on other questions, the C conditioning).

The 135M embedded model does not follow "always begin with ..." reliably, so
the signature is written into the answer (:class:`SignatureEngine`): the
model continues after it, and the critique is signature + continuation.

Groups debate their own questions (from data/habermas) through real consensus
episodes (mechanisms.episode), so every group is a unit of the leak-free split.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agents.llm.base import Engine, GenerateRequest, Generation
from mechanisms.budget import GenerationBudget
from mechanisms.episode import EpisodeConfig, Participant, load_questions, run_episode
from mechanisms.mediators import make_mediator

OCCUPATIONS = ["nurse", "farmer", "teacher", "truck driver", "pharmacist", "carpenter", "librarian", "welder", "accountant", "chef", "firefighter", "electrician"]
STATES = ["Ohio", "Texas", "Georgia", "Oregon", "Maine", "Iowa", "Nevada", "Utah", "Idaho", "Vermont", "Kansas", "Alabama"]
CONCERNS = ["the cost to families", "fairness to the young", "the local economy", "personal freedom", "public safety", "the environment"]


def participant_cards(n: int, seed: int = 0) -> dict[str, str]:
    """``n`` persona cards keyed by participant id; seeded, no two alike."""
    rng = np.random.default_rng(seed)
    occ = rng.permutation(len(OCCUPATIONS))
    cards = {}
    for i in range(n):
        job = OCCUPATIONS[occ[i % len(OCCUPATIONS)]]
        state = STATES[int(rng.integers(len(STATES)))]
        concern = CONCERNS[int(rng.integers(len(CONCERNS)))]
        cards[f"p{i:03d}"] = (
            f"You are {signature(job, state)[3:-1]}. What matters most to you is {concern}. "
            f'You always begin your critiques with "{signature(job, state)}" and you always mention {concern}.'
        )
    return cards


def signature(job: str, state: str) -> str:
    article = "an" if job[0] in "aeiou" else "a"
    return f"As {article} {job} from {state},"


class SignatureEngine(Engine):
    """Critiques by a persona card open with the card's signature: the prompt
    ends with it and the text returned starts with it. Everything else goes to
    the wrapped engine unchanged."""

    kind = "signature"

    def __init__(self, inner: Engine, cards: dict[str, str]):
        super().__init__()
        self.inner, self.model = inner, getattr(inner, "model", "")
        self.stats = inner.stats
        self.signatures = {card: card.split('begin your critiques with "')[1].split('"')[0] for card in cards.values()}

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def _opener(self, req: GenerateRequest) -> str | None:
        if "Write a short critique" not in req.prompt:
            return None
        return next((sig for card, sig in self.signatures.items() if card in req.prompt), None)

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        openers = [self._opener(r) for r in requests]
        sent = [
            GenerateRequest(r.prompt + o, r.max_tokens, r.temperature, r.stop, r.seed, r.prefix_len) if o else r
            for r, o in zip(requests, openers)
        ]
        out = self.inner.generate(sent)
        return [Generation(o + g.text if o else g.text, g.finish_reason, g.n_tokens) for g, o in zip(out, openers)]

    def option_probs(self, requests):
        return self.inner.option_probs(requests)

    def loglikelihood(self, requests):
        return self.inner.loglikelihood(requests)


def generate(
    engine: Engine,
    groups: int = 3,
    group_size: int = 4,
    questions_per_group: int = 2,
    seed: int = 0,
    mediator: str = "llm",
    rounds: int = 1,
    budget: GenerationBudget = GenerationBudget(),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """Run ``groups x questions_per_group`` episodes; return their results as
    JSON (``EpisodeResult.to_json()`` plus ``group``) and the persona cards."""
    cards = participant_cards(groups * group_size, seed)
    engine = SignatureEngine(engine, cards)
    ids = list(cards)
    questions = load_questions(n=groups * questions_per_group, seed=seed)
    config = EpisodeConfig(rounds=rounds, seed=seed, budget=budget)
    kwargs = {"max_tokens": budget.statement} if mediator in ("llm", "habermas") else {}
    episodes = []
    total = groups * questions_per_group
    for g in range(groups):
        members = [Participant(pid, cards[pid]) for pid in ids[g * group_size : (g + 1) * group_size]]
        for q in questions[g * questions_per_group : (g + 1) * questions_per_group]:
            res = run_episode(engine, q, members, make_mediator(mediator, **kwargs), config)
            episodes.append({"group": f"g{g}", **res.to_json()})
            if progress:
                progress(len(episodes), total)
    return episodes, cards
