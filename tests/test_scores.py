"""Score statistics: IQM (+ CIs) and probability of improvement.

Exact values are computed by hand in the comments; bootstraps use 2,000 replications.
"""

from __future__ import annotations

import numpy as np
import pytest
from rliable import metrics as rly_metrics

from sparse_ticket.stats.scores import (
    iqm,
    iqm_curve_with_ci,
    iqm_with_ci,
    probability_of_improvement,
)

REPS = 2_000


# ------------------------------------------------------------------------------ IQM
def test_iqm_4x2_by_hand():
    # The 8 pooled scores sorted: 1 2 3 4 5 6 7 100. rliable's aggregate_iqm is
    # scipy.stats.trim_mean(..., 0.25, axis=None): it cuts int(0.25 * 8) = 2 values from each end,
    # leaving 3 4 5 6 -> (3 + 4 + 5 + 6) / 4 = 4.5 (the outlier 100 has no influence).
    scores = np.array([[1, 2], [3, 4], [5, 6], [7, 100]], dtype=float)
    assert iqm(scores) == 4.5
    assert iqm(scores) == rly_metrics.aggregate_iqm(scores)


def test_iqm_ten_seeds_keeps_middle_six():
    # 10 seeds x 1 game: int(0.25 * 10) = 2 cut per side (not 2.5), so the middle 6 values are
    # averaged: sorted 1..9, 100 -> 3..8 -> 33 / 6 = 5.5.
    scores = np.array([100, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=float)[:, None]
    assert iqm(scores) == 5.5


def test_iqm_rejects_1d_and_nan():
    with pytest.raises(ValueError, match="num_runs, num_tasks"):
        iqm(np.arange(5.0))
    with pytest.raises(ValueError, match="NaN"):
        iqm(np.array([[1.0], [np.nan]]))


def test_iqm_with_ci_single_task_is_not_degenerate_and_reproducible():
    scores = np.array([1.0, 3.0, 2.0, 8.0, 5.0, 4.0, 9.0, 6.0, 7.0, 0.0])[:, None]
    out = iqm_with_ci({"a": scores}, reps=REPS, seed=3)
    point, low, high = out["a"]
    assert point == pytest.approx(4.5)  # middle 6 of 0..9: 2..7
    assert low < point < high
    # Same seed -> same CI, whatever the global RNG state; the global state is restored.
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    again = iqm_with_ci({"other": scores + 100, "a": scores}, reps=REPS, seed=3)
    assert again["a"] == out["a"]  # an entry's CI does not depend on the other entries
    assert np.array_equal(np.random.get_state()[1], before)
    assert iqm_with_ci({"a": scores}, reps=REPS, seed=4)["a"] != out["a"]


def test_iqm_with_ci_single_run_warns_zero_width():
    with pytest.warns(RuntimeWarning, match="single run"):
        point, low, high = iqm_with_ci({"a": np.array([[1.0, 2.0, 3.0, 4.0]])}, reps=50)["a"]
    assert low == point == high == 2.5


def test_iqm_curve_with_ci_matches_per_step_iqm():
    rng = np.random.default_rng(0)
    curves = rng.normal(size=(6, 5)).cumsum(axis=1)
    points, lows, highs = iqm_curve_with_ci({"a": curves}, reps=REPS)["a"]
    expected = [rly_metrics.aggregate_iqm(curves[:, [j]]) for j in range(5)]
    np.testing.assert_allclose(points, expected)
    assert points.shape == lows.shape == highs.shape == (5,)
    assert np.all(lows < points) and np.all(points < highs)


# ------------------------------------------------------------------------------ P(X > Y)
def test_probability_of_improvement_extremes():
    # Mann-Whitney per bootstrap replicate is slow (~0.3 ms): 500 replications suffice here.
    y = np.arange(10.0).reshape(5, 2)
    assert probability_of_improvement(y + 100, y, reps=500) == (1.0, 1.0, 1.0)
    point, low, high = probability_of_improvement(y, y, reps=500)
    assert point == 0.5  # identical columns count as 0.5 in rliable
    assert low < 0.5 < high
    with pytest.raises(ValueError, match="same number of tasks"):
        probability_of_improvement(y, y[:, :1], reps=10)
