"""The transfer area ratio (+ CI) with the per-game offset, exact values by hand (comments)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from sparse_ticket.stats.area_ratios import GAME_MIN_SCORE, area_ratio, area_ratio_ci, game_offset

REPS = 2_000


# ------------------------------------------------------------------------------ area ratio
def test_game_offset_is_minus_the_minimum_score():
    # Pong ends when a side reaches 21: the lowest return is 0 - 21 = -21, so c = +21.
    assert game_offset("pong") == 21.0
    assert game_offset("boxing") == 100.0  # a knock-out: 0 - 100 punches
    assert game_offset("fishing_derby") == 99.0  # 0 - 99 lb
    # Non-negative scores: c = 0 (and +0.0, not -0.0), MinAtar and Atari alike.
    for game in ("breakout", "space_invaders", "freeway", "asterix", "seaquest", "video_pinball"):
        assert game_offset(game) == 0.0 and str(game_offset(game)) == "0.0"
    assert game_offset(" Pong ") == 21.0
    assert all(score < 0 for score in GAME_MIN_SCORE.values())


# Two runs per group (IQM of 2 runs cuts int(0.25 * 2) = 0 per side: the mean). Scratch curve
# [-2, 0, 2], transfer curve [-2, 2, 2]; with the game's minimum at -2, c = 2: scratch [0, 2, 4]
# -> area 1 + 3 = 4, transfer [0, 4, 4] -> area 2 + 4 = 6, r = (6 - 4) / 4 = 0.5.
STEPS = np.array([0.0, 1, 2])
SCRATCH = np.array([[-2.0, -1, 1], [-2, 1, 3]])
TRANSFER = np.array([[-2.0, 1, 2], [-2, 3, 2]])


def test_area_ratio_with_negative_curves_by_hand():
    assert area_ratio(TRANSFER, SCRATCH, STEPS, offset=2.0) == 0.5
    # A lower minimum (-3, c = 3) moves the zero: areas 6 + 2 = 8 and 4 + 2 = 6 -> 1/3.
    assert area_ratio(TRANSFER, SCRATCH, STEPS, offset=3.0) == pytest.approx(1 / 3)


def test_area_ratio_rejects_returns_below_the_game_minimum():
    # The default offset 0 declares a minimum of 0: the -2 returns lie below it. No number.
    for offset in (0.0, 1.0):
        with pytest.raises(
            ValueError, match=f"a return of -2 lies below the minimum score {0.0 - offset:g} that"
        ):
            area_ratio(TRANSFER, SCRATCH, STEPS, offset=offset)
        with pytest.raises(ValueError, match="see game_offset"):
            area_ratio_ci(TRANSFER, SCRATCH, STEPS, reps=10, offset=offset)


# Pong, 4 runs per group, offset c = 21. The IQM of 4 runs is the mean of the middle 2
# (int(0.25 * 4) = 1 cut per side).
#   scratch  step 0: -20 -20 -20 -20 -> -20; step 1: -20 -19 -17 -10 -> (-19 - 17) / 2 = -18;
#            step 2: -15 -13 -11 5 -> -12.            Shifted: [1, 3, 9].
#   transfer step 0: -20 x 4 -> -20; step 1: -18 -16 -14 20 -> -15; step 2: -19 -9 -7 0 -> -8.
#            Shifted: [1, 6, 13].
# Areas (unit steps): scratch (1 + 3) / 2 + (3 + 9) / 2 = 8, transfer 3.5 + 9.5 = 13:
# r = (13 - 8) / 8 = 0.625. The mean curves instead, shifted: scratch [1, 4.5, 12.5] (area
# 2.75 + 8.5 = 11.25), transfer [1, 14, 12.25] (7.5 + 13.125 = 20.625): r = 9.375 / 11.25 = 5/6.
PONG_STEPS = np.array([0.0, 1, 2])
PONG_SCRATCH = np.array([[-20.0, -20, -15], [-20, -19, -13], [-20, -17, -11], [-20, -10, 5]])
PONG_TRANSFER = np.array([[-20.0, -18, -19], [-20, -16, -9], [-20, -14, -7], [-20, 20, 0]])


def test_area_ratio_defaults_to_the_iqm_curve_by_hand():
    assert area_ratio(PONG_TRANSFER, PONG_SCRATCH, PONG_STEPS, offset=21.0) == 0.625
    assert (
        area_ratio(PONG_TRANSFER, PONG_SCRATCH, PONG_STEPS, offset=21.0, aggregate="iqm") == 0.625
    )
    point = area_ratio_ci(PONG_TRANSFER, PONG_SCRATCH, PONG_STEPS, reps=200, offset=21.0)[0]
    assert point == 0.625
    mean = area_ratio(PONG_TRANSFER, PONG_SCRATCH, PONG_STEPS, offset=21.0, aggregate="mean")
    assert mean == pytest.approx(5 / 6)


def test_area_ratio_iqm_aggregate():
    # 4 runs: IQM at each step keeps the middle 2 runs (int(0.25 * 4) = 1 cut per side).
    scratch = np.array([[0.0, 0, 0], [1, 1, 1], [1, 1, 1], [100, 100, 100]])
    transfer = 2 * scratch
    # IQM curves: scratch [1, 1, 1] area 2, transfer [2, 2, 2] area 4 -> r = 1.
    assert area_ratio(transfer, scratch, STEPS) == 1.0
    # Without the outlier seed in transfer (values 0, 2, 2, 3 -> IQM 2) the IQM ratio is still 1,
    # but the mean is dominated by scratch's outlier (1.75 vs 25.5) and says transfer is worse:
    # mean areas 2 * 1.75 = 3.5 and 2 * 25.5 = 51 -> r = (3.5 - 51) / 51.
    transfer[3] = 3
    assert area_ratio(transfer, scratch, STEPS) == 1.0
    assert area_ratio(transfer, scratch, STEPS, aggregate="mean") == pytest.approx(-47.5 / 51)
    with pytest.raises(ValueError, match="aggregate must be 'mean' or 'iqm'"):
        area_ratio(transfer, scratch, STEPS, aggregate="median")


def test_area_ratio_zero_scratch_area_raises():
    with pytest.raises(ValueError, match="A_scratch = 0"):
        area_ratio(np.ones((2, 3)), np.zeros((2, 3)), STEPS)


def test_area_ratio_ci_identical_groups_not_significant():
    rng = np.random.default_rng(1)
    curves = np.abs(rng.normal(size=(8, 20))).cumsum(axis=1)  # non-negative: offset 0
    steps = np.arange(20.0)
    point, low, high, significant = area_ratio_ci(curves, curves.copy(), steps, reps=REPS)
    assert point == 0.0
    assert low < 0 < high
    assert not significant


def test_area_ratio_ci_clear_improvement_is_significant_and_reproducible():
    rng = np.random.default_rng(2)
    steps = np.arange(0.0, 50.0, 5.0)
    scratch = rng.uniform(-1.0, 1.0, size=(10, 10))  # a game whose minimum score is -1
    transfer = rng.uniform(3.0, 4.0, size=(10, 10))  # every transfer value above every scratch
    result = area_ratio_ci(transfer, scratch, steps, reps=REPS, seed=7, offset=1.0)
    point, low, high, significant = result
    assert significant and 0 < low < point < high
    assert area_ratio_ci(transfer, scratch, steps, reps=REPS, seed=7, offset=1.0) == result
    mean_result = area_ratio_ci(
        transfer, scratch, steps, reps=REPS, seed=7, offset=1.0, aggregate="mean"
    )
    assert mean_result[3] and mean_result[1] > 0


def test_area_ratio_ci_mean_fast_path_matches_resampled_curves():
    # The "mean" path averages per-run areas; check it against explicit resampled mean curves.
    rng = np.random.default_rng(3)
    steps = np.array([0.0, 1.0, 3.0, 4.0])
    t, s = rng.uniform(0, 1, size=(5, 4)), rng.uniform(0, 1, size=(4, 4))
    point, low, high, _ = area_ratio_ci(t, s, steps, reps=200, seed=11, aggregate="mean")
    gen = np.random.default_rng(11)
    it, is_ = gen.integers(0, 5, size=(200, 5)), gen.integers(0, 4, size=(200, 4))
    a_t = np.trapezoid(t[it].mean(axis=1), x=steps, axis=-1)
    a_s = np.trapezoid(s[is_].mean(axis=1), x=steps, axis=-1)
    expected = np.percentile((a_t - a_s) / a_s, [2.5, 97.5])
    np.testing.assert_allclose([low, high], expected)
    assert point == pytest.approx(area_ratio(t, s, steps, aggregate="mean"))


def test_area_ratio_ci_iqm_default_matches_resampled_iqm_curves():
    # The default (IQM) CI: each group's runs resampled independently, the per-step 25% trimmed
    # mean of every resample integrated, the percentile interval of the ratios.
    rng = np.random.default_rng(4)
    steps = np.array([0.0, 1.0, 3.0, 4.0])
    t, s = rng.uniform(0, 1, size=(5, 4)), rng.uniform(0, 1, size=(4, 4))
    point, low, high, _ = area_ratio_ci(t, s, steps, reps=200, seed=11)
    gen = np.random.default_rng(11)
    it, is_ = gen.integers(0, 5, size=(200, 5)), gen.integers(0, 4, size=(200, 4))
    a_t = np.trapezoid(scipy.stats.trim_mean(t[it], 0.25, axis=1), x=steps, axis=-1)
    a_s = np.trapezoid(scipy.stats.trim_mean(s[is_], 0.25, axis=1), x=steps, axis=-1)
    expected = np.percentile((a_t - a_s) / a_s, [2.5, 97.5])
    np.testing.assert_allclose([low, high], expected)
    assert point == area_ratio(t, s, steps, aggregate="iqm")
