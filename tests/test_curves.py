"""Curves: alignment on a common grid and areas under curves (exact values by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from sparse_ticket.stats.curves import align_curves, area_under_curve


# ------------------------------------------------------------------------------ curves
def test_align_curves_reports_truncation_and_interpolates():
    # Run 0 logged at 0, 10, 20, 30; run 1 at 0, 15, 25 (shorter). Union up to the common end 25:
    # 0, 10, 15, 20, 25 (30 dropped).
    # run 0 (values = steps): 0, 10, 15, 20, 25.
    # run 1: 0 -> 0, 10 -> 30 * 10/15 = 20, 15 -> 30, 20 -> (30 + 50) / 2 = 40, 25 -> 50.
    grid, matrix, info = align_curves(
        [np.array([0, 10, 20, 30]), np.array([0, 15, 25])],
        [np.array([0.0, 10, 20, 30]), np.array([0.0, 30, 50])],
    )
    np.testing.assert_array_equal(grid, [0, 10, 15, 20, 25])
    np.testing.assert_allclose(matrix, [[0, 10, 15, 20, 25], [0, 20, 30, 40, 50]])
    assert info["truncated_to"] == 25
    assert info["dropped_steps"] == 1
    assert info["runs_shorter"] == [1]
    assert info["started_from"] is None and info["runs_started_later"] == []
    with pytest.raises(ValueError, match="runs \\[1\\] end before step 30"):
        align_curves([[0, 10, 20, 30], [0, 15, 25]], [[0, 1, 2, 3], [0, 1, 2]], on_short="raise")


def test_align_curves_given_grid_and_late_start():
    grid, matrix, info = align_curves(
        [[0, 10, 20], [5, 20]], [[0, 10, 20], [5, 35]], grid=np.array([0, 5, 10, 20])
    )
    np.testing.assert_array_equal(grid, [5, 10, 20])
    np.testing.assert_allclose(matrix, [[5, 10, 20], [5, 15, 35]])  # run 1: 5 + 2 * (10 - 5)
    assert info["started_from"] == 5 and info["runs_started_later"] == [1]
    assert info["truncated_to"] is None and info["dropped_steps"] == 1


def test_area_under_curve_by_hand():
    # Trapezoids: [0, 1] -> (0 + 2) / 2 * 1 = 1, [1, 3] -> (2 + 2) / 2 * 2 = 4; total 5.
    assert area_under_curve(np.array([0, 1, 3]), np.array([0.0, 2, 2])) == 5.0
    np.testing.assert_allclose(area_under_curve([0, 1, 3], [[0, 2, 2], [1, 1, 1]]), [5, 3])
