"""What :func:`analysis.evaluation.evaluate` returns: the :class:`Evaluation` of one
persona condition, with its per-question (:class:`QuestionResult`) and
per-subgroup (:class:`GroupResult`) results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import ConfidenceInterval
from analysis.lower_bound import LowerBound
from analysis.matching import WeightStats


@dataclass(frozen=True)
class QuestionResult:
    id: str
    text: str
    options: tuple[str, ...]
    wd: float
    human_dist: np.ndarray
    persona_dist: np.ndarray
    n_humans: int  # humans who answered


@dataclass(frozen=True)
class GroupResult:
    """Metrics for one subgroup of humans (``trait`` = ``group``) and their matched personas."""

    trait: str
    group: str
    n_humans: int
    wd: float
    fro: float
    alpha_human: float
    alpha_persona: float
    lower_bound: LowerBound | None
    questions: list[QuestionResult] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate` computes for one persona condition."""

    study: str
    condition: str
    matching: str | None
    normalize: bool
    n_humans: int
    n_personas: int  # distinct personas used
    questions: list[QuestionResult]
    wd: float
    fro: float
    alpha_human: float
    alpha_persona: float
    corr_human: np.ndarray | None
    corr_persona: np.ndarray | None
    ci: dict[str, ConfidenceInterval]
    lower_bound: LowerBound | None
    subgroups: list[GroupResult]
    match_stats: WeightStats | None = None
    notes: tuple[str, ...] = ()
    # Per scale of the study (``scales:``): name -> (human alpha, persona alpha).
    scale_alpha: dict[str, tuple[float, float]] = field(default_factory=dict)
    human_data: str = "respondents"  # or "aggregate" (published counts: WD only)
    weighted: bool = False  # the humans carry survey weights
    # What was applied to the human data, one line each (the report header), and the
    # study's warnings (repeated in the report, never only on the console).
    scope: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.condition} ({self.matching})" if self.matching else self.condition

    def summary(self) -> dict[str, float | str | None]:
        """The headline numbers as a flat dict (for logs and tables)."""
        out: dict[str, float | str | None] = {
            "study": self.study,
            "condition": self.condition,
            "matching": self.matching,
            "n_humans": self.n_humans,
            "wd": self.wd,
            "fro": self.fro,
            "alpha_human": self.alpha_human,
            "alpha_persona": self.alpha_persona,
        }
        for k, ci in self.ci.items():
            out[f"{k}_low"], out[f"{k}_high"] = ci.low, ci.high
        if self.lower_bound is not None:
            out.update(lb_wd=self.lower_bound.wd, lb_fro=self.lower_bound.fro, lb_alpha=self.lower_bound.alpha)
        return out
