"""Metrics against hand-computed cases, independent implementations (scipy, POT, pandas) and properties."""
import math
import os

# POT probes torch / jax / tensorflow / cupy at import (about 10 s when torch is
# installed); only its NumPy backend is needed to cross-check the 1-D distance.
for _backend in ("PYTORCH", "JAX", "TENSORFLOW", "CUPY"):
    os.environ.setdefault(f"POT_BACKEND_DISABLE_{_backend}", "1")

import numpy as np
import ot  # noqa: E402
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from analysis.bootstrap import bootstrap_ci, bootstrap_cis
from analysis.correlations import corr_and_alpha, cronbach_alpha, frobenius_distance, pairwise_moments, weighted_corr, weighted_cov
from analysis.distributions import option_positions, wasserstein, wasserstein_many, weighted_distribution, weighted_distributions
from analysis.gaps import HUMAN_GAP_REFERENCE, cohens_d, hostility_gap, meta_perception_gap, subversion_gap
from analysis.lower_bound import PAPER_ATP_LOWER_BOUNDS

pytestmark = pytest.mark.fast  # needs no model: part of `make check`

# --- strategies --------------------------------------------------------------


@st.composite
def distribution_pair(draw, min_k=2, max_k=7):
    k = draw(st.integers(min_k, max_k))
    mass = st.lists(st.floats(0, 1, allow_nan=False), min_size=k, max_size=k).filter(lambda v: sum(v) > 1e-3)
    p = np.array(draw(mass))
    q = np.array(draw(mass))
    return p / p.sum(), q / q.sum()


@st.composite
def distribution_triple(draw):
    k = draw(st.integers(2, 7))
    mass = st.lists(st.floats(0, 1, allow_nan=False), min_size=k, max_size=k).filter(lambda v: sum(v) > 1e-3)
    return tuple(np.array(v) / sum(v) for v in (draw(mass), draw(mass), draw(mass)))


# --- Wasserstein ---------------------------------------------------------------


def test_wasserstein_hand_cases():
    # All mass at opposite ends: distance 1 on [0, 1] positions, K - 1 on raw positions.
    assert wasserstein([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)
    assert wasserstein([1, 0, 0], [0, 0, 1], normalize=False) == pytest.approx(2.0)
    # CDFs (.5, 1) and (0, .5): area .5 + .5 = 1 raw, 1/2 normalised.
    assert wasserstein([0.5, 0.5, 0], [0, 0.5, 0.5], normalize=False) == pytest.approx(1.0)
    assert wasserstein([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(0.5)
    # Custom positions: moving 0.25 mass over a gap of 10.
    assert wasserstein([0.75, 0.25], [1, 0], positions=[0, 10], normalize=False) == pytest.approx(2.5)
    # Unnormalised inputs are renormalised; empty input gives NaN.
    assert wasserstein([2, 0], [0, 5]) == pytest.approx(1.0)
    assert math.isnan(wasserstein([0, 0], [1, 0]))


@settings(max_examples=100, deadline=None)
@given(distribution_pair(), st.data())
def test_wasserstein_matches_scipy_and_pot(pq, data):
    p, q = pq
    k = p.size
    positions = np.array(data.draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=k, max_size=k, unique=True)))
    ours_raw = wasserstein(p, q, positions, normalize=False)
    assert ours_raw == pytest.approx(wasserstein_distance(positions, positions, p, q), abs=1e-9)
    cost = np.abs(positions[:, None] - positions[None, :])
    assert ours_raw == pytest.approx(ot.emd2(p, q, cost), abs=1e-7)
    x01 = option_positions(k, positions)
    assert wasserstein(p, q, positions) == pytest.approx(wasserstein_distance(x01, x01, p, q), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(distribution_pair())
def test_wasserstein_properties(pq):
    p, q = pq
    d = wasserstein(p, q)
    assert 0.0 <= d <= 1.0 + 1e-12
    assert d == pytest.approx(wasserstein(q, p), abs=1e-12)  # symmetry
    assert wasserstein(p, p) == pytest.approx(0.0, abs=1e-12)  # identity
    # Reversing the option order of both distributions mirrors the scale: same distance.
    assert wasserstein(p[::-1], q[::-1]) == pytest.approx(d, abs=1e-12)
    # Raw distance scales with the positions; the normalised one is affine invariant.
    assert wasserstein(p, q, np.arange(p.size) * 3.0 + 7, normalize=False) == pytest.approx(3 * wasserstein(p, q, normalize=False), abs=1e-9)
    assert wasserstein(p, q, np.arange(p.size) * 3.0 + 7) == pytest.approx(d, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(distribution_triple())
def test_wasserstein_triangle_inequality(pqr):
    p, q, r = pqr
    assert wasserstein(p, r) <= wasserstein(p, q) + wasserstein(q, r) + 1e-12


def test_wasserstein_many_matches_loop_with_padding_and_batches():
    rng = np.random.default_rng(0)
    ks = [2, 5, 3, 4]
    positions = [None, [0, 1, 2, 5, 9], [3, 1, 2], None]
    p = np.zeros((6, 4, 5))
    q = np.zeros((6, 4, 5))
    for j, k in enumerate(ks):
        p[:, j, :k] = rng.dirichlet(np.ones(k), size=6)
        q[:, j, :k] = rng.dirichlet(np.ones(k), size=6)
    for normalize in (True, False):
        many = wasserstein_many(p, q, positions, ks, normalize=normalize)
        assert many.shape == (6, 4)
        for b in range(6):
            for j, k in enumerate(ks):
                assert many[b, j] == pytest.approx(wasserstein(p[b, j, :k], q[b, j, :k], positions[j], normalize=normalize), abs=1e-12)


# --- distributions ---------------------------------------------------------------


def test_weighted_distribution_drops_refusals_and_uses_weights():
    answers = np.array([0, 0, 1, 2, np.nan, -1])
    weights = np.array([1.0, 3.0, 2.0, 2.0, 100.0, 100.0])
    # Refusals (NaN, negative) are dropped before renormalising: 4 / 8, 2 / 8, 2 / 8.
    assert weighted_distribution(answers, 3, weights) == pytest.approx([0.5, 0.25, 0.25])
    assert weighted_distribution(answers, 4) == pytest.approx([0.5, 0.25, 0.25, 0.0])
    assert np.isnan(weighted_distribution(np.array([np.nan]), 2)).all()


def test_weighted_distributions_matches_per_question_and_counts_mean_duplication():
    rng = np.random.default_rng(1)
    ks = [3, 5, 2]
    a = np.column_stack([rng.integers(0, k, 50).astype(float) for k in ks])
    a[rng.random(a.shape) < 0.2] = np.nan
    w = rng.uniform(0.2, 3, 50)
    many = weighted_distributions(a, ks, w)
    for j, k in enumerate(ks):
        assert many[j, :k] == pytest.approx(weighted_distribution(a[:, j], k, w))
    counts = rng.integers(0, 3, size=50)
    rep = np.repeat(np.arange(50), counts)
    assert weighted_distributions(a, ks, w, counts) == pytest.approx(weighted_distributions(a[rep], ks, w[rep]), nan_ok=True)


# --- correlations, Frobenius, alpha -----------------------------------------------


def _items(seed=0, n=300, q=5, missing=0.1):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 1))
    x = np.clip(np.round(latent + rng.normal(scale=1.0, size=(n, q)) + 2), 0, 4)
    x[rng.random(x.shape) < missing] = np.nan
    return x, rng.uniform(0.3, 3.0, n)


def test_weighted_corr_unweighted_equals_pandas_pairwise():
    x, _ = _items()
    assert weighted_corr(x) == pytest.approx(pd.DataFrame(x).corr().to_numpy(), abs=1e-12)
    assert weighted_cov(x) == pytest.approx(pd.DataFrame(x).cov().to_numpy(), abs=1e-12)


def test_weighted_corr_complete_cases_equals_numpy_aweights():
    x, w = _items(missing=0.0)
    expected = np.cov(x, rowvar=False, aweights=w)
    sd = np.sqrt(np.diag(expected))
    assert weighted_corr(x, w) == pytest.approx(expected / np.outer(sd, sd), abs=1e-12)
    # Reliability-weight correction: np.cov with aweights uses the same V1 - V2 / V1 denominator.
    assert weighted_cov(x, w) == pytest.approx(expected, abs=1e-12)
    # Scaling all weights changes nothing.
    assert weighted_corr(x, 7.5 * w) == pytest.approx(weighted_corr(x, w), abs=1e-12)


def test_frequency_counts_equal_duplicated_rows():
    x, w = _items(seed=3)
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, size=(3, x.shape[0]))
    corr, alpha = corr_and_alpha(x, w, counts)
    for b in range(3):
        rep = np.repeat(np.arange(x.shape[0]), counts[b])
        assert corr[b] == pytest.approx(weighted_corr(x[rep], w[rep]), abs=1e-10)
        assert weighted_cov(x, w, counts[b]) == pytest.approx(weighted_cov(x[rep], w[rep]), abs=1e-10)
        assert alpha[b] == pytest.approx(cronbach_alpha(x[rep], w[rep]), abs=1e-10)


def test_corr_undefined_for_constant_item_makes_frobenius_undefined():
    x = np.array([[0, 1, 2], [0, 2, 1], [0, 0, 0], [0, 2, 2.0]])
    c = weighted_corr(x)
    assert np.isnan(c[0, 1]) and np.isnan(c[0, 0])
    # An undefined correlation makes the distance undefined: NaN, never a made-up number.
    assert np.isnan(frobenius_distance(c, np.eye(3)))
    assert np.isnan(frobenius_distance(np.stack([c, np.eye(3)]), np.eye(3))[0])
    assert frobenius_distance(np.stack([c, np.eye(3)]), np.eye(3))[1] == 0.0


def test_all_zero_weights_never_give_a_perfect_frobenius():
    x = np.array([[0, 1, 2], [1, 2, 1], [2, 0, 0], [1, 2, 2.0]])
    w = np.zeros(4)
    c = weighted_corr(x, w)
    assert np.isnan(c).all()
    assert np.isnan(frobenius_distance(c, c))  # was 0.0: a perfect score from no data
    assert np.isnan(cronbach_alpha(x, w))


def test_alpha_per_scale_and_reverse_coding():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=300)
    items = np.stack([latent + rng.normal(scale=0.5, size=300) for _ in range(3)], axis=1)
    other = rng.normal(size=(300, 2))
    x = np.concatenate([items, other], axis=1)
    m = pairwise_moments(x)
    a_items, a_other = m.scale_alphas([[0, 1, 2], [3, 4]])
    assert a_items == pytest.approx(cronbach_alpha(items)) and a_items > 0.8
    assert a_other == pytest.approx(cronbach_alpha(other))
    assert m.alpha([[0, 1, 2], [3, 4]]) == pytest.approx((a_items + a_other) / 2)
    # Reverse-coding one item (negating it) turns a negative alpha positive again.
    flipped = items.copy()
    flipped[:, 1] *= -1
    assert cronbach_alpha(flipped) < 0.5 < cronbach_alpha(items)


def test_frobenius_hand_case():
    a = np.array([[1.0, 0.5], [0.5, 1.0]])
    b = np.array([[1.0, -0.5], [-0.5, 1.0]])
    assert frobenius_distance(a, b) == pytest.approx(math.sqrt(2.0))  # two entries differ by 1
    assert frobenius_distance(a, a) == 0.0


def test_cronbach_alpha_textbook_formula_and_weights():
    x, w = _items(missing=0.0)
    k = x.shape[1]
    item_var = x.var(axis=0, ddof=1).sum()
    total_var = x.sum(axis=1).var(ddof=1)
    assert cronbach_alpha(x) == pytest.approx(k / (k - 1) * (1 - item_var / total_var), abs=1e-12)
    # With complete answers, integer weights equal duplicated respondents.
    iw = np.random.default_rng(0).integers(1, 4, x.shape[0])
    assert cronbach_alpha(x, iw.astype(float)) == pytest.approx(cronbach_alpha(np.repeat(x, iw, axis=0)), abs=1e-12)


def test_cronbach_alpha_known_value():
    # Perfectly parallel items -> alpha 1; independent items -> about 0.
    base = np.arange(10, dtype=float)
    assert cronbach_alpha(np.column_stack([base, base, base])) == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    assert abs(cronbach_alpha(rng.normal(size=(20000, 4)))) < 0.05


# --- effect sizes and gaps -----------------------------------------------------------


def test_cohens_d_hand_case():
    a = np.array([2.0, 4.0, 6.0])  # mean 4, var 4
    b = np.array([1.0, 2.0, 3.0])  # mean 2, var 1
    pooled = math.sqrt((2 * 4 + 2 * 1) / 4)
    assert cohens_d(a, b) == pytest.approx(2 / pooled)
    assert cohens_d(b, a) == pytest.approx(-2 / pooled)
    assert cohens_d(a, b, np.ones(3), np.ones(3)) == pytest.approx(2 / pooled)
    assert cohens_d(np.append(a, np.nan), b) == pytest.approx(2 / pooled)  # NaNs dropped


def test_gap_definitions_and_signs():
    own = np.array([4.0, 5, 4, 5])  # Democrats rate Democrats (higher = more favourable)
    other = np.array([1.0, 2, 1, 2])  # the same Democrats rate Republicans
    g = hostility_gap(own, other)
    assert g.delta == pytest.approx(3.0) and g.d > 0 and (g.n_a, g.n_b) == (4, 4)
    # Democrats think Republicans are more willing (3) than Republicans say they are (1).
    s = subversion_gap(np.array([3.0, 3, 2, 3]), np.array([1.0, 1, 2, 0]))
    assert s.delta == pytest.approx(2.75 - 1.0)
    # Republicans' actual warmth to Democrats (3) exceeds what Democrats believe (1): positive gap.
    m = meta_perception_gap(actual_outgroup_feeling=np.array([3.0, 3, 4, 2]), believed_outgroup_feeling=np.array([1.0, 1, 2, 0]))
    assert m.delta == pytest.approx(2.0) and m.d > 0


def test_reference_values_from_the_papers():
    assert PAPER_ATP_LOWER_BOUNDS["W34"] == {"wd": 0.057, "fro": 0.418, "alpha": 0.784}
    assert PAPER_ATP_LOWER_BOUNDS["W92"]["fro"] == 0.411 and PAPER_ATP_LOWER_BOUNDS["W99"]["alpha"] == 0.830
    assert HUMAN_GAP_REFERENCE["hostility"]["Democrat"].delta == 1.630
    assert HUMAN_GAP_REFERENCE["hostility"]["Republican"].d == 2.263
    assert HUMAN_GAP_REFERENCE["subversion"]["Republican"].delta == 0.398
    assert HUMAN_GAP_REFERENCE["meta_perception"]["Democrat"].d == 0.761


# --- bootstrap ---------------------------------------------------------------------


def test_bootstrap_ci_reproducible_and_close_to_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, size=400)
    ci = bootstrap_ci(np.mean, x, n=2000, seed=1)
    assert ci == bootstrap_ci(np.mean, x, n=2000, seed=1)
    assert ci.estimate == pytest.approx(x.mean())
    assert ci.low < ci.estimate < ci.high
    half_width = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert (ci.high - ci.low) / 2 == pytest.approx(half_width, rel=0.15)
    assert bootstrap_ci(np.mean, x, n=2000, seed=2) != ci


def test_bootstrap_paired_and_independent():
    a = np.arange(100, dtype=float)
    b = a + 1.0
    # Paired resampling keeps rows together: the difference is constant.
    ci = bootstrap_ci(lambda u, v: float(np.mean(v - u)), a, b, n=200, seed=0, paired=True)
    assert ci.low == ci.high == ci.estimate == 1.0
    ind = bootstrap_ci(lambda u, v: float(np.mean(v) - np.mean(u)), a, b, n=200, seed=0)
    assert ind.low < 1.0 < ind.high
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(lambda u, v: 0.0, a, b[:5], paired=True)
    cis = bootstrap_cis(lambda u: {"mean": float(np.mean(u)), "max": float(np.max(u))}, a, n=100, seed=0)
    assert set(cis) == {"mean", "max"} and cis["max"].high == 99.0
