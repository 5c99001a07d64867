"""Binding diagnostics on constructed distributions whose answers are known (no model)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from analysis.diagnostics import (
    between_persona_share,
    diagnose,
    js_divergence,
    mean_js_divergence,
    outside_mass,
    position_bias,
)


def test_between_persona_share_known_values():
    # Identical personas: none of the variance is between them.
    same = np.tile([0.2, 0.3, 0.5], (6, 1))
    assert between_persona_share(same) == pytest.approx(0.0)
    # Deterministic and different: all of it is.
    assert between_persona_share([[1, 0, 0], [0, 0, 1]]) == pytest.approx(1.0)
    # m = .25 / .75, var(m) = 1/16; v_i = 3/16 each -> share = (1/16) / (1/16 + 3/16) = 0.25.
    assert between_persona_share([[0.75, 0.25], [0.25, 0.75]]) == pytest.approx(0.25)
    # Same mean answer but different spreads: share 0.
    assert between_persona_share([[0.5, 0, 0.5], [0, 1, 0]]) == pytest.approx(0.0)


def test_js_divergence_matches_scipy_and_bounds():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=50)
    q = rng.dirichlet(np.ones(5), size=50)
    ours = js_divergence(p, q)
    ref = np.array([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q)])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    # Mean over pairs: two identical and one disjoint persona -> pairs (0, 1, 1) -> 2/3.
    assert mean_js_divergence([[1, 0], [1, 0], [0, 1]]) == pytest.approx(2 / 3)


def test_position_bias_and_outside_mass():
    assert position_bias([[1, 0, 0]], [[0, 0, 1]]) == pytest.approx(1.0)
    assert position_bias([[0.5, 0.5]], [[0.5, 0.5]]) == pytest.approx(0.0)
    assert position_bias([[0.5, 0.5], [1, 0]], [[0.3, 0.7], [1, 0]]) == pytest.approx(0.1)  # (0.2 + 0) / 2
    assert outside_mass([0.1, 0.3]) == pytest.approx(0.2)


def test_indistinguishable_condition_gets_one_line():
    # Every persona answers the model's first-letter preference whatever its backstory.
    fixed = np.tile([0.28, 0.14, 0.24, 0.13, 0.21], (10, 1))
    d = diagnose("qa", [fixed, fixed], [np.full(10, 0.02)] * 2, forward=[fixed[:3]], reversed_=[fixed[:3, ::-1]])
    assert d.indistinguishable
    line = d.verdict()
    assert line.startswith("WARNING qa: personas are indistinguishable") and "\n" not in line
    assert d.position_bias == pytest.approx(position_bias(fixed[:3], fixed[:3, ::-1]))
    assert d.outside_mass == pytest.approx(0.02)
    # Personas that answer differently are not flagged.
    rng = np.random.default_rng(1)
    varied = np.eye(5)[rng.integers(0, 5, 10)] * 0.9 + 0.02
    d2 = diagnose("anthology", [varied], [np.zeros(10)])
    assert not d2.indistinguishable and d2.verdict() == ""
    assert d2.row()["indistinguishable"] == "no" and np.isnan(d2.position_bias)
