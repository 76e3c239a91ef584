"""A study's runs and curves, read from the MLflow tracking store.

A *study* is an experiment name, a parent run id (its nested runs), or a ``search_runs``
filter (:func:`scope_runs`). From its finished runs this module reads, per condition
(:mod:`sparse_ticket_mlflow.conditions`), the metric histories of the training runs
(:func:`metric_curves`: the evaluation score, the plasticity), their training-return curves
(:func:`training_curves`) and the winning-ticket scores of the find-mask runs
(:func:`ticket_levels`). Everything it returns is plain data: no statistic is computed here.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from sparse_ticket.config import TrainConfig
from sparse_ticket_mlflow.conditions import Condition, Curves, condition_of
from sparse_ticket_mlflow.contracts import FIND_MASK, TICKETS, TRAIN_DENSE, TRANSFER, Tag
from sparse_ticket_mlflow.errors import InputError

TRAINING_ENTRY_POINTS = (TRAIN_DENSE, TRANSFER)
EVAL_METRIC = "eval/score_mean"
TRAIN_METRIC = "train/episode_score"
PLASTICITY_METRIC = "plasticity/q/dormant/overall/tau_0.025"


# ------------------------------------------------------------------------------ runs
def scope_runs(study: str) -> list[Any]:
    """Every run of a study: an experiment's runs, a parent's nested runs, or a filter's."""
    client = mlflow.MlflowClient()
    text = study.strip()
    if not text:
        raise InputError("study must be an experiment name, a parent run id or a filter")
    experiment = client.get_experiment_by_name(text)
    if experiment is not None:
        return mlflow.search_runs([experiment.experiment_id], output_format="list")
    if _is_run_id(client, text):
        return mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.mlflow.parentRunId = '{text}'",
            output_format="list",
        )
    try:
        return mlflow.search_runs(
            search_all_experiments=True, filter_string=text, output_format="list"
        )
    except mlflow.exceptions.MlflowException as error:
        first = str(error).splitlines()[0]
        raise InputError(f"study {text!r} is no experiment, run id or filter: {first}") from None


def _is_run_id(client: mlflow.MlflowClient, text: str) -> bool:
    if not text.isalnum():
        return False
    try:
        client.get_run(text)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def finished(runs: list[Any], *entry_points: str) -> list[Any]:
    """The FINISHED runs of the given entry points."""
    return [
        r
        for r in runs
        if r.data.tags.get(Tag.ENTRY_POINT) in entry_points and r.info.status == "FINISHED"
    ]


def study_runs(study: str, scope: list[Any] | None = None) -> list[Any]:
    """The finished training runs of a study (InputError if there are none)."""
    runs = finished(scope if scope is not None else scope_runs(study), *TRAINING_ENTRY_POINTS)
    if not runs:
        raise InputError(f"study {study.strip()!r} has no finished train-dense or transfer runs")
    return runs


# ------------------------------------------------------------------------------ tickets
TicketKey = tuple[str, str, str]
"""``(algo, game, method)`` of a find-mask run; ``method`` is ``imp``, ``gmp`` or ``random``."""


def ticket_levels(runs: list[Any]) -> dict[TicketKey, dict[float, list[float]]]:
    """Winning-ticket data of the study's find-mask runs: per (algo, game, method), per sparsity
    level, the per-seed score of the trained ticket of every seed.

    The per-seed score is ``final_eval_mean`` of the run's ``tickets.json`` (the mean return over
    the episodes of the ticket's final evaluation): the same statistic as a training run's final
    ``eval/score_mean``, so a ticket's point and the dense level compare like with like. The
    random control (Frankle & Carbin 2019: the same sparsity, a random mask) is the find-mask runs
    tagged ``sparse_ticket.method = random``.
    """
    out: dict[TicketKey, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in finished(runs, FIND_MASK):
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=TICKETS
            )
        except mlflow.exceptions.MlflowException:
            continue
        key = (
            run.data.params.get("agent.algo", ""),
            run.data.params.get("game", ""),
            run.data.tags.get(Tag.METHOD, ""),
        )
        for row in json.loads(Path(path).read_text()):
            if row.get("final_eval_mean") is not None:
                out[key][round(row["sparsity_target"], 4)].append(float(row["final_eval_mean"]))
    return out


# ------------------------------------------------------------------------------ curves
def metric_curves(runs: Iterable[Any], key: str) -> dict[Condition, Curves]:
    """Per condition, the history of ``key`` of every run (the last value at each step)."""
    client = mlflow.MlflowClient()
    grouped: dict[Condition, Curves] = defaultdict(Curves)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, key)
        if not history:
            continue
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
        steps = np.array(sorted(by_step), dtype=np.float64)
        curves = grouped[condition_of(run)]
        curves.run_ids.append(run.info.run_id)
        curves.steps.append(steps)
        curves.values.append(np.array([by_step[s] for s in sorted(by_step)], dtype=np.float64))
    return dict(grouped)


def windowed_episode_curve(
    grid: np.ndarray, episode_steps: np.ndarray, episode_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Training return on a run's logging grid: per window, the mean of its episodes.

    Window ``i`` is ``(grid[i - 1], grid[i]]`` (the first one is ``(-inf, grid[0]]``): an
    episode that ended exactly at a grid step counts in the window ending there, and several
    episodes ending at the same step all count. A window without any episode carries the
    previous window's value forward; leading windows without episodes are skipped (there is
    nothing to carry yet). Episodes after ``grid[-1]`` are ignored.

    Args:
        grid: ``(G,)`` strictly increasing steps (the run's evaluation or logging steps).
        episode_steps: ``(E,)`` the step at which each training episode ended, any order.
        episode_scores: ``(E,)`` the episodes' returns.

    Returns:
        ``(steps (G',), values (G',))`` with ``steps`` the grid steps from the first window
        with an episode on (``G' <= G``; both empty when no window has an episode).
    """
    grid = np.asarray(grid, dtype=np.float64)
    ends = np.asarray(episode_steps, dtype=np.float64)
    window = np.searchsorted(grid, ends, side="left")
    inside = window < grid.size
    counts = np.bincount(window[inside], minlength=grid.size)
    sums = np.bincount(
        window[inside], weights=np.asarray(episode_scores, np.float64)[inside], minlength=grid.size
    )
    latest = np.maximum.accumulate(np.where(counts > 0, np.arange(grid.size), -1))
    keep = latest >= 0
    source = latest[keep]
    return grid[keep], sums[source] / counts[source]


def _log_every_grid(params: dict[str, str], last_episode: float) -> np.ndarray:
    """Every ``run.log_every`` steps up to ``run.total_steps`` (or the last episode's step)."""
    every = _param_number(params, "run.log_every") or TrainConfig().run.log_every
    end = max(last_episode, _param_number(params, "run.total_steps"))
    return every * np.arange(1, max(1, math.ceil(end / every)) + 1, dtype=np.float64)


def _param_number(params: dict[str, str], key: str) -> float:
    try:
        return max(float(params.get(key, 0)), 0.0)
    except ValueError:
        return 0.0


def training_curves(
    runs: Iterable[Any], eval_curves: dict[Condition, Curves]
) -> dict[Condition, Curves]:
    """Per condition, every run's training-return curve (:func:`windowed_episode_curve`) on the
    steps of its ``eval/score_mean`` history, or every ``run.log_every`` steps without one.

    Episodes are read from the full ``train/episode_score`` history (all values per step; the
    tracking store keeps a repeated ``(value, step)`` of one flush only once).
    """
    client = mlflow.MlflowClient()
    grids = {
        run_id: steps
        for curves in eval_curves.values()
        for run_id, steps in zip(curves.run_ids, curves.steps, strict=True)
    }
    grouped: dict[Condition, Curves] = defaultdict(Curves)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, TRAIN_METRIC)
        if not history:
            continue
        ends = np.array([m.step for m in history], dtype=np.float64)
        grid = grids.get(run.info.run_id)
        if grid is None:
            grid = _log_every_grid(run.data.params, float(ends.max()))
        steps, values = windowed_episode_curve(grid, ends, np.array([m.value for m in history]))
        if steps.size:
            curves = grouped[condition_of(run)]
            curves.run_ids.append(run.info.run_id)
            curves.steps.append(steps)
            curves.values.append(values)
    return dict(grouped)
