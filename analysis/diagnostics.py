"""Binding diagnostics: do the answers depend on the persona at all?

A small model can give every persona the same answer distribution whatever its
backstory, and lean towards the first (or last) option letter. Its "persona
answers" are then the model's position bias, and gaps between conditions are
noise. These diagnostics, per condition, make that visible:

* :func:`between_persona_share` -- share of the answer variance that lies
  between personas (0: the persona does not matter);
* :func:`mean_js_divergence` -- mean Jensen-Shannon divergence between
  personas' distributions (0: identical);
* :func:`position_bias` -- total-variation distance between the distributions
  a persona gives when the options are shown forward and reversed (mapped back
  to the same order; 0: the order does not matter);
* :func:`outside_mass` -- probability the engine put outside the option
  letters.

All functions are pure numpy on ``[N, K]`` (personas x options) arrays of one
item; :func:`diagnose` combines them over a condition's items. Personas can
differ from each other and still not follow their people: the individual-level
warning (:func:`analysis.individual_report.no_binding_alert`) fires beside these when
no condition beats its respondents' demographic cell.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Below this share of between-persona variance and this mean JS divergence a
#: condition's personas are reported as indistinguishable: less than 10% of the
#: answer variance depends on which persona answers, and two personas' answer
#: distributions are on average closer than 0.05 bits (a model that binds
#: personas gives shares of 0.2 and more, JS of 0.1 bits and more).
INDISTINGUISHABLE_SHARE = 0.10
INDISTINGUISHABLE_JS = 0.05


def _rows(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"expected [personas, options] distributions, got shape {p.shape}")
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.zeros_like(p), where=total > 0)


def between_persona_share(probs, positions: Sequence[float] | None = None) -> float:
    """Share of the answer variance between personas.

    Persona ``i`` answers position ``x`` with probability ``p_ik``; its mean is
    ``m_i = sum_k p_ik x_k`` and its variance ``v_i = sum_k p_ik (x_k - m_i)^2``.
    For the answer of a random persona (equal weights), the law of total
    variance gives ``Var = mean_i v_i + var_i m_i``; the share is
    ``var_i m_i / (mean_i v_i + var_i m_i)`` (population variance of the
    ``m_i``), in [0, 1]: 0 when every persona has the same mean answer, 1 when
    every persona answers deterministically and they differ. NaN when the
    total variance is 0.
    """
    p = _rows(probs)
    x = np.arange(p.shape[1], dtype=float) if positions is None else np.asarray(positions, dtype=float)
    m = p @ x
    v = p @ x**2 - m**2
    between = float(np.var(m))
    total = float(np.mean(v)) + between
    return between / total if total > 1e-15 else float("nan")


def js_divergence(p, q) -> np.ndarray:
    """Jensen-Shannon divergence in bits, row-wise:
    ``JS(p, q) = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2`` and
    ``KL(a || b) = sum_k a_k log2(a_k / b_k)`` (terms with ``a_k = 0`` are 0).
    Symmetric, in [0, 1]; 0 iff ``p = q``."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    m = (p + q) / 2

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0).sum(axis=-1)

    return (kl(p, m) + kl(q, m)) / 2


def mean_js_divergence(probs, max_personas: int = 400, seed: int = 0) -> float:
    """Mean JS divergence (bits) over all pairs ``i < j`` of personas:
    ``(2 / (N (N - 1))) sum_{i<j} JS(p_i, p_j)``. Above ``max_personas`` a
    seeded random subset of that size is used (the pair count grows as N^2).
    NaN for fewer than two personas."""
    p = _rows(probs)
    if p.shape[0] < 2:
        return float("nan")
    if p.shape[0] > max_personas:
        p = p[np.sort(np.random.default_rng(seed).choice(p.shape[0], max_personas, replace=False))]
    i, j = np.triu_indices(p.shape[0], k=1)
    return float(js_divergence(p[i], p[j]).mean())


def position_bias(forward, reversed_) -> float:
    """Mean total-variation distance between order conditions:
    ``TV_i = (1/2) sum_k |f_ik - r_ik|`` averaged over personas, where ``f_i``
    and ``r_i`` are persona ``i``'s distributions with the options shown in
    forward and in reversed order, both indexed by the *original* option. In
    [0, 1]: 0 when the order does not change the answer; a model that always
    picks the first letter has TV 1 (for K >= 2)."""
    f, r = _rows(forward), _rows(reversed_)
    if f.shape != r.shape:
        raise ValueError(f"forward and reversed distributions differ in shape: {f.shape} vs {r.shape}")
    return float((0.5 * np.abs(f - r).sum(axis=1)).mean()) if len(f) else float("nan")


def outside_mass(masses) -> float:
    """Mean probability outside the option letters: ``mean_i o_i`` (0..1)."""
    m = np.asarray(masses, dtype=float)
    return float(m.mean()) if m.size else float("nan")


@dataclass(frozen=True)
class ConditionDiagnostics:
    """One condition's diagnostics, each averaged over its items."""

    condition: str
    n_personas: int
    between_share: float
    js: float
    position_bias: float  # NaN when not probed
    n_probed: int  # personas asked in both orders
    outside_mass: float

    @property
    def indistinguishable(self) -> bool:
        return (
            np.isfinite(self.between_share)
            and self.between_share < INDISTINGUISHABLE_SHARE
            and (not np.isfinite(self.js) or self.js < INDISTINGUISHABLE_JS)
        ) or (not np.isfinite(self.between_share) and self.n_personas > 1)

    def verdict(self) -> str:
        """One line: the warning when the personas are indistinguishable, else ''."""
        if not self.indistinguishable:
            return ""
        bias = f"; position bias (TV forward vs reversed) {self.position_bias:.3f}" if np.isfinite(self.position_bias) else ""
        return (
            f"WARNING {self.condition}: personas are indistinguishable (between-persona variance share "
            f"{self.between_share:.3f}, mean JS {self.js:.4f} bits{bias}): its answers reflect the model, not the personas; "
            "do not read its gaps or distances as findings."
        )

    def row(self) -> dict:
        return {
            "condition": self.condition,
            "personas": self.n_personas,
            "between_persona_share": self.between_share,
            "mean_js_bits": self.js,
            "position_bias_tv": self.position_bias,
            "personas_probed": self.n_probed,
            "outside_mass": self.outside_mass,
            "indistinguishable": "yes" if self.indistinguishable else "no",
        }


def diagnose(
    condition: str,
    items: Sequence[np.ndarray],
    outside: Sequence[np.ndarray],
    forward: Sequence[np.ndarray] = (),
    reversed_: Sequence[np.ndarray] = (),
    seed: int = 0,
) -> ConditionDiagnostics:
    """Average the per-item diagnostics over a condition's items.

    ``items``: per item, ``[N, K]`` persona distributions; ``outside``: per
    item, ``[N]`` outside masses; ``forward`` / ``reversed_``: per item, the
    probed personas' ``[M, K]`` distributions in each order (may be empty).
    """
    shares = [between_persona_share(p) for p in items if len(p)]
    js = [mean_js_divergence(p, seed=seed) for p in items if len(p) > 1]
    bias = [position_bias(f, r) for f, r in zip(forward, reversed_) if len(f)]
    mass = np.concatenate([np.asarray(o, dtype=float) for o in outside]) if outside else np.zeros(0)

    def avg(v):
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    return ConditionDiagnostics(
        condition=condition,
        n_personas=max((len(p) for p in items), default=0),
        between_share=avg(shares),
        js=avg(js),
        position_bias=avg(bias),
        n_probed=max((len(f) for f in forward), default=0),
        outside_mass=outside_mass(mass),
    )
