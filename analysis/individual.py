"""Individual-level fidelity: does the persona bound to *this* person answer as this person did?

Every other figure of a report compares a group of personas with a group of
people. Here each persona is scored against its own respondent (Park et al.
2024, "Generative agent simulations of 1,000 people"; Twin-2K-500, 2025), for
every condition whose personas are bound to respondents (matching of any kind,
Anthology (DP), the rule-based profiles).

Item score of persona ``i`` on item ``j``, whose respondent answered option
``h`` (``p``: the persona's option distribution as the report's estimator reads
it -- exact probabilities, or the frequencies of its sampled answers)::

    nominal item:  s_ij = p_h                              (expected exact agreement)
    ordinal item:  s_ij = 1 - sum_k p_k |x_k - x_h|        (1 - expected distance)

with option positions ``x`` rescaled to [0, 1], so both lie in [0, 1] and 1 is
the respondent's own answer for sure. A person's agreement ``a_i`` is the mean
of ``s_ij`` over the items both answered; the overall figure is the
survey-weighted mean over people, with a 95% percentile bootstrap interval over
people. The same score is applied to three baselines on the same people:

* **demographic cell**: the best single answer of the respondent's cell --
  the people who share every matching trait (a refused trait is a value of
  its own) -- in the reference sample (the study's respondents, before any
  ``human.sample``), **leaving the respondent out**, so their own answer does
  not vote for itself. The best single answer is the cell's weighted mode on
  a nominal item (it maximises expected exact agreement) and its weighted
  median on an ordinal one (it minimises expected distance; the mode of a
  spread-out 8-point item is a weak bar). A cell with nobody else who
  answered the item falls back to the whole reference sample, leave-one-out
  (counted in ``cell_fallback``). Ties go to the lowest option.
* **population marginal**: the population's (leave-one-out, weighted) answer
  distribution, scored like a persona's -- what a persona that reproduces the
  population perfectly but knows nothing of its person scores.
* **shuffled binding**: each person scored against another person's persona
  (``n_shuffles`` seeded random cycles -- nobody keeps their own -- averaged).

Chance-corrected agreement (Cohen's kappa against the marginal):
``kappa = (A - M) / (1 - M)``, ``A`` the persona agreement, ``M`` the marginal
baseline. A persona that copies its respondent's answer with probability ``q``
and otherwise draws from the marginal has ``A = q + (1 - q) M``, so kappa
recovers ``q``; an unbound persona has kappa 0.

Ceiling (Park et al.'s normalisation): where the study re-asked the questions
(``retest:`` in its YAML), the respondents' own test-retest agreement ``r_i``
(the score of the first answer against the second) bounds what any persona can
reach, and ``normalized accuracy = sum_i w_i a'_i / sum_i w_i r_i`` over the
people with a re-test, ``a'_i`` the persona agreement on the re-tested items.
A ratio of means, not Park et al.'s mean of per-person ratios: with few items a
person's own retest agreement is often 0 (an 8-point item re-answered one
point off) and the ratio would be undefined. Without a retest the ceiling is
unknown and stays NaN.

All functions are pure numpy; :func:`individual_fidelity` returns a typed
:class:`IndividualFidelity`. The item scores are in :mod:`analysis.individual_scores`,
the baselines in :mod:`analysis.individual_baselines`; :mod:`analysis.individual_report`
renders several results (table, alert, plot).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.individual_baselines import Reference, baseline_distributions, shuffled_scores
from analysis.individual_scores import item_scores, one_hot, person_means

UNKNOWN_CEILING = "unknown (no retest)"


@dataclass(frozen=True)
class Interval:
    """A figure with its 95% bootstrap interval (NaN when undefined)."""

    value: float
    low: float = float("nan")
    high: float = float("nan")

    def text(self, digits: int = 3) -> str:
        if not np.isfinite(self.value):
            return "n/a"
        ci = f" [{self.low:.{digits}f}, {self.high:.{digits}f}]" if np.isfinite(self.low) else ""
        return f"{self.value:.{digits}f}{ci}"


NAN = Interval(float("nan"))


@dataclass(frozen=True)
class IndividualFidelity:
    """One condition's individual-level figures (see the module docstring)."""

    condition: str
    n_people: int
    n_items: int
    agreement: Interval  # persona vs its own respondent
    exact: float  # mean expected exact agreement, every item
    distance: float  # mean expected |x - x_h| on [0, 1], ordinal items (NaN: none)
    cell: Interval  # the best single answer of the respondent's demographic cell (leave-one-out)
    marginal: Interval  # population marginal (leave-one-out), scored like a persona
    shuffled: Interval  # the personas re-assigned to random other respondents
    vs_cell: Interval  # mean over people of a_i - cell_i (paired)
    kappa: Interval  # (A - M) / (1 - M)
    retest: Interval  # respondents' own test-retest agreement (NaN: no retest)
    normalized: Interval  # persona agreement / retest agreement on the re-tested items
    n_retest: int  # people with a re-test
    cell_fallback: float  # share of (person, item) whose cell had nobody else: marginal mode used
    per_person: pd.DataFrame  # one row per person: agreement, cell, marginal, shuffled, retest

    @property
    def beats_cell(self) -> bool:
        """The persona agreement exceeds the demographic cell's: the paired difference's interval lies above 0."""
        return bool(np.isfinite(self.vs_cell.low) and self.vs_cell.low > 0)

    @property
    def has_ceiling(self) -> bool:
        return bool(np.isfinite(self.retest.value))

    def verdict(self) -> str:
        if not np.isfinite(self.vs_cell.value):
            return "n/a"
        return "beats its demographic cell" if self.beats_cell else "no better than its demographic cell"

    def row(self) -> dict:
        """The short report row (formatted)."""
        return {
            "condition": self.condition,
            "people": self.n_people,
            "items": self.n_items,
            "agreement": self.agreement.text(),
            "demographic_cell": self.cell.text(),
            "marginal": self.marginal.text(),
            "shuffled": self.shuffled.text(),
            "vs_cell": self.vs_cell.text(),
            "verdict": self.verdict(),
            "kappa": self.kappa.text(),
            "retest_ceiling": self.retest.text() if self.has_ceiling else UNKNOWN_CEILING,
            "normalized_accuracy": self.normalized.text() if self.has_ceiling else UNKNOWN_CEILING,
        }

    def record(self) -> dict:
        """Every figure as a number (JSON-ready; NaN -> None)."""
        out: dict = {"condition": self.condition, "people": self.n_people, "items": self.n_items, "people_with_retest": self.n_retest}
        for name in ("agreement", "cell", "marginal", "shuffled", "vs_cell", "kappa", "retest", "normalized"):
            iv = getattr(self, name)
            for part in ("value", "low", "high"):
                v = getattr(iv, part)
                out[name if part == "value" else f"{name}_{part}"] = float(v) if np.isfinite(v) else None
        for name in ("exact", "distance", "cell_fallback"):
            v = getattr(self, name)
            out[name] = float(v) if np.isfinite(v) else None
        out["beats_cell"] = self.beats_cell
        return out


# ---------------------------------------------------------------------------
# Bootstrap over people
# ---------------------------------------------------------------------------


def _wmean(values: np.ndarray, weights: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray | float:
    """Weighted mean over people with a finite value; over resamples ``idx [B, N]`` when given."""
    v = values if idx is None else values[idx]
    w = weights if idx is None else weights[idx]
    w = np.where(np.isfinite(v), w, 0.0)
    num = (w * np.nan_to_num(v)).sum(axis=-1)
    den = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _interval(point: float, draws: np.ndarray) -> Interval:
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(point) or draws.size == 0:
        return Interval(float(point))
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(float(point), float(low), float(high))


def individual_fidelity(
    dists,
    answers,
    positions,
    nominal,
    demographics,
    weights=None,
    *,
    retest=None,
    reference: Reference | None = None,
    self_index=None,
    condition: str = "",
    ids=None,
    n_boot: int = 1000,
    n_shuffles: int = 20,
    seed: int = 0,
) -> IndividualFidelity:
    """Score ``N`` bound personas against their own respondents.

    ``dists [N, Q, K]``: persona ``i``'s option distributions (row ``i`` is bound
    to respondent ``i``), as the report's estimator reads them; ``answers [N,
    Q]``: the respondents' option indices (NaN = missing); ``positions [Q, K]``
    on [0, 1]; ``nominal [Q]``; ``demographics [N, T]``: the matching traits'
    codes (-1 = refused); ``weights [N]`` (default ones); ``retest [N, Q]``:
    the same respondents' re-test answers (NaN = none; None: no retest);
    ``reference`` / ``self_index [N]``: the respondents the baselines are read
    from and each person's row there (-1 = absent; default: the N people
    themselves); ``ids [N]``: the people's labels in ``per_person`` (default 0..N-1).
    """
    dists = np.asarray(dists, dtype=float)
    answers = np.asarray(answers, dtype=float)
    n, q, k = dists.shape
    if answers.shape != (n, q):
        raise ValueError(f"answers must be [{n}, {q}] like the persona distributions, got {answers.shape}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    demographics = np.asarray(demographics, dtype=np.int64).reshape(n, -1)
    if reference is None:
        reference, self_index = Reference(answers, demographics, w), np.arange(n)
    elif self_index is None:
        self_index = np.full(n, -1)

    score, exact, distance = item_scores(dists, answers, positions, nominal)
    a = person_means(score)
    mode, marg, fallback = baseline_distributions(answers, demographics, reference, self_index, k, positions, nominal)
    c = person_means(item_scores(mode, answers, positions, nominal)[0])
    m = person_means(item_scores(marg, answers, positions, nominal)[0])
    s = shuffled_scores(dists, answers, positions, nominal, n_shuffles=n_shuffles, seed=seed)
    if retest is not None:
        rt = np.asarray(retest, dtype=float)
        r_item = item_scores(one_hot(answers, k), rt, positions, nominal)[0]
        r = person_means(r_item)
        a_r = person_means(np.where(np.isfinite(r_item), score, np.nan))
    else:
        r = a_r = np.full(n, np.nan)
    has_r = np.isfinite(r) & np.isfinite(a_r)

    def point(v):
        return float(_wmean(v, w))

    def normalized(x, y, idx=None):
        return _wmean(np.where(has_r, x, np.nan), w, idx) / _wmean(np.where(has_r, y, np.nan), w, idx)

    def kappa(x, y, idx=None):
        ax, my = _wmean(x, w, idx), _wmean(y, w, idx)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (ax - my) / (1 - my)

    est = {
        "agreement": point(a), "cell": point(c), "marginal": point(m), "shuffled": point(s),
        "vs_cell": point(a - c), "kappa": float(kappa(a, m)),
        "retest": point(np.where(has_r, r, np.nan)), "normalized": float(normalized(a_r, r)) if has_r.any() else float("nan"),
    }
    draws: dict[str, list[np.ndarray]] = {key: [] for key in est}
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // max(n, 1))  # bounds the [B, N] resample arrays
    for start in range(0, n_boot if n > 1 else 0, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        draws["agreement"].append(_wmean(a, w, idx))
        draws["cell"].append(_wmean(c, w, idx))
        draws["marginal"].append(_wmean(m, w, idx))
        draws["shuffled"].append(_wmean(s, w, idx))
        draws["vs_cell"].append(_wmean(a - c, w, idx))
        draws["kappa"].append(kappa(a, m, idx))
        if has_r.any():
            draws["retest"].append(_wmean(np.where(has_r, r, np.nan), w, idx))
            with np.errstate(invalid="ignore", divide="ignore"):
                draws["normalized"].append(normalized(a_r, r, idx))
    iv = {key: _interval(est[key], np.concatenate(v) if v else np.zeros(0)) for key, v in draws.items()}
    answered = np.isfinite(score)
    per_person = pd.DataFrame(
        {"agreement": a, "demographic_cell": c, "marginal": m, "shuffled": s, "retest": r, "items": answered.sum(axis=1)},
        index=pd.Index(np.arange(n) if ids is None else np.asarray(ids), name="person"),
    )
    return IndividualFidelity(
        condition=condition,
        n_people=int(np.isfinite(a).sum()),
        n_items=int(answered.any(axis=0).sum()),
        agreement=iv["agreement"],
        exact=float(np.nanmean(exact)) if np.isfinite(exact).any() else float("nan"),
        distance=float(np.nanmean(distance)) if np.isfinite(distance).any() else float("nan"),
        cell=iv["cell"],
        marginal=iv["marginal"],
        shuffled=iv["shuffled"],
        vs_cell=iv["vs_cell"],
        kappa=iv["kappa"],
        retest=iv["retest"],
        normalized=iv["normalized"],
        n_retest=int(has_r.sum()),
        cell_fallback=float(fallback[answered].mean()) if answered.any() else float("nan"),
        per_person=per_person,
    )
