"""The fits and the degree-resampling generator of ``benchmarks/scaling.py`` (nothing timed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"
_spec = importlib.util.spec_from_file_location("benchmarks_scaling", _PATH)
assert _spec is not None and _spec.loader is not None
scaling = importlib.util.module_from_spec(_spec)
sys.modules["benchmarks_scaling"] = scaling
_spec.loader.exec_module(scaling)


@pytest.mark.parametrize("a, b", [(3e-7, 1.0), (2e-12, 2.0), (5.0, 0.5)])
def test_one_variable_power_law_recovers_its_exponent_and_extrapolates(a: float, b: float) -> None:
    edges = np.array([2e5, 4e5, 8e5, 1.6e6, 3.2e6])
    noise = np.random.default_rng(0).normal(0, 0.01, len(edges))  # 1% multiplicative noise
    law = scaling.fit_power_law(edges, a * edges**b * np.exp(noise), ["edges"])
    assert law.exponents[0] == pytest.approx(b, abs=0.03)
    assert law.r2 > 0.99
    # 300x beyond the last point the prediction stays within the exponent's error
    far = 1e9
    assert law.predict([far])[0] == pytest.approx(a * far**b, rel=0.3)
    assert scaling.solve_power_law(law, float(law.predict([far])[0])) == pytest.approx(far, rel=1e-6)


def test_three_variable_power_law_separates_users_items_and_edges() -> None:
    rng = np.random.default_rng(1)
    x = np.exp(rng.uniform(np.log(1e4), np.log(1e6), size=(8, 3)))
    y = 1e-9 * x[:, 0] ** 0.3 * x[:, 1] ** 1.2 * x[:, 2] ** 0.9
    law = scaling.fit_power_law(x, y, ["users", "items", "edges"])
    assert law.exponents == pytest.approx((0.3, 1.2, 0.9), abs=1e-9)
    assert law.coefficient == pytest.approx(1e-9, rel=1e-6)
    assert law.r2 == pytest.approx(1.0)
    assert law.predict([[1e7, 1e6, 1e9]])[0] == pytest.approx(1e-9 * 1e7**0.3 * 1e6**1.2 * 1e9**0.9, rel=1e-6)


def test_collinear_or_too_few_points_are_refused_or_flagged() -> None:
    with pytest.raises(ValueError, match="positive"):
        scaling.fit_power_law([1.0, 0.0, 3.0], [1.0, 2.0, 3.0], ["edges"])
    with pytest.raises(ValueError, match="cannot fit"):
        scaling.fit_power_law([[1.0, 2.0]], [1.0], ["users", "items"])


def test_linear_memory_model_recovers_bytes_per_node_and_per_edge() -> None:
    nodes = np.array([1e4, 2e4, 4e4, 4e4, 8e4])
    edges = np.array([2e5, 4e5, 8e5, 1.6e6, 1.6e6])
    y = 3e8 + 3072.0 * nodes + 24.0 * edges
    fit = scaling.fit_linear(np.column_stack([nodes, edges]), y, ["nodes", "edges"])
    assert fit.intercept == pytest.approx(3e8, rel=1e-6)
    assert fit.coefficients == pytest.approx((3072.0, 24.0), rel=1e-6)


def test_resampled_pairs_follow_the_profile_degrees_and_scale() -> None:
    rng = np.random.default_rng(2)
    profile = scaling.DegreeProfile(
        user_train=rng.integers(5, 40, 300),
        user_test=rng.integers(1, 10, 300),
        item=np.maximum(1, (200 * rng.pareto(1.5, 500)).astype(np.int64)),
    )
    for mult in [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (1.0, 1.0, 2.0)]:
        user, item, is_test = scaling.resample_pairs(profile, mult, seed=3)
        keys = user * 10**6 + item
        assert len(np.unique(keys)) == len(keys)  # distinct pairs
        assert user.max() < round(300 * mult[0]) and item.max() < round(500 * mult[1])
        total = (profile.user_train.sum() + profile.user_test.sum()) * mult[2]
        assert len(user) == pytest.approx(total, rel=0.1)
        assert is_test.sum() == pytest.approx(profile.user_test.sum() * mult[2], rel=0.15)
        # every user keeps a training pair
        assert np.unique(user[~is_test]).size == round(300 * mult[0])
    # heavy-tailed items stay heavy-tailed: the busiest 10% of items hold far more than 10% of the pairs
    user, item, _ = scaling.resample_pairs(profile, (1.0, 1.0, 1.0), seed=4)
    counts = np.sort(np.bincount(item, minlength=500))[::-1]
    assert counts[:50].sum() > 0.3 * counts.sum()
