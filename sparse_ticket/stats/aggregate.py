"""Aggregate metrics over seeds: IQM with bootstrap CIs, learning-curve alignment, area ratio.

A tiny functional API on plain numpy arrays, in the style of ``rliable`` (Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice"). Shapes follow rliable:

- a *score matrix* is ``(num_runs, num_tasks)``: ``scores[n, m]`` is the score of run (seed) ``n``
  on task (game) ``m``;
- a *curve matrix* is ``(num_runs, num_steps)``: ``curves[n, t]`` is the evaluation return of run
  ``n`` at the ``t``-th step of a common step grid (see :func:`align_curves`).

What is here:

- :func:`iqm`, :func:`iqm_with_ci`, :func:`iqm_curve_with_ci`: the interquartile mean (IQM, the
  25% trimmed mean over all runs and tasks) with stratified-bootstrap percentile CIs, as
  ``rliable.library.get_interval_estimates`` computes them (the proposal reports IQM with 95%
  CIs over 10 seeds).
- :func:`probability_of_improvement`: ``P(X > Y)`` (Agarwal et al. 2021, section 4.3) with CIs.
- :func:`align_curves`: curves logged at different steps put on one grid, truncation reported.
- :func:`area_under_curve`, :func:`area_ratio`, :func:`area_ratio_ci`: the transfer *area ratio*
  (Taylor & Stone 2009, "Transfer Learning for Reinforcement Learning Domains: A Survey"; used for
  Atari DQN transfer by Sabatelli & Geurts 2021 and by the prior study's ``generate_area_ratio``,
  docs/protocol.md): ``r = (A_transfer - A_scratch) / A_scratch`` of the per-step IQM curves over
  runs (the default; the mean curve on request), after adding a fixed per-game offset
  :func:`game_offset` (minus the game's minimum possible score, :data:`GAME_MIN_SCORE`) to every
  return, with a percentile bootstrap CI over seeds.

The bootstrap follows rliable 1.2.0 exactly (``get_interval_estimates`` with arch 7.2.0's
percentile method): :mod:`sparse_ticket.stats.bootstrap` draws the same resamples and returns
the same numbers, vectorised (tests compare with ``==``). Behaviours worth knowing:

- **Seeding.** rliable's ``StratifiedBootstrap.update_indices`` draws run indices with the
  *global* ``np.random.choice``; its ``random_state`` argument only seeds arch's own generator,
  which the stratified resampling never uses, so a seeded ``RandomState`` alone does not make
  rliable's CIs reproducible. ``seed`` here gives the draws rliable makes after
  ``np.random.seed(seed)``, from a private ``RandomState``: numpy's global RNG is not touched,
  and an entry's CI does not depend on the other entries of the dict.
- **Trimming.** ``aggregate_iqm`` is ``scipy.stats.trim_mean(scores, 0.25, axis=None)``, which cuts
  ``int(0.25 * n)`` values from *each* end of the ``n`` pooled scores: for ``n = 8`` the middle 4,
  for ``n = 10`` (10 seeds, 1 game) the middle **6** (2 cut per side, not 2.5), for ``n = 30`` the
  middle 16. No interpolation of partial observations.
- **One run.** With ``num_runs == 1`` every resample equals the data: the CI collapses to the point
  (zero width). :func:`iqm_with_ci` and friends warn (``RuntimeWarning``) in that case.
- **One task.** Fine: resampling is over runs *within* each task, so ``(num_runs >= 2, 1)`` gives a
  non-degenerate CI for varied scores. A 1-D ``(num_runs,)`` array makes rliable fail with an
  ``IndexError``; here it raises a ``ValueError`` asking for ``(num_runs, 1)``.
- **Curves.** rliable has no curve helper in its library; its sample-efficiency recipe applies
  ``get_interval_estimates`` to ``(runs, tasks, steps)`` arrays with a per-step IQM. Its stratified
  bootstrap then draws runs independently for every ``(task, step)`` cell, so the CIs are
  *pointwise* (per step), not a simultaneous band.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from sparse_ticket.stats.bootstrap import (
    improvement_interval,
    interquartile_mean,
    iqm_curve_interval,
    iqm_interval,
)
from sparse_ticket.types import CurveInterval, Interval

__all__ = [
    "GAME_MIN_SCORE",
    "align_curves",
    "area_ratio",
    "area_ratio_ci",
    "area_under_curve",
    "game_offset",
    "iqm",
    "iqm_curve_with_ci",
    "iqm_with_ci",
    "probability_of_improvement",
]

Aggregate = Literal["mean", "iqm"]

# Bootstrap chunks for the IQM area ratio: at most this many floats of resampled curves at once.
_CHUNK_ELEMENTS = 4_000_000


# ------------------------------------------------------------------------------ validation
def _as_matrix(x: Any, name: str, what: str = "(num_runs, num_tasks)") -> np.ndarray:
    """``x`` as a finite float 2-D array with at least one row and column, else ``ValueError``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        hint = " (for one task or one run, reshape to 2-D, e.g. x[:, None] or x[None])"
        raise ValueError(f"{name} must have shape {what}, got shape {arr.shape}{hint}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty with shape {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _check_bootstrap(reps: int, confidence: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _warn_single_run(name: str, num_runs: int) -> None:
    if num_runs < 2:
        warnings.warn(
            f"{name} has a single run: every bootstrap resample equals the data, so the "
            "confidence interval has zero width; use several seeds",
            RuntimeWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------------------------ IQM
def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all runs and tasks (rliable ``metrics.aggregate_iqm``).

    Args:
        scores: ``(num_runs, num_tasks)``.

    Returns:
        The 25% trimmed mean of the ``num_runs * num_tasks`` pooled scores: ``int(n / 4)`` values
        are cut from each end (Agarwal et al. 2021).
    """
    return float(interquartile_mean(_as_matrix(scores, "scores")))


def iqm_with_ci(
    score_dict: Mapping[str, np.ndarray],
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """IQM of each entry with a stratified-bootstrap percentile CI (Agarwal et al. 2021).

    Runs are resampled with replacement within each task (rliable's ``StratifiedBootstrap``,
    ``task_bootstrap=False``): the CI is the uncertainty of re-running the same games with new
    seeds.

    Args:
        score_dict: name -> scores ``(num_runs, num_tasks)``; entries may differ in ``num_runs``.
        reps: bootstrap replications (rliable's default 50,000; tests use ~2,000).
        confidence: CI coverage, e.g. 0.95.
        seed: seeds every entry's bootstrap (reproducible; numpy's global RNG is not used).

    Returns:
        name -> ``(point, low, high)``. With a single run the CI has zero width (warned).
    """
    _check_bootstrap(reps, confidence)
    out: dict[str, Interval] = {}
    for key, raw in score_dict.items():
        scores = _as_matrix(raw, f"score_dict[{key!r}]")
        _warn_single_run(f"score_dict[{key!r}]", scores.shape[0])
        out[key] = iqm_interval(scores, int(reps), confidence, seed)
    return out


def iqm_curve_with_ci(
    curves: Mapping[str, np.ndarray],
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, CurveInterval]:
    """Sample-efficiency curves: IQM over runs at every step, with pointwise bootstrap CIs.

    rliable's recipe for IQM-vs-frames plots (Agarwal et al. 2021, fig. 6): the curves become a
    ``(runs, 1, steps)`` array and ``get_interval_estimates`` applies a per-step IQM. The
    stratified bootstrap resamples runs independently at each step, so each step's CI equals the
    CI of :func:`iqm_with_ci` on that step's column (pointwise, not a simultaneous band).

    Args:
        curves: name -> curve matrix ``(num_runs, num_steps)`` on a common grid
            (see :func:`align_curves`).
        reps: bootstrap replications.
        confidence: CI coverage.
        seed: seeds every entry's bootstrap.

    Returns:
        name -> ``(points, lows, highs)``, each ``(num_steps,)``.
    """
    _check_bootstrap(reps, confidence)
    out: dict[str, CurveInterval] = {}
    for key, raw in curves.items():
        matrix = _as_matrix(raw, f"curves[{key!r}]", "(num_runs, num_steps)")
        _warn_single_run(f"curves[{key!r}]", matrix.shape[0])
        out[key] = iqm_curve_interval(matrix, int(reps), confidence, seed)
    return out


def probability_of_improvement(
    x: np.ndarray,
    y: np.ndarray,
    reps: int = 50_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Average probability of improvement ``P(X > Y)`` with a bootstrap CI (Agarwal et al. 2021).

    Per task, ``P(X_m > Y_m)`` is the Mann-Whitney U statistic over all run pairs divided by
    ``num_runs_x * num_runs_y`` (ties count 1/2; identical columns give exactly 0.5); the result is
    the mean over tasks. The CI comes from rliable's ``StratifiedIndependentBootstrap`` (``x`` and
    ``y`` resampled independently, runs within each task), i.e. ``get_interval_estimates`` on the
    pair ``[x, y]`` as in rliable's pairwise comparisons.

    Args:
        x: scores of algorithm X, ``(num_runs_x, num_tasks)``.
        y: scores of algorithm Y, ``(num_runs_y, num_tasks)``; same tasks, same order.
        reps: bootstrap replications.
        seed: seeds the bootstrap.
        confidence: CI coverage.

    Returns:
        ``(point, low, high)``, all in ``[0, 1]``.
    """
    _check_bootstrap(reps, confidence)
    xm = _as_matrix(x, "x")
    ym = _as_matrix(y, "y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(
            f"x and y must have the same number of tasks, got {xm.shape[1]} and {ym.shape[1]}"
        )
    _warn_single_run("x", xm.shape[0])
    _warn_single_run("y", ym.shape[0])
    return improvement_interval(xm, ym, int(reps), confidence, seed)


# ------------------------------------------------------------------------------ curves
def align_curves(
    steps_list: Sequence[np.ndarray],
    values_list: Sequence[np.ndarray],
    grid: np.ndarray | None = None,
    on_short: Literal["truncate", "raise"] = "truncate",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Put curves logged at different steps (and lengths) on one common step grid.

    Each run is linearly interpolated (``np.interp``) at the grid steps, **only within its own
    logged range** ``[steps[0], steps[-1]]``: nothing is extrapolated. Grid steps outside the range
    common to all runs (before the latest first step, after the earliest last step) are dropped by
    default and the truncation is reported in ``info`` (never silently); ``on_short="raise"``
    raises instead.

    Args:
        steps_list: per run, logged steps ``(S_i,)``, strictly increasing.
        values_list: per run, logged values ``(S_i,)``.
        grid: ``(G,)`` strictly increasing target steps; default: the union of all logged steps
            within the common range.
        on_short: ``"truncate"`` (default) or ``"raise"`` when some run does not cover the grid.

    Returns:
        ``(grid (G',), matrix (num_runs, G'), info)``. ``info`` has ``start``/``end`` (the grid's
        first/last step), ``truncated_to`` (the common last step if grid steps after it were
        dropped, else ``None``), ``started_from`` (the common first step if grid steps before it
        were dropped, else ``None``), ``dropped_steps`` (how many grid steps were dropped in all),
        ``runs_shorter`` (indices of runs ending before the last requested step) and
        ``runs_started_later`` (indices of runs starting after the first requested step).
    """
    if on_short not in ("truncate", "raise"):
        raise ValueError(f"on_short must be 'truncate' or 'raise', got {on_short!r}")
    if len(steps_list) != len(values_list):
        raise ValueError(
            f"steps_list and values_list differ in length: {len(steps_list)} != {len(values_list)}"
        )
    if len(steps_list) == 0:
        raise ValueError("no curves given")
    runs: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (s, v) in enumerate(zip(steps_list, values_list, strict=True)):
        steps = np.asarray(s, dtype=np.float64)
        values = np.asarray(v, dtype=np.float64)
        if steps.ndim != 1 or values.shape != steps.shape or steps.size == 0:
            raise ValueError(
                f"run {i}: steps and values must be non-empty 1-D arrays of the same length, "
                f"got shapes {steps.shape} and {values.shape}"
            )
        if not (np.all(np.isfinite(steps)) and np.all(np.isfinite(values))):
            raise ValueError(f"run {i}: steps or values contain NaN or inf")
        if np.any(np.diff(steps) <= 0):
            raise ValueError(f"run {i}: steps must be strictly increasing")
        runs.append((steps, values))

    firsts = np.array([s[0] for s, _ in runs])
    lasts = np.array([s[-1] for s, _ in runs])
    start, end = float(firsts.max()), float(lasts.min())
    if start > end:
        raise ValueError(
            f"the runs' logged ranges do not overlap (latest start {start}, earliest end {end})"
        )
    if grid is None:
        requested = np.unique(np.concatenate([s for s, _ in runs]))
    else:
        requested = np.asarray(grid, dtype=np.float64)
        if requested.ndim != 1 or requested.size == 0 or not np.all(np.isfinite(requested)):
            raise ValueError(f"grid must be a non-empty finite 1-D array, got {requested!r}")
        if np.any(np.diff(requested) <= 0):
            raise ValueError("grid must be strictly increasing")

    keep = (requested >= start) & (requested <= end)
    after = int(np.count_nonzero(requested > end))
    before = int(np.count_nonzero(requested < start))
    info: dict[str, Any] = {
        "truncated_to": end if after else None,
        "started_from": start if before else None,
        "dropped_steps": after + before,
        "runs_shorter": [i for i, last in enumerate(lasts) if last < requested[-1]],
        "runs_started_later": [i for i, first in enumerate(firsts) if first > requested[0]],
    }
    if info["dropped_steps"] and on_short == "raise":
        raise ValueError(
            f"runs {info['runs_shorter']} end before step {requested[-1]} and/or runs "
            f"{info['runs_started_later']} start after step {requested[0]}: {after + before} grid "
            f"steps lie outside the common range [{start}, {end}]"
        )
    out_grid = requested[keep]
    if out_grid.size == 0:
        raise ValueError(f"no grid step lies within the common range [{start}, {end}]")
    info["start"], info["end"] = float(out_grid[0]), float(out_grid[-1])
    matrix = np.stack([np.interp(out_grid, s, v) for s, v in runs])
    return out_grid, matrix, info


def area_under_curve(steps: np.ndarray, values: np.ndarray) -> np.ndarray | float:
    """Trapezoidal area under curves over the step axis.

    Args:
        steps: ``(S,)`` step grid (x axis).
        values: ``(..., S)`` curves on that grid.

    Returns:
        ``(...)`` areas (a float for a single curve).
    """
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or y.ndim < 1 or y.shape[-1] != x.shape[0]:
        raise ValueError(
            f"steps must be (S,) and values (..., S), got shapes {x.shape} and {y.shape}"
        )
    area = np.trapezoid(y, x=x, axis=-1)
    return float(area) if np.ndim(area) == 0 else area


# ------------------------------------------------------------------------------ area ratio
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


def _check_curve_pair(
    transfer_curves: Any, scratch_curves: Any, steps: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    what = "(num_runs, num_steps)"
    t = _as_matrix(transfer_curves, "transfer_curves", what)
    s = _as_matrix(scratch_curves, "scratch_curves", what)
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


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in ("mean", "iqm"):
        raise ValueError(f"aggregate must be 'mean' or 'iqm', got {aggregate!r}")


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
    _check_bootstrap(reps, confidence)
    _check_aggregate(aggregate)
    t, s, x = _check_curve_pair(transfer_curves, scratch_curves, steps)
    _warn_single_run("transfer_curves", t.shape[0])
    _warn_single_run("scratch_curves", s.shape[0])
    c = _check_offset(t, s, offset)
    point = area_ratio(t, s, x, offset=c, aggregate=aggregate)

    rng = np.random.default_rng(seed)
    a_t = _bootstrap_areas(t + c, x, int(reps), rng, aggregate)
    a_s = _bootstrap_areas(s + c, x, int(reps), rng, aggregate)
    zero = int(np.count_nonzero(a_s == 0))
    if zero:
        raise ValueError(
            f"the area ratio is undefined in {zero} of {reps} bootstrap resamples: their scratch "
            "area is 0 after the shift (degenerate scratch runs); compare areas directly"
        )
    ratios = (a_t - a_s) / a_s
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.percentile(ratios, [alpha, 100.0 - alpha]))
    return point, low, high, bool(low > 0 or high < 0)
