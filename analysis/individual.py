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
:class:`IndividualFidelity`, :func:`individual_table` / :func:`plot_individual`
render several of them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
class Reference:
    """The respondents the cell and marginal baselines are read from (default: the
    evaluated people). ``answers [M, Q]`` option indices (NaN = missing),
    ``demographics [M, T]`` trait codes (-1 = refused), ``weights [M]``."""

    answers: np.ndarray
    demographics: np.ndarray
    weights: np.ndarray


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
# Item scores
# ---------------------------------------------------------------------------


def _normalise(dists: np.ndarray) -> np.ndarray:
    total = dists.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, dists / np.where(total > 0, total, 1), np.nan)


def item_scores(dists, answers, positions, nominal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, exact, distance)``, each ``[N, Q]``.

    ``dists [N, Q, K]``: option distributions (renormalised; a row without mass
    is no answer); ``answers [N, Q]``: the respondents' option indices (NaN =
    missing); ``positions [Q, K]``: option positions on [0, 1] (padding
    ignored); ``nominal [Q]``. ``exact = p_h``; ``distance = sum_k p_k |x_k -
    x_h|`` (NaN for nominal items); ``s`` = exact on nominal items and
    ``1 - distance`` on ordinal ones. NaN where either side has no answer.
    """
    p = _normalise(np.asarray(dists, dtype=float))
    h = np.asarray(answers, dtype=float)
    x = np.asarray(positions, dtype=float)
    nominal = np.asarray(nominal, dtype=bool)
    ok = np.isfinite(h) & np.isfinite(p).all(axis=-1)
    hi = np.where(ok, h, 0).astype(np.int64)
    exact = np.take_along_axis(np.nan_to_num(p), hi[..., None], axis=-1)[..., 0]
    xh = np.take_along_axis(np.broadcast_to(x, p.shape), hi[..., None], axis=-1)
    distance = (np.nan_to_num(p) * np.abs(np.nan_to_num(x)[None] - xh)).sum(axis=-1)
    exact = np.where(ok, exact, np.nan)
    distance = np.where(ok & ~nominal[None], distance, np.nan)
    score = np.where(nominal[None], exact, 1.0 - distance)
    return np.where(ok, score, np.nan), exact, distance


def one_hot(answers, k: int) -> np.ndarray:
    """``[N, Q]`` option indices (NaN = missing) -> ``[N, Q, K]`` (all zero where missing)."""
    a = np.asarray(answers, dtype=float)
    out = np.zeros((*a.shape, k))
    ok = np.isfinite(a)
    idx = np.nonzero(ok)
    out[(*idx, a[ok].astype(np.int64))] = 1.0
    return out


def person_means(scores: np.ndarray) -> np.ndarray:
    """Mean over each person's scored items; NaN for a person with none."""
    s = np.asarray(scores, dtype=float)
    n = np.isfinite(s).sum(axis=1)
    return np.where(n > 0, np.nansum(s, axis=1) / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------


def cell_codes(demographics, reference_demographics) -> tuple[np.ndarray, np.ndarray]:
    """One integer per distinct row of trait codes, shared by both arrays (a refused trait, -1, is a value of its own)."""
    d = np.asarray(demographics, dtype=np.int64).reshape(len(demographics), -1)
    r = np.asarray(reference_demographics, dtype=np.int64).reshape(len(reference_demographics), -1)
    _, inverse = np.unique(np.vstack([d, r]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse[: len(d)], inverse[len(d) :]


def _counts(answers: np.ndarray, weights: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """``[G, Q, K]`` weighted answer counts per group."""
    out = np.zeros((n_groups, answers.shape[1], k))
    np.add.at(out, groups, one_hot(answers, k) * weights[:, None, None])
    return out


def best_answer(counts: np.ndarray, positions, nominal) -> np.ndarray:
    """``[..., Q]`` option index from ``[..., Q, K]`` weighted counts: the mode
    (``argmax_k C_k``) on nominal items, the weighted median on ordinal ones (the
    first option, in position order, where the cumulative count reaches half the
    total); NaN without counts. Ties go to the lowest option."""
    c = np.asarray(counts, dtype=float)
    x = np.asarray(positions, dtype=float)
    order = np.argsort(x, axis=-1, kind="stable")  # [Q, K]
    ranked = np.take_along_axis(c, np.broadcast_to(order, c.shape), axis=-1)
    cum = np.cumsum(ranked, axis=-1)
    half = cum[..., -1:] / 2
    at = np.argmax(cum >= half - 1e-12, axis=-1)
    median = np.take_along_axis(np.broadcast_to(order, c.shape), at[..., None], axis=-1)[..., 0]
    pick = np.where(np.asarray(nominal, dtype=bool), c.argmax(axis=-1), median)
    return np.where(c.sum(axis=-1) > 0, pick, np.nan)


def baseline_distributions(answers, demographics, reference: Reference, self_index, k: int, positions=None, nominal=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cell_best [N, Q, K] one-hot, marginal [N, Q, K], fallback [N, Q])``.

    For person ``i`` with reference row ``self_index[i]`` (-1: not in the
    reference), counts ``C_c = sum_{m in cell c} w_m onehot(a_m)`` minus the
    person's own ``w_i onehot(a_i)`` (leave-one-out); the cell's answer is
    :func:`best_answer` of ``C_c`` (default: every item nominal, the mode); the
    marginal is ``sum_c C_c`` minus the same, normalised.
    """
    a = np.asarray(answers, dtype=float)
    ref_a = np.asarray(reference.answers, dtype=float)
    ref_w = np.asarray(reference.weights, dtype=float)
    me, ref_cells = cell_codes(demographics, reference.demographics)
    n_cells = int(max(me.max(initial=-1), ref_cells.max(initial=-1)) + 1)
    by_cell = _counts(ref_a, ref_w, ref_cells, n_cells, k)
    total = by_cell.sum(axis=0)
    idx = np.asarray(self_index, dtype=np.int64)
    own = np.zeros((len(a), a.shape[1], k))
    inside = idx >= 0
    own[inside] = one_hot(ref_a[idx[inside]], k) * ref_w[idx[inside], None, None]
    cell = np.clip(by_cell[me] - own, 0, None)
    marg = np.clip(total[None] - own, 0, None)
    fallback = cell.sum(axis=-1) <= 1e-12
    cell = np.where(fallback[..., None], marg, cell)
    q = a.shape[1]
    positions = np.tile(np.arange(k, dtype=float), (q, 1)) if positions is None else positions
    nominal = np.ones(q, dtype=bool) if nominal is None else nominal
    return one_hot(best_answer(cell, positions, nominal), k), _normalise(marg), fallback & np.isfinite(a)


def shuffled_scores(dists, answers, positions, nominal, n_shuffles: int = 20, seed: int = 0) -> np.ndarray:
    """``[N]``: each person's agreement with a randomly re-assigned persona,
    averaged over ``n_shuffles`` seeded permutations of the binding."""
    rng = np.random.default_rng(seed)
    n = len(answers)
    out = np.zeros(n)
    seen = np.zeros(n)
    for _ in range(n_shuffles):
        # A random cycle: nobody keeps their own persona (a plain permutation
        # would leave ~1 person bound, a large share of a small sample).
        order = rng.permutation(n)
        persona = np.empty(n, dtype=np.int64)
        persona[order] = np.roll(order, -1)
        s = person_means(item_scores(np.asarray(dists)[persona], answers, positions, nominal)[0])
        ok = np.isfinite(s)
        out[ok] += s[ok]
        seen[ok] += 1
    return np.where(seen > 0, out / np.maximum(seen, 1), np.nan)


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


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def individual_table(results: Sequence[IndividualFidelity]) -> pd.DataFrame:
    """The report's short table: one row per condition, each figure with its interval."""
    return pd.DataFrame([r.row() for r in results])


def no_binding_alert(results: Sequence[IndividualFidelity]) -> str:
    """One line when no condition's personas beat their respondents' demographic cell ('' otherwise)."""
    scored = [r for r in results if np.isfinite(r.vs_cell.value)]
    if not scored or any(r.beats_cell for r in scored):
        return ""
    shown = ", ".join(f"{r.condition} {r.vs_cell.text()}" for r in scored)
    return (
        "WARNING individual level: no condition beats its respondents' demographic cell (persona agreement minus the "
        f"cell's best answer, 95% CI: {shown}): the personas answer like their demographics, not like their people."
    )


def describe(answers: str, retest_note: str = "", weighted: bool = True) -> str:
    """The estimator of the individual-level figures, in words, for the report header
    (``weighted``: whether the study has survey weights; unweighted data say so)."""
    ceiling = f"ceiling: the respondents' own test-retest agreement ({retest_note})" if retest_note else "ceiling unknown: the study has no retest"
    over = "survey-weighted over people" if weighted else "averaged over people (unweighted data)"
    return (
        f"individual level: each persona against its own respondent under the same {answers} (nominal items: expected exact "
        f"agreement; ordinal: 1 - expected distance on [0, 1] positions), per person then {over}, "
        f"95% bootstrap over people; {ceiling}"
    )


NOTE = (
    "individual_level: each bound persona scored against its own respondent (nominal items: expected exact agreement; "
    "ordinal: 1 - expected |position - respondent's position| on [0, 1]; 1 = the respondent's answer for sure), averaged "
    "per person over the items both answered, then over people (survey weights) with a 95% percentile bootstrap over "
    "people. Baselines on the same people, scored the same way: demographic_cell = the best single answer of the "
    "respondents who share every matching trait (mode of a nominal item, median of an ordinal one), leaving the respondent "
    "out, so their own answer does not count; a cell with nobody else falls back to the whole population); marginal = "
    "the population's leave-one-out answer distribution; shuffled = each person scored against another person's persona "
    "(20 random cycles). vs_cell = mean per-person difference from the demographic cell (a persona that "
    "does not beat it has not bound to its person); kappa = (agreement - marginal) / (1 - marginal), the share of answers "
    "that follow the person beyond the population. retest_ceiling = the respondents' agreement with their own re-test; "
    "normalized_accuracy = persona agreement / retest agreement on the re-tested items (ratio of means over people; "
    "Park et al. 2024)."
)


def plot_individual(results: Sequence[IndividualFidelity], title: str):
    """Per condition: persona agreement (95% CI) beside the demographic cell, the
    marginal and the shuffled binding, with the retest ceiling as a dashed line
    (or 'ceiling unknown')."""
    from analysis.report import new_figure

    fig = new_figure(max(5.0, 1.9 * len(results) + 2.5), 4.2)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.3, top=0.86)
    ax = fig.add_subplot(1, 1, 1)
    bars = (("persona", "agreement", "#dd8452"), ("demographic cell", "cell", "#4c72b0"), ("marginal", "marginal", "#8c8c8c"), ("shuffled", "shuffled", "#c7c7c7"))
    width = 0.8 / len(bars)
    x = np.arange(len(results))
    for b, (label, attr, color) in enumerate(bars):
        ivs = [getattr(r, attr) for r in results]
        vals = np.array([iv.value for iv in ivs])
        err = np.array([[max(0.0, iv.value - iv.low), max(0.0, iv.high - iv.value)] if np.isfinite(iv.low) else [0.0, 0.0] for iv in ivs]).T
        ax.bar(x + (b - (len(bars) - 1) / 2) * width, np.nan_to_num(vals), width, yerr=np.nan_to_num(err), capsize=2, label=label, color=color)
    for j, r in enumerate(results):
        if r.has_ceiling:
            ax.hlines(r.retest.value, j - 0.45, j + 0.45, colors="black", linestyles="dashed", label="retest ceiling" if j == 0 else None)
        else:
            ax.text(j, 0.02, "ceiling unknown", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, [r.condition for r in results], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("agreement with own respondent")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=10)
    return fig
