"""Matching: brute-force optima, argmax, seeds, refusals and numerical safety."""
import itertools
import math

import numpy as np
import pytest

from analysis.matching import MatchingError, edge_log_weights, match, match_study
from analysis.studies import load_study

pytestmark = pytest.mark.fast  # needs no model: part of `make check`


def _problem(seed: int, n_humans: int, n_personas: int, ks=(3, 2, 4), refusal_rate=0.0):
    rng = np.random.default_rng(seed)
    probs = {f"t{i}": rng.dirichlet(np.ones(k) * 0.7, size=n_personas) for i, k in enumerate(ks)}
    codes = {f"t{i}": rng.integers(0, k, size=n_humans) for i, k in enumerate(ks)}
    for c in codes.values():
        c[rng.random(n_humans) < refusal_rate] = -1
    return probs, codes


def _weight(probs, codes, h, v) -> float:
    """Edge weight written directly from the definition: product over traits, 1/K for a refusal."""
    w = 1.0
    for t, p in probs.items():
        c = codes[t][h]
        w *= 1.0 / p.shape[1] if c < 0 else p[v, c] / p[v].sum()
    return w


def test_max_weight_equals_brute_force_optimum():
    for seed in range(15):
        probs, codes = _problem(seed, n_humans=4, n_personas=6, refusal_rate=0.2)
        w = np.array([[_weight(probs, codes, h, v) for v in range(6)] for h in range(4)])
        best = max(sum(w[h, v] for h, v in enumerate(perm)) for perm in itertools.permutations(range(6), 4))
        result = match(probs, codes, "max_weight")
        assert len(set(result.persona_index)) == 4  # one-to-one
        assert result.weight.sum() == pytest.approx(best, rel=1e-12)
        assert result.weight == pytest.approx(w[np.arange(4), result.persona_index])


def test_max_weight_square_problem_brute_force():
    probs, codes = _problem(99, n_humans=5, n_personas=5, ks=(2, 3))
    w = np.array([[_weight(probs, codes, h, v) for v in range(5)] for h in range(5)])
    best = max(sum(w[h, v] for h, v in enumerate(perm)) for perm in itertools.permutations(range(5)))
    assert match(probs, codes, "max_weight").weight.sum() == pytest.approx(best, rel=1e-12)


def test_log_weight_objective_maximises_the_product():
    probs, codes = _problem(7, n_humans=4, n_personas=6)
    w = np.array([[_weight(probs, codes, h, v) for v in range(6)] for h in range(4)])
    best = max(sum(math.log(w[h, v]) for h, v in enumerate(p)) for p in itertools.permutations(range(6), 4))
    result = match(probs, codes, "max_weight", objective="log_weight")
    assert result.log_weight.sum() == pytest.approx(best, rel=1e-12)


def test_greedy_takes_the_argmax_with_replacement():
    probs, codes = _problem(3, n_humans=30, n_personas=8, refusal_rate=0.1)
    result = match(probs, codes, "greedy")
    for h in range(30):
        w = [_weight(probs, codes, h, v) for v in range(8)]
        assert result.persona_index[h] == int(np.argmax(w))
        assert result.weight[h] == pytest.approx(max(w))
    assert len(set(result.persona_index)) < 30  # personas are reused


def test_random_is_seed_reproducible_and_one_to_one():
    probs, codes = _problem(0, n_humans=20, n_personas=50)
    a = match(probs, codes, "random", seed=4)
    assert np.array_equal(a.persona_index, match(probs, codes, "random", seed=4).persona_index)
    assert not np.array_equal(a.persona_index, match(probs, codes, "random", seed=5).persona_index)
    assert len(set(a.persona_index)) == 20
    # Fewer personas than humans: with replacement.
    small_probs = {t: p[:5] for t, p in probs.items()}
    b = match(small_probs, codes, "random", seed=4)
    assert b.persona_index.max() < 5 and len(b.persona_index) == 20


def test_refusal_contributes_a_uniform_factor():
    probs = {"party": np.array([[0.9, 0.1], [0.2, 0.8]]), "age": np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])}
    codes = {"party": np.array([1, -1]), "age": np.array([-1, 2])}
    result = match(probs, codes, "greedy")
    # Human 0 refused age: weight = P(party = 1) * 1/3, so persona 1 (0.8) wins.
    assert result.persona_index[0] == 1
    assert result.weight[0] == pytest.approx(0.8 / 3)
    # Human 1 refused party: factor 1/2, age decides.
    assert result.persona_index[1] == 1
    assert result.weight[1] == pytest.approx(0.8 / 2)
    lw = edge_log_weights(probs, codes)
    assert np.exp(lw) == pytest.approx(np.array([[0.1 / 3, 0.8 / 3], [0.25 / 2, 0.8 / 2]]))


def test_rows_are_renormalised_and_zero_probabilities_give_zero_weight():
    probs = {"t": np.array([[2.0, 0.0], [1.0, 1.0]])}  # row 0 sums to 2: renormalised to (1, 0)
    codes = {"t": np.array([1, 0])}
    result = match(probs, codes, "max_weight")
    # Human 0 can only get a positive weight from persona 1; human 1 then takes persona 0 (weight 1).
    assert list(result.persona_index) == [1, 0]
    assert result.weight == pytest.approx([0.5, 1.0])
    forced = match({"t": np.array([[1.0, 0.0]])}, {"t": np.array([1])}, "greedy")
    assert forced.weight[0] == 0.0 and forced.log_weight[0] == -np.inf


def test_max_weight_is_exact_when_the_weights_underflow_float64():
    # 4 traits with probabilities around 1e-90: every product is ~1e-360, below the smallest
    # float64, so multiplying probabilities would give all zeros and an arbitrary assignment.
    probs, codes = _problem(11, n_humans=4, n_personas=6, ks=(3, 3, 3, 3))
    tiny = {t: p * 1e-90 for t, p in probs.items()}
    for t, p in tiny.items():
        p[:, 0] = 1.0  # rows still sum to ~1, so renormalising keeps the tiny values
        codes[t] = np.where(codes[t] == 0, 1, codes[t])  # every human needs a tiny-probability option
    naive = np.array([[np.prod([tiny[t][v, codes[t][h]] for t in tiny]) for v in range(6)] for h in range(4)])
    assert (naive == 0.0).all()  # multiplying probabilities underflows for every edge
    log_w = np.array([[sum(math.log(tiny[t][v, codes[t][h]] / tiny[t][v].sum()) for t in tiny) for v in range(6)] for h in range(4)])
    top = log_w.max()
    scaled = np.exp(log_w - top)  # Σw compared at a common scale
    best = max(sum(scaled[h, v] for h, v in enumerate(p)) for p in itertools.permutations(range(6), 4))
    result = match(tiny, codes, "max_weight")
    assert sum(scaled[h, v] for h, v in enumerate(result.persona_index)) == pytest.approx(best, rel=1e-12)
    assert result.log_weight == pytest.approx(log_w[np.arange(4), result.persona_index])


def test_stats_and_pairs():
    probs, codes = _problem(2, n_humans=10, n_personas=12)
    r = match(probs, codes, "max_weight")
    assert r.pairs.shape == (10, 2) and list(r.pairs[:, 0]) == list(range(10))
    s = r.stats
    assert s.min <= s.median <= max(r.weight) and s.mean == pytest.approx(r.weight.mean())
    assert s.mean_log == pytest.approx(np.log(r.weight).mean()) and s.n_unique_personas == 10


def test_input_errors_are_clear():
    probs, codes = _problem(0, n_humans=5, n_personas=3)
    with pytest.raises(MatchingError, match="at least as many personas as humans"):
        match(probs, codes, "max_weight")
    with pytest.raises(MatchingError, match="unknown matching method"):
        match(probs, codes, "hungarian")
    with pytest.raises(MatchingError, match="no trait 'religion'"):
        match(probs, {**codes, "religion": np.zeros(5, int)})
    with pytest.raises(MatchingError, match="out of range"):
        match(probs, {**codes, "t0": np.array([0, 1, 2, 3, 0])})


def test_match_study_checks_option_counts_against_the_study():
    study = load_study("gss_spending")
    rng = np.random.default_rng(0)
    probs = {t.name: rng.dirichlet(np.ones(t.n_options), size=3000) for t in study.traits}
    result = match_study(study, probs, "greedy")
    assert result.n_humans == study.n and result.traits == tuple(t.name for t in study.traits)
    bad = {**probs, "party": probs["party"][:, :3]}
    with pytest.raises(MatchingError, match="3 columns but the study lists 4 options"):
        match_study(study, bad, "greedy")
