"""Exact values of the sparsity schedules (GMP, IMP levels, step resolution, cosine decay)."""

import math

import pytest

from sparse_ticket.sparsity import cosine_decay, gmp_sparsity, imp_levels, resolve_step


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (100, 0.0),  # before t0: the initial sparsity
        (200, 0.0),  # at t0: 0.8 + (0 - 0.8) * 1^3
        (500, 0.7),  # halfway: 0.8 * (1 - 0.5^3) = 0.8 * 0.875
        (650, 0.8 * (1 - 0.25**3)),
        (800, 0.8),  # at t1
        (900, 0.8),  # after t1: the final sparsity
    ],
)
def test_gmp_cubic(step, expected):
    assert gmp_sparsity(step, 0.8, 0.0, start_step=200, end_step=800) == pytest.approx(
        expected, abs=1e-12
    )


def test_gmp_from_a_nonzero_initial_sparsity():
    # 0.9 + (0.5 - 0.9) * (1 - 1/4)^3 = 0.9 - 0.4 * 0.421875 = 0.73125
    assert gmp_sparsity(25, 0.9, 0.5, start_step=0, end_step=100) == pytest.approx(0.73125)
    assert gmp_sparsity(-1, 0.9, 0.5, start_step=0, end_step=100) == 0.5


def test_gmp_degenerate_and_invalid_windows():
    assert gmp_sparsity(99, 0.8, start_step=100, end_step=100) == 0.0
    assert gmp_sparsity(100, 0.8, start_step=100, end_step=100) == 0.8
    with pytest.raises(ValueError, match="must not precede"):
        gmp_sparsity(0, 0.8, start_step=100, end_step=50)


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [
        (0.2, 1000, 200),
        (0.8, 10_000_000, 8_000_000),
        (0.0, 1000, 0),
        (1.0, 1000, 1000),
        (1, 1000, 1000),
        (5000.0, 1000, 5000),
        (200000, 10_000_000, 200_000),
        (2e5, 10_000_000, 200_000),
    ],
)
def test_resolve_step(value, total, expected):
    result = resolve_step(value, total)
    assert result == expected
    assert isinstance(result, int)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf])
def test_resolve_step_rejects(value):
    with pytest.raises(ValueError, match="schedule step"):
        resolve_step(value, 1000)


def test_imp_chain_lands_on_every_target():
    levels = imp_levels([0.8, 0.6, 0.7, 0.6], 0.2)
    expected = [0.2, 0.36, 0.488, 0.5904, 0.6, 0.68, 0.7, 0.76, 0.8]
    assert levels == pytest.approx(expected, abs=1e-12)
    # Landing points are the targets exactly, not approximately.
    assert levels[4] == 0.6
    assert levels[6] == 0.7
    assert levels[8] == 0.8


@pytest.mark.parametrize(("fraction", "rounds"), [(0.2, 5), (0.1, 9)])
def test_imp_rounds_to_sixty_percent(fraction, rounds):
    # 1 - 0.8^4 = 0.5904 < 0.6 < 1 - 0.8^5; 1 - 0.9^8 = 0.5695 < 0.6 < 1 - 0.9^9 = 0.6126.
    levels = imp_levels([0.6], fraction)
    assert len(levels) == rounds
    assert levels[-1] == 0.6
    assert levels[:-1] == pytest.approx([1 - (1 - fraction) ** k for k in range(1, rounds)])


def test_imp_exact_hit_adds_no_extra_round():
    # 1 - 0.5^2 = 0.75 exactly in theory; float error must not add a third round.
    assert imp_levels([0.75], 0.5) == [0.5, 0.75]


@pytest.mark.parametrize(
    ("targets", "fraction"), [([0.0], 0.2), ([1.0], 0.2), ([0.5], 0.0), ([0.5], 1.0)]
)
def test_imp_rejects(targets, fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        imp_levels(targets, fraction)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.3), (250, 0.3 * 0.5 * (1 + math.sqrt(0.5))), (500, 0.15), (1000, 0.0), (1500, 0.0)],
)
def test_cosine_decay(step, expected):
    assert cosine_decay(step, 0.3, 1000) == pytest.approx(expected, abs=1e-12)
