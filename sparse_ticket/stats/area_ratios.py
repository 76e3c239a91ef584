"""The transfer area ratio over seeds, with its per-game offset and a bootstrap CI.

The *area ratio* (Taylor & Stone 2009, "Transfer Learning for Reinforcement Learning Domains: A
Survey"; used for Atari DQN transfer by Sabatelli & Geurts 2021 and by the prior study's
``generate_area_ratio``, docs/protocol.md) is ``r = (A_transfer - A_scratch) / A_scratch`` of the
per-step IQM curves over runs (the default; the mean curve on request), after adding a fixed
per-game offset :func:`game_offset` (minus the game's minimum possible score,
:data:`GAME_MIN_SCORE`) to every return, with a percentile bootstrap CI over seeds.

Shapes follow rliable: a *curve matrix* is ``(num_runs, num_steps)``, every group's runs on the
same step grid (see :func:`sparse_ticket.stats.curves.align_curves`).

What is here: :data:`GAME_MIN_SCORE` and :func:`game_offset` (the zero of a game's return scale),
:func:`area_ratio` (the point estimate) and :func:`area_ratio_ci` (with its bootstrap CI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from sparse_ticket.stats.bootstrap import interquartile_mean
from sparse_ticket.stats.checks import as_matrix, check_bootstrap, warn_single_run
from sparse_ticket.stats.curves import area_under_curve

__all__ = [
    "AGGREGATES",
    "GAME_MIN_SCORE",
    "Aggregate",
    "area_ratio",
    "area_ratio_ci",
    "game_offset",
]

Aggregate = Literal["mean", "iqm"]
AGGREGATES: tuple[Aggregate, ...] = ("iqm", "mean")
"""The curves over runs whose areas an area ratio may compare, the default (``iqm``) first."""

# Bootstrap chunks for the IQM area ratio: at most this many floats of resampled curves at once.
_CHUNK_ELEMENTS = 4_000_000


# ------------------------------------------------------------------------------ game offsets
# The lowest score an episode of each game can end with, for the games whose scores can be
# negative; every other game (all of MinAtar, Atari Breakout, Space Invaders, ...) has minimum 0.
# The area ratio's zero is this minimum: the prior study's ``generate_area_ratio`` adds the fixed
# offset -min (Pong +21, other games 0) to every return before integrating (docs/protocol.md).
# Only minima that follow from the game's rules are listed; a game whose returns go below its
# listed minimum (or below 0 when it is not listed) gets no area ratio (see _check_offset).
GAME_MIN_SCORE: Mapping[str, float] = {
    # The episode ends when one side reaches 21 points; the reward is the point difference.
    "pong": -21.0,
    # A knock-out (100 punches landed) ends the bout; the reward is the punch difference.
    "boxing": -100.0,
    # The first angler to 99 lb wins; the reward is the weight difference.
    "fishing_derby": -99.0,
}
# Left out, so that their negative returns raise instead of using a doubtful zero: skiing (a time
# penalty, no fixed bound), ice_hockey (timed, the margin is unbounded), and double_dunk and
# tennis (the often-quoted -24 holds only if a set or game cannot run on past its usual length,
# which was not confirmed from the rules).


def game_offset(game: str) -> float:
    """The fixed offset ``c = -min_score`` added to every return of ``game`` before integrating.

    Args:
        game: the game's snake_case name (``pong``, ``space_invaders``; the ``game`` parameter).

    Returns:
        ``-GAME_MIN_SCORE[game]`` (21.0 for Pong), 0.0 for a game not in :data:`GAME_MIN_SCORE`.
    """
    # "+ 0.0" turns -0.0 (games at minimum 0) into 0.0, which prints as 0 in the tables.
    return -GAME_MIN_SCORE.get(game.strip().lower(), 0.0) + 0.0


# ------------------------------------------------------------------------------ checks
def _check_curve_pair(
    transfer_curves: Any, scratch_curves: Any, steps: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(runs_t, S)``, ``(runs_s, S)`` and ``(S,)`` float arrays, else ``ValueError``: at least
    2 steps, strictly increasing."""
    what = "(num_runs, num_steps)"
    t = as_matrix(transfer_curves, "transfer_curves", what)
    s = as_matrix(scratch_curves, "scratch_curves", what)
    x = np.asarray(steps, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] != t.shape[1] or x.shape[0] != s.shape[1]:
        raise ValueError(
            f"steps must be (S,) matching both curve matrices, got shapes {x.shape}, "
            f"{t.shape}, {s.shape}"
        )
    if x.shape[0] < 2:
        raise ValueError("an area needs at least 2 steps")
    if np.any(np.diff(x) <= 0):
        raise ValueError("steps must be strictly increasing")
    return t, s, x


def _check_offset(t: np.ndarray, s: np.ndarray, offset: float) -> float:
    """``offset`` as a float; ValueError if some return lies below ``-offset`` (the minimum).

    A return below the game's minimum possible score means the offset is wrong for these curves
    (the wrong game, or a game with negative scores missing from GAME_MIN_SCORE): the shifted
    curves would not be non-negative and ``r`` would compare areas with an arbitrary zero.
    Checked on the raw runs, so any aggregate of any bootstrap resample is non-negative too.
    """
    c = float(offset)
    if not np.isfinite(c):
        raise ValueError(f"offset must be finite, got {offset!r}")
    low, minimum = min(float(t.min()), float(s.min())), 0.0 - c  # 0.0 - c: no "-0" printed
    if low < minimum:
        raise ValueError(
            f"a return of {low:g} lies below the minimum score {minimum:g} that offset {c:g} "
            "declares: the area ratio needs offset = -(the game's minimum score), see game_offset"
        )
    return c


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be 'mean' or 'iqm', got {aggregate!r}")


# ------------------------------------------------------------------------------ area ratio
def _aggregate_curve(curves: np.ndarray, aggregate: Aggregate) -> np.ndarray:
    """``(..., runs, S) -> (..., S)``: mean or IQM over runs at each step."""
    if aggregate == "mean":
        return curves.mean(axis=-2)
    return interquartile_mean(curves, axis=-2)


def _ratio(a_transfer: float, a_scratch: float) -> float:
    if a_scratch == 0:
        raise ValueError(
            "the area ratio is undefined: the scratch curve's area is 0 after the shift "
            "(A_scratch = 0, e.g. a flat scratch curve at the game's minimum score); compare "
            "areas directly"
        )
    return (a_transfer - a_scratch) / a_scratch


def area_ratio(
    transfer_curves: np.ndarray,
    scratch_curves: np.ndarray,
    steps: np.ndarray,
    offset: float = 0.0,
    aggregate: Aggregate = "iqm",
) -> float:
    """Transfer area ratio ``r = (A_transfer - A_scratch) / A_scratch`` (docs/protocol.md).

    The area ratio of Taylor & Stone (2009), as used for DQN transfer on Atari by Sabatelli &
    Geurts (2021) and defined by the prior study's ``generate_area_ratio``: the fixed per-game
    offset ``c`` (:func:`game_offset`, 21 for Pong, 0 for games with non-negative scores) is added
    to every return, each group is aggregated over runs into one curve, and ``A_x`` is that
    curve's trapezoidal area over ``steps``.

    The default aggregate is the per-step **IQM** curve over runs (the 25% trimmed mean,
    ``scipy.stats.trim_mean(x, 0.25)``, as the prior study and Agarwal et al. 2021: robust to an
    outlier seed); ``aggregate="mean"`` uses the mean curve instead (its area is the mean of the
    runs' areas). Both groups always use the same aggregate and offset.

    Args:
        transfer_curves: ``(runs_t, S)`` returns of transferred agents on the grid ``steps``.
        scratch_curves: ``(runs_s, S)`` returns of from-scratch agents on the same grid.
        steps: ``(S,)`` strictly increasing.
        offset: the shift ``c = -(the game's minimum score)``, e.g. ``game_offset("pong")``.
        aggregate: ``"iqm"`` (default) or ``"mean"`` over runs at each step.

    Returns:
        ``r`` (0: no transfer benefit; > 0: larger area than scratch).

    Raises:
        ValueError: if a return lies below ``-offset`` (the offset is not the game's), if
            ``A_scratch == 0`` (ratio undefined), or on malformed inputs.
    """
    _check_aggregate(aggregate)
    t, s, x = _check_curve_pair(transfer_curves, scratch_curves, steps)
    c = _check_offset(t, s, offset)
    a_t = float(area_under_curve(x, _aggregate_curve(t + c, aggregate)))
    a_s = float(area_under_curve(x, _aggregate_curve(s + c, aggregate)))
    return _ratio(a_t, a_s)


# ------------------------------------------------------------------------------ bootstrap
def _bootstrap_ratios(
    shifted_t: np.ndarray,
    shifted_s: np.ndarray,
    steps: np.ndarray,
    reps: int,
    seed: int,
    aggregate: Aggregate,
) -> np.ndarray:
    """``r`` of ``reps`` independent resamples of each group's shifted runs: ``(runs_t, S)``,
    ``(runs_s, S)``, ``(S,)`` -> ``(reps,)``; ValueError if some resample's scratch area is 0.

    The transfer resamples are drawn first, then the scratch ones, from one generator.
    """
    rng = np.random.default_rng(seed)
    a_t = _bootstrap_areas(shifted_t, steps, int(reps), rng, aggregate)
    a_s = _bootstrap_areas(shifted_s, steps, int(reps), rng, aggregate)
    zero = int(np.count_nonzero(a_s == 0))
    if zero:
        raise ValueError(
            f"the area ratio is undefined in {zero} of {reps} bootstrap resamples: their scratch "
            "area is 0 after the shift (degenerate scratch runs); compare areas directly"
        )
    return (a_t - a_s) / a_s


def _bootstrap_areas(
    curves: np.ndarray,
    steps: np.ndarray,
    reps: int,
    rng: np.random.Generator,
    aggregate: Aggregate,
) -> np.ndarray:
    """Areas of the aggregated curve of ``reps`` resamples of the runs: ``(runs, S) -> (reps,)``."""
    n = curves.shape[0]
    idx = rng.integers(0, n, size=(reps, n))
    if aggregate == "mean":
        # Trapezoid area is linear: area(mean of runs) = mean of the runs' areas.
        return area_under_curve(steps, curves)[idx].mean(axis=1)
    out = np.empty(reps)
    chunk = max(1, _CHUNK_ELEMENTS // curves.size)
    for lo in range(0, reps, chunk):
        sel = idx[lo : lo + chunk]
        out[lo : lo + chunk] = area_under_curve(steps, _aggregate_curve(curves[sel], aggregate))
    return out


def area_ratio_ci(
    transfer_curves: np.ndarray,
    scratch_curves: np.ndarray,
    steps: np.ndarray,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    offset: float = 0.0,
    aggregate: Aggregate = "iqm",
) -> tuple[float, float, float, bool]:
    """Area ratio with a percentile bootstrap CI over seeds (docs/protocol.md).

    Each replicate resamples the transfer runs and the scratch runs with replacement,
    independently (the two groups are separate experiments with their own seeds, as in the prior
    study's ``generate_area_ratio``), and recomputes ``r`` as in :func:`area_ratio`. The CI is the
    percentile interval of the replicates (Efron & Tibshirani 1993); the result is *significant*
    when the CI excludes 0.

    The offset ``c`` is a constant of the game (:func:`game_offset`), the same in every replicate
    and in every comparison on that game: it fixes the zero of the return scale, i.e. it is part
    of the definition of the quantity being estimated, not a statistic of the data. Since no raw
    return lies below ``-c`` (checked), every resampled aggregate curve is non-negative.

    Args:
        transfer_curves: ``(runs_t, S)``.
        scratch_curves: ``(runs_s, S)``.
        steps: ``(S,)`` strictly increasing.
        reps: bootstrap replications.
        confidence: CI coverage.
        seed: seed of the ``np.random.Generator`` (reproducible).
        offset: the shift ``c = -(the game's minimum score)`` (see :func:`area_ratio`).
        aggregate: ``"iqm"`` (default) or ``"mean"`` (see :func:`area_ratio`).

    Returns:
        ``(point, low, high, significant)``.

    Raises:
        ValueError: if a return lies below ``-offset``, if ``A_scratch == 0`` for the data or for
            some resample (the ratio is then unbounded), or on malformed inputs.
    """
    check_bootstrap(reps, confidence)
    _check_aggregate(aggregate)
    t, s, x = _check_curve_pair(transfer_curves, scratch_curves, steps)
    warn_single_run("transfer_curves", t.shape[0])
    warn_single_run("scratch_curves", s.shape[0])
    c = _check_offset(t, s, offset)
    point = area_ratio(t, s, x, offset=c, aggregate=aggregate)
    ratios = _bootstrap_ratios(t + c, s + c, x, reps, seed, aggregate)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.percentile(ratios, [alpha, 100.0 - alpha]))
    return point, low, high, bool(low > 0 or high < 0)
