"""Exact values of the schedules."""

import pytest

from sparse_ticket.clock import crossed, linear_schedule


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (250, 0.7525), (500, 0.505), (1000, 0.01), (5000, 0.01), (-3, 1.0)],
)
def test_linear_epsilon(step, expected):
    # 1.0 -> 0.01 over 1000 steps: at 250 steps 1 - 0.25 * 0.99 = 0.7525.
    assert linear_schedule(step, 1.0, 0.01, 1000) == pytest.approx(expected, abs=1e-12)


def test_zero_duration_is_the_end_value():
    assert linear_schedule(0, 1.0, 0.05, 0) == 0.05


@pytest.mark.parametrize(
    ("previous", "current", "every", "expected"),
    [
        (0, 4, 4, True),
        (4, 8, 8, True),
        (8, 12, 8, False),
        (996, 1000, 1000, True),
        (1000, 1004, 1000, False),
        (3, 7, 5, True),
        (0, 4, 0, False),
    ],
)
def test_crossed(previous, current, every, expected):
    assert crossed(previous, current, every) is expected
