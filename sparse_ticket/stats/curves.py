"""Learning curves: curves logged at different steps put on one grid, and areas under them.

Shapes follow rliable: a *curve matrix* is ``(num_runs, num_steps)``: ``curves[n, t]`` is the
evaluation return of run ``n`` at the ``t``-th step of a common step grid. Runs log at their own
steps and may stop early; :func:`align_curves` interpolates them onto one grid within the range
they all cover and reports what it dropped (never silently). :func:`area_under_curve` is the
trapezoidal area the transfer area ratio (:mod:`sparse_ticket.stats.area_ratios`) compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["align_curves", "area_under_curve"]


# ------------------------------------------------------------------------------ alignment
def _checked_runs(
    steps_list: Sequence[np.ndarray], values_list: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per run, ``(steps (S_i,), values (S_i,))`` as float arrays, else ``ValueError``: one
    pair per run, finite, non-empty, steps strictly increasing."""
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
    return runs


def _requested_grid(runs: list[tuple[np.ndarray, np.ndarray]], grid: Any) -> np.ndarray:
    """The steps asked for, ``(G,)``: ``grid`` checked, or (``None``) the union of all runs'
    logged steps."""
    if grid is None:
        return np.unique(np.concatenate([s for s, _ in runs]))
    requested = np.asarray(grid, dtype=np.float64)
    if requested.ndim != 1 or requested.size == 0 or not np.all(np.isfinite(requested)):
        raise ValueError(f"grid must be a non-empty finite 1-D array, got {requested!r}")
    if np.any(np.diff(requested) <= 0):
        raise ValueError("grid must be strictly increasing")
    return requested


def _truncation_info(
    requested: np.ndarray, firsts: np.ndarray, lasts: np.ndarray, start: float, end: float
) -> dict[str, Any]:
    """What aligning drops from ``requested (G,)`` outside the common range ``[start, end]``,
    given the runs' first and last logged steps ``firsts, lasts (num_runs,)`` (keys: see
    :func:`align_curves`, less ``start``/``end``)."""
    after = int(np.count_nonzero(requested > end))
    before = int(np.count_nonzero(requested < start))
    return {
        "truncated_to": end if after else None,
        "started_from": start if before else None,
        "dropped_steps": after + before,
        "runs_shorter": [i for i, last in enumerate(lasts) if last < requested[-1]],
        "runs_started_later": [i for i, first in enumerate(firsts) if first > requested[0]],
    }


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
    runs = _checked_runs(steps_list, values_list)
    firsts = np.array([s[0] for s, _ in runs])
    lasts = np.array([s[-1] for s, _ in runs])
    start, end = float(firsts.max()), float(lasts.min())
    if start > end:
        raise ValueError(
            f"the runs' logged ranges do not overlap (latest start {start}, earliest end {end})"
        )
    requested = _requested_grid(runs, grid)
    info = _truncation_info(requested, firsts, lasts, start, end)
    if info["dropped_steps"] and on_short == "raise":
        raise ValueError(
            f"runs {info['runs_shorter']} end before step {requested[-1]} and/or runs "
            f"{info['runs_started_later']} start after step {requested[0]}: "
            f"{info['dropped_steps']} grid steps lie outside the common range [{start}, {end}]"
        )
    out_grid = requested[(requested >= start) & (requested <= end)]
    if out_grid.size == 0:
        raise ValueError(f"no grid step lies within the common range [{start}, {end}]")
    info["start"], info["end"] = float(out_grid[0]), float(out_grid[-1])
    matrix = np.stack([np.interp(out_grid, s, v) for s, v in runs])
    return out_grid, matrix, info


# ------------------------------------------------------------------------------ areas
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
