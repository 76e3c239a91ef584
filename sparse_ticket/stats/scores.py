"""Score statistics over seeds: IQM and probability of improvement with bootstrap CIs.

A tiny functional API on plain numpy arrays, in the style of ``rliable`` (Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice"). Shapes follow rliable:

- a *score matrix* is ``(num_runs, num_tasks)``: ``scores[n, m]`` is the score of run (seed) ``n``
  on task (game) ``m``;
- a *curve matrix* is ``(num_runs, num_steps)``: ``curves[n, t]`` is the evaluation return of run
  ``n`` at the ``t``-th step of a common step grid (see
  :func:`sparse_ticket.stats.curves.align_curves`).

What is here:

- :func:`iqm`, :func:`iqm_with_ci`, :func:`iqm_curve_with_ci`: the interquartile mean (IQM, the
  25% trimmed mean over all runs and tasks) with stratified-bootstrap percentile CIs, as
  ``rliable.library.get_interval_estimates`` computes them (the proposal reports IQM with 95%
  CIs over 10 seeds).
- :func:`probability_of_improvement`: ``P(X > Y)`` (Agarwal et al. 2021, section 4.3) with CIs.

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

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from sparse_ticket.stats.bootstrap import (
    improvement_interval,
    interquartile_mean,
    iqm_curve_interval,
    iqm_interval,
)
from sparse_ticket.stats.checks import as_matrix, check_bootstrap, warn_single_run
from sparse_ticket.types import CurveInterval, Interval

__all__ = ["iqm", "iqm_curve_with_ci", "iqm_with_ci", "probability_of_improvement"]

_Estimate = TypeVar("_Estimate", Interval, CurveInterval)


# ------------------------------------------------------------------------------ IQM
def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all runs and tasks (rliable ``metrics.aggregate_iqm``).

    Args:
        scores: ``(num_runs, num_tasks)``.

    Returns:
        The 25% trimmed mean of the ``num_runs * num_tasks`` pooled scores: ``int(n / 4)`` values
        are cut from each end (Agarwal et al. 2021).
    """
    return float(interquartile_mean(as_matrix(scores, "scores")))


def _per_entry(
    entries: Mapping[str, Any],
    name: str,
    what: str,
    estimate: Callable[[np.ndarray, int, float, int], _Estimate],
    reps: int,
    confidence: float,
    seed: int,
) -> dict[str, _Estimate]:
    """``estimate(matrix, reps, confidence, seed)`` of every entry, each checked as a ``what``
    matrix (a single run warned): ``{key: (num_runs, n)} -> {key: estimate}``."""
    check_bootstrap(reps, confidence)
    out: dict[str, _Estimate] = {}
    for key, raw in entries.items():
        matrix = as_matrix(raw, f"{name}[{key!r}]", what)
        # 4: this helper, then the public function, then its caller, whom the warning is for.
        warn_single_run(f"{name}[{key!r}]", matrix.shape[0], stacklevel=4)
        out[key] = estimate(matrix, int(reps), confidence, seed)
    return out


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
    what = "(num_runs, num_tasks)"
    return _per_entry(score_dict, "score_dict", what, iqm_interval, reps, confidence, seed)


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
            (see :func:`sparse_ticket.stats.curves.align_curves`).
        reps: bootstrap replications.
        confidence: CI coverage.
        seed: seeds every entry's bootstrap.

    Returns:
        name -> ``(points, lows, highs)``, each ``(num_steps,)``.
    """
    what = "(num_runs, num_steps)"
    return _per_entry(curves, "curves", what, iqm_curve_interval, reps, confidence, seed)


# ------------------------------------------------------------------------------ P(X > Y)
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
    check_bootstrap(reps, confidence)
    xm = as_matrix(x, "x")
    ym = as_matrix(y, "y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(
            f"x and y must have the same number of tasks, got {xm.shape[1]} and {ym.shape[1]}"
        )
    warn_single_run("x", xm.shape[0])
    warn_single_run("y", ym.shape[0])
    return improvement_interval(xm, ym, int(reps), confidence, seed)
