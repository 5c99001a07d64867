"""A fake engine, for logic tests and dry runs only: it has no language model.

Every answer is a deterministic function of a hash of the request, so the same
request always gets the same answer and different requests (another persona's
backstory, another question) almost surely get different ones. That is enough
to test what sits around an engine -- caching, resuming, replay, matching,
aggregation, reports -- in milliseconds. Nothing it says means anything: tests
of what a model answers use the real embedded model
(``TransformersEngine.embedded()``).
"""
from __future__ import annotations

import hashlib

import numpy as np

from .base import Engine, GenerateRequest, Generation, LoglikRequest, OptionRequest, OptionResult

# The words fake generations are drawn from (no meaning, only shape).
WORDS = (
    "I grew up in a small town near the river and my family worked hard every day "
    "school mattered to me and so did my friends church music and the people around us"
).split()


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class FakeEngine(Engine):
    """Hash-of-the-prompt answers (see the module docstring): for logic tests only."""

    kind = "fake"
    model = "fake-hash"

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        """A Dirichlet(1) draw over the options, seeded by the whole prompt and
        the option labels; the outside mass is a seeded draw in [0, 0.1)."""
        self.stats.record("option_probs", len(requests))
        out = []
        for r in requests:
            rng = _rng("options", r.prefix, r.suffix, *r.options)
            out.append(OptionResult(probs=rng.dirichlet(np.ones(len(r.options))).tolist(), outside_mass=float(rng.uniform(0, 0.1)), method="fake"))
        return out

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        """Up to ``max_tokens`` words from :data:`WORDS`, seeded by the prompt (and
        the seed when the temperature is above 0), cut at the first stop string."""
        self.stats.record("generate", len(requests))
        out = []
        for r in requests:
            rng = _rng("generate", r.prompt, r.seed if r.temperature > 0 else "greedy")
            n = int(rng.integers(1, max(1, r.max_tokens) + 1))
            text = " " + " ".join(rng.choice(WORDS, size=n))
            cut = min((text.find(s) for s in r.stop if s and s in text), default=-1)
            if cut >= 0:
                text, n = text[:cut], len(text[:cut].split())
            self.stats.generated_tokens += n
            out.append(Generation(text=text, finish_reason="length" if cut < 0 and n >= r.max_tokens else "stop", n_tokens=n))
        return out

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        """Minus (0.5 to 3.5) nats per character of the continuation, seeded by both texts."""
        self.stats.record("loglikelihood", len(requests))
        return [-len(r.continuation) * float(_rng("loglik", r.context, r.continuation).uniform(0.5, 3.5)) for r in requests]
