"""The estimators a study's YAML chooses (``analysis:``), applied in one place.

* **Persona answers**: each persona's exact option probabilities, or the
  frequencies of ``n`` answers sampled from them. The papers sample answers
  from the model at temperature 1; a draw from the renormalised option
  distribution is that same draw, seeded per persona and item so a replay
  reproduces it.
* **Positions**: WD on positions rescaled to [0, 1] or on raw positions 1..K;
  for equally spaced options ``WD_raw = (K - 1) * WD_normalised``.

:func:`describe` words the choice for every report header.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.seeds import derive_seed


@dataclass(frozen=True)
class Estimator:
    """``normalize``: WD on [0, 1] positions; ``samples``: 0 = exact probabilities, n = n sampled answers."""

    normalize: bool = True
    samples: int = 0

    @classmethod
    def of(cls, analysis) -> Estimator:
        """From a config ``analysis:`` section (``scenarios.config.AnalysisConfig``)."""
        if analysis is None:
            return cls()
        return cls(normalize=analysis.positions == "normalized", samples=analysis.samples if analysis.persona_answers == "samples" else 0)

    @property
    def positions(self) -> str:
        return "positions rescaled to [0, 1]" if self.normalize else "raw positions 1..K"

    @property
    def answers(self) -> str:
        if self.samples:
            return f"{self.samples} sampled answer{'s' if self.samples > 1 else ''} per persona and item (seeded draws from its option probabilities)"
        return "exact option probabilities per persona"

    def describe(self) -> str:
        return f"WD on {self.positions}; persona side from {self.answers}"


def sample_frequencies(probs: np.ndarray, n: int, seeds: np.ndarray) -> np.ndarray:
    """Empirical answer frequencies of ``n`` draws per row.

    ``probs``: ``[..., K]`` option distributions (renormalised; a row without
    mass stays zero); ``seeds``: ``probs.shape[:-1]`` integer seeds, one
    generator per row so a row's draws do not depend on the others.
    ``f_k = #{draws = k} / n``; ``E[f] = p`` and ``Var[f_k] = p_k (1 - p_k) / n``.
    """
    probs = np.asarray(probs, dtype=float)
    flat = probs.reshape(-1, probs.shape[-1])
    flat_seeds = np.asarray(seeds).reshape(-1)
    if flat_seeds.size != flat.shape[0]:
        raise ValueError(f"one seed per distribution: got {flat_seeds.size} seeds for {flat.shape[0]} rows")
    out = np.zeros_like(flat)
    for r, (p, s) in enumerate(zip(flat, flat_seeds)):
        total = p.sum()
        if total <= 0:
            continue
        out[r] = np.random.default_rng(int(s)).multinomial(n, p / total) / n
    return out.reshape(probs.shape)


def persona_seeds(run_seed: int, persona_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """``[N, Q]`` seeds ``derive_seed(run_seed, "answers", persona, item)``."""
    return np.array([[derive_seed(run_seed, "answers", pid, qid) for qid in item_ids] for pid in persona_ids], dtype=np.int64)


def apply(estimator: Estimator, probs: np.ndarray, run_seed: int, persona_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """``[N, Q, K]`` persona distributions as the estimator reads them."""
    if not estimator.samples:
        return probs
    return sample_frequencies(probs, estimator.samples, persona_seeds(run_seed, persona_ids, item_ids))
