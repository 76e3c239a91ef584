"""The vectorised stratified bootstrap gives rliable's numbers exactly (``==``), and scipy's IQM.

rliable 1.2.0 is the reference: each case runs its ``get_interval_estimates`` after seeding
numpy's global RNG (as rliable's resampling reads it) and compares every number bit for bit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
from rliable import library as rly
from rliable import metrics as rly_metrics

from sparse_ticket.stats.bootstrap import (
    improvement_interval,
    interquartile_mean,
    iqm_curve_interval,
    iqm_interval,
    probability_of_improvement_point,
)


def rliable_interval(data, func, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(point (P,), interval (2, P)) from rliable, its global-RNG draws seeded with ``seed``."""
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch 7: random_state is deprecated
        points, intervals = rly.get_interval_estimates(
            {"x": data}, func, reps=reps, random_state=np.random.RandomState(seed)
        )
    return np.ravel(points["x"]), np.asarray(intervals["x"]).reshape(2, -1)


def test_interquartile_mean_by_hand_and_equal_to_scipy():
    # 10 values: int(0.25 * 10) = 2 cut from each end: sorted 1..9, 100 -> 3..8 -> 33 / 6 = 5.5.
    assert interquartile_mean(np.array([100, 1, 2, 3, 4, 5, 6, 7, 8, 9.0])) == 5.5
    rng = np.random.default_rng(0)
    a = rng.normal(size=(13, 6, 7))
    assert interquartile_mean(a) == scipy.stats.trim_mean(a, 0.25, axis=None)
    for axis in (0, 1, -1):
        expected = scipy.stats.trim_mean(a, 0.25, axis)
        assert np.array_equal(interquartile_mean(a, axis=axis), expected)


@pytest.mark.parametrize(("runs", "tasks", "seed"), [(2, 1, 0), (5, 1, 3), (10, 3, 0), (7, 2, 9)])
def test_iqm_interval_equals_rliable(runs: int, tasks: int, seed: int):
    scores = np.random.default_rng(runs).normal(size=(runs, tasks)).round(1)  # rounded: ties
    point, interval = rliable_interval(
        scores, lambda s: np.array([rly_metrics.aggregate_iqm(s)]), 300, seed
    )
    assert iqm_interval(scores, 300, 0.95, seed) == (point[0], interval[0, 0], interval[1, 0])


@pytest.mark.parametrize(("runs", "steps"), [(2, 5), (5, 7), (10, 4), (1, 3)])
def test_iqm_curve_interval_equals_rliable(runs: int, steps: int):
    curves = np.random.default_rng(steps).normal(size=(runs, steps)).cumsum(axis=1)

    def per_step_iqm(x: np.ndarray) -> np.ndarray:  # rliable's recipe: (runs, 1, steps) -> (steps,)
        return scipy.stats.trim_mean(x.reshape(-1, x.shape[-1]), 0.25, axis=0)

    point, interval = rliable_interval(curves[:, None, :], per_step_iqm, 200, 3)
    points, lows, highs = iqm_curve_interval(curves, 200, 0.95, 3)
    assert np.array_equal(points, point)
    assert np.array_equal(lows, interval[0]) and np.array_equal(highs, interval[1])


@pytest.mark.parametrize(("runs_x", "runs_y", "tasks"), [(3, 5, 1), (5, 5, 2), (10, 4, 3)])
def test_improvement_interval_equals_rliable(runs_x: int, runs_y: int, tasks: int):
    rng = np.random.default_rng(runs_x * runs_y)
    x = rng.integers(0, 4, size=(runs_x, tasks)).astype(float)  # small integers: many ties
    y = rng.integers(0, 4, size=(runs_y, tasks)).astype(float)
    point, interval = rliable_interval([x, y], rly_metrics.probability_of_improvement, 300, 7)
    assert improvement_interval(x, y, 300, 0.95, 7) == (point[0], interval[0, 0], interval[1, 0])


def test_probability_of_improvement_by_hand():
    # x = (1, 3), y = (2, 3): pairs (1,2) no, (1,3) no, (3,2) yes, (3,3) tie -> (1 + 0.5) / 4.
    x, y = np.array([[1.0], [3.0]]), np.array([[2.0], [3.0]])
    assert probability_of_improvement_point(x, y) == 0.375
    assert probability_of_improvement_point(x, x) == 0.5


def test_blocks_do_not_change_the_draws(monkeypatch: pytest.MonkeyPatch):
    # Replicates drawn in many small blocks continue one stream: the same CI as one block.
    import sparse_ticket.stats.bootstrap as bootstrap

    curves = np.random.default_rng(1).normal(size=(6, 9))
    whole = iqm_curve_interval(curves, 500, 0.95, 2)
    monkeypatch.setattr(bootstrap, "_BLOCK_ELEMENTS", curves.size * 7)  # blocks of 7 replicates
    parts = iqm_curve_interval(curves, 500, 0.95, 2)
    assert all(np.array_equal(a, b) for a, b in zip(whole, parts, strict=True))


def test_global_rng_is_untouched():
    np.random.seed(11)
    expected = np.random.random()
    np.random.seed(11)
    iqm_interval(np.arange(12.0).reshape(6, 2), 100, 0.95, 0)
    improvement_interval(np.ones((3, 1)), np.zeros((2, 1)), 100, 0.95, 0)
    assert np.random.random() == expected
