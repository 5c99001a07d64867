"""Eq. 21 / eq. 22 estimators on planted data (no model): the pooled signed gap's
cluster-bootstrap interval covers zero when representatives change nothing, the
absolute gap is no larger than the null row's noise floor, and a planted shift
is detected."""
from __future__ import annotations

import numpy as np
import pytest

from mechanisms.value_equivalence import (
    INTERVAL_GROUPS,
    INTERVAL_ROLLOUTS,
    NULL_SET,
    PayoffSample,
    pooled_gap,
    pooled_mean,
    pooled_table,
)

GROUPS, SLOTS, ROLLOUTS, NOISE = 24, 5, 10, 0.5


def planted(rng: np.random.Generator, shift: float = 0.0) -> list[PayoffSample]:
    """Per group: participants' true payoffs, a per-rollout shared effect (the
    statement everyone rates) and per-rating noise; the set's rollouts add
    ``shift``, the null row's are the originals under other seeds."""
    out = []
    for g in range(GROUPS):
        truth = rng.normal(4.0, 1.0) + rng.normal(0, 0.7, SLOTS)

        def arm(delta=0.0):
            return truth + delta + rng.normal(0, 0.3, (ROLLOUTS, 1)) + rng.normal(0, NOISE, (ROLLOUTS, SLOTS))

        orig = arm()
        wins = tuple(np.clip(rng.normal(0.5, 0.1, ROLLOUTS), 0, 1))
        out.append(PayoffSample(f"g{g}", "OC", "all", arm(shift), orig, wins))
        out.append(PayoffSample(f"g{g}", NULL_SET, "all", arm(), orig, tuple(np.clip(rng.normal(0.5, 0.1, ROLLOUTS), 0, 1))))
    return out


@pytest.mark.fast
def test_pooled_signed_interval_covers_zero_and_absolute_gap_matches_the_null_row():
    reps, covered, excess_covered, win_covered = 200, 0, 0, 0
    gaps, nulls = [], []
    for k in range(reps):
        rows = {r.subset: r for r in pooled_table(planted(np.random.default_rng(k)), seed=k, n_resamples=1000)}
        row = rows["OC"]
        assert row.interval == INTERVAL_GROUPS and row.clusters == GROUPS and row.units == GROUPS * SLOTS
        covered += row.signed_ci_low <= 0.0 <= row.signed_ci_high
        excess_covered += row.excess_ci_low <= 0.0 <= row.excess_ci_high
        win_covered += row.win_ci_low <= 0.5 <= row.win_ci_high
        gaps.append(row.payoff_gap)
        nulls.append(row.null_gap)
        assert row.null_gap == pytest.approx(rows[NULL_SET].payoff_gap)
    print(f"coverage: signed {covered / reps:.3f}, excess {excess_covered / reps:.3f}, win {win_covered / reps:.3f}; "
          f"mean |gap| {np.mean(gaps):.3f} vs null {np.mean(nulls):.3f}")
    assert covered / reps >= 0.90
    assert excess_covered / reps >= 0.90
    assert win_covered / reps >= 0.90
    # |d| is biased upward by rollout noise, and by the same amount in the null row.
    assert np.mean(gaps) > 0.1 and abs(np.mean(gaps) - np.mean(nulls)) < 0.02


@pytest.mark.fast
def test_a_planted_shift_is_detected_beyond_the_null_row():
    rows = {r.subset: r for r in pooled_table(planted(np.random.default_rng(7), shift=0.4), seed=7)}
    row = rows["OC"]
    assert row.signed_ci_low > 0.2 and row.signed_gap == pytest.approx(0.4, abs=0.15)
    assert row.excess_ci_low > 0.0 and row.payoff_gap > rows[NULL_SET].payoff_gap


@pytest.mark.fast
def test_one_group_falls_back_to_rollouts_and_says_so():
    rng = np.random.default_rng(0)
    sub, orig = rng.normal(4, 0.5, (6, 3)), rng.normal(4, 0.5, (6, 3))
    est = pooled_gap([(sub, orig)], seed=1)
    d = sub.mean(0) - orig.mean(0)
    assert est.signed == pytest.approx(d.mean()) and est.absolute == pytest.approx(np.abs(d).mean())
    assert est.interval == INTERVAL_ROLLOUTS and est.signed_low <= est.signed <= est.signed_high
    assert np.isnan(pooled_gap([(sub[:1], orig[:1])], seed=1).signed_low)
    assert np.isnan(pooled_mean([[0.4, 0.6]], seed=1)[1]) and pooled_mean([[0.4, 0.6], [1.0]], seed=1)[0] == pytest.approx(0.75)
