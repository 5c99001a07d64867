"""What the personas answered, as :func:`analysis.evaluation.evaluate` takes it.

Option distributions and/or one sampled answer per persona and question
(:class:`PersonaAnswers`), checked against the study's questions; where only
distributions are given, one answer each is drawn from them (seeded).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PersonaAnswers:
    """What the personas answered, one row per persona, questions in the study's order.

    ``probs``: ``[N, Q, K_max]`` option distributions (question ``q`` uses its
    first ``K_q`` entries; a row without mass means no answer).
    ``sampled``: ``[N, Q]`` option index of one sampled answer, ``-1`` = none.
    Give either or both.
    """

    probs: np.ndarray | None = None
    sampled: np.ndarray | None = None

    @classmethod
    def coerce(cls, answers) -> PersonaAnswers:
        """Accept a :class:`PersonaAnswers`, a ``[N, Q, K]`` distribution array or a ``[N, Q]`` index array."""
        if isinstance(answers, PersonaAnswers):
            return answers
        a = np.asarray(answers)
        if a.ndim == 3:
            return cls(probs=a.astype(float))
        if a.ndim == 2:
            return cls(sampled=np.where(np.isfinite(a.astype(float)), a, -1).astype(np.int64))
        raise ValueError(
            f"persona answers must be [personas, questions, options] distributions or [personas, questions] indices, got shape {a.shape}"
        )

    @property
    def n_rows(self) -> int:
        return (self.probs if self.probs is not None else self.sampled).shape[0]


def check_answers(study, answers: PersonaAnswers) -> PersonaAnswers:
    """Validate shapes against the study and renormalise each question's option distribution."""
    nq = len(study.questions)
    probs, sampled = answers.probs, answers.sampled
    if probs is None and sampled is None:
        raise ValueError("persona answers: give option distributions (probs) or sampled answers")
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        kmax = max(q.n_options for q in study.questions)
        if probs.ndim != 3 or probs.shape[1] != nq or probs.shape[2] < kmax:
            raise ValueError(f"persona probs must have shape [personas, {nq} questions, >= {kmax} options], got {probs.shape}")
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise ValueError("persona probs must be finite and >= 0")
        clean = np.zeros_like(probs)
        for j, q in enumerate(study.questions):
            extra = probs[:, j, q.n_options :].sum(axis=1)
            if (extra > 1e-6).any():
                raise ValueError(f"persona probs: question '{q.id}' has {q.n_options} options but mass beyond them")
            block = probs[:, j, : q.n_options]
            total = block.sum(axis=1, keepdims=True)
            clean[:, j, : q.n_options] = np.divide(block, total, out=np.zeros_like(block), where=total > 0)
        probs = clean
    if sampled is not None:
        sampled = np.asarray(sampled, dtype=np.int64)
        if sampled.ndim != 2 or sampled.shape[1] != nq:
            raise ValueError(f"persona sampled answers must have shape [personas, {nq} questions], got {sampled.shape}")
        if probs is not None and sampled.shape[0] != probs.shape[0]:
            raise ValueError(f"persona probs have {probs.shape[0]} rows but sampled answers {sampled.shape[0]}")
        for j, q in enumerate(study.questions):
            if (sampled[:, j] >= q.n_options).any() or (sampled[:, j] < -1).any():
                raise ValueError(f"persona sampled answers: question '{q.id}' has an index outside -1..{q.n_options - 1}")
    return PersonaAnswers(probs=probs, sampled=sampled)


def draw_answers(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sampled option per persona and question (inverse CDF); -1 where there is no mass."""
    cdf = np.cumsum(probs, axis=2)
    u = rng.random(probs.shape[:2])[..., None] * cdf[..., -1:]
    drawn = np.minimum((cdf <= u).sum(axis=2), probs.shape[2] - 1)
    return np.where(cdf[..., -1] > 0, drawn, -1)
