"""The ``evaluate`` entry point: from a study's MLflow runs to tables and figures.

A *study* is an experiment name, a parent run id (its nested runs), or a ``search_runs``
filter. Every training run (``train-dense``, ``transfer``) is put in a *condition* by its
lineage tags: algo x source x target x mask method x sparsity x weights x adapt x mask sparsity
(baselines and dense runs have their own conditions). ``sparsity`` is the final sparsity a run
ends at, ``mask_sparsity`` the realised sparsity of the mask it starts from (they differ for a
transfer that prunes on, ``adapt=gmp``; a run without the tag started at its final sparsity).

Every statistic below, with the paper that defines it, is listed in docs/protocol.md. The
per-seed score is one number everywhere: the mean return over the episodes of a run's final
evaluation (``eval/score_mean`` at its last step; ``final_eval_mean`` of a ticket). Per
condition, over seeds:

* IQM of the final evaluation score with a 95% stratified-bootstrap CI (rliable);
* the IQM sample-efficiency curve with CIs, on a common step grid (truncation is reported);
* IQM of the final *training* return (``train/episode_score``) with a CI, and its IQM curve:
  per run, the mean return of the training episodes that ended in each window of the run's
  logging grid (see :func:`windowed_episode_curve`);
* the area ratio against the dense-from-scratch runs of the same target and algo, with a
  bootstrap CI and a significance mark, and the probability of improvement over them. The area
  ratio is that of the prior study's ``generate_area_ratio``: the areas under the per-step IQM
  curves over runs (``aggregate="mean"``: the mean curves), after adding the target game's fixed
  offset (``game_offset``: 21 for Pong, 0 for games with non-negative scores) to every return;
  the ``area_aggregate`` and ``area_offset`` columns say which were used;
* with ``--baselines``, the same comparison of every transfer against each named sparse
  baseline (``gmp``, ``set``, ``rigl``, ``random``: the ``baseline-<name>`` runs of the same
  algo and target game at the same final sparsity, compared rounded to 2 decimals), in
  ``area_ratio_vs_<name>*`` / ``significant_vs_<name>`` / ``p_improvement_vs_<name>`` columns,
  with the baseline's sparsity in ``sparsity_vs_<name>``.

Outputs (written to ``--output-dir`` and logged as artifacts of the evaluate run):
``conditions.csv`` / ``conditions.md`` and figures (PNG and PDF): transfer grids of area ratios
(``grid_*`` vs dense, ``grid_vs-<name>_*`` vs each named sparse baseline), learning curves per
target game of the evaluation score (``curves_<target>``) and of the training return
(``train_curves_<target>``), winning-ticket curves (``tickets_<algo>_<game>``: tickets and the
random control against the dense level, as Frankle & Carbin 2019), plasticity over training;
``study.json`` records the aggregate and the offsets.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from mlproject import figures
from mlproject.contracts import EVALUATE, EVALUATION, FIND_MASK, TICKETS, TRAIN_DENSE, TRANSFER, Tag
from mlproject.errors import InputError
from sparse_ticket.config import TrainConfig
from sparse_ticket.stats.aggregate import (
    Aggregate,
    align_curves,
    area_ratio_ci,
    game_offset,
    iqm_curve_with_ci,
    iqm_with_ci,
    probability_of_improvement,
)
from sparse_ticket.types import Interval

ENTRY_POINT = EVALUATE
TRAINING_ENTRY_POINTS = (TRAIN_DENSE, TRANSFER)
EVAL_METRIC = "eval/score_mean"
TRAIN_METRIC = "train/episode_score"
BASELINES = ("dense", "gmp", "set", "rigl", "random")
DEFAULT_BASELINES = ("dense",)
AGGREGATES = ("iqm", "mean")
DEFAULT_AGGREGATE: Aggregate = "iqm"
PLASTICITY_METRIC = "plasticity/q/dormant/overall/tau_0.025"
FIELDS = (
    "algo",
    "source",
    "target",
    "method",
    "sparsity",
    "weights",
    "adapt",
    "condition",
    "mask_sparsity",
)

AreaRatio = tuple[float, float, float, bool]
CurveCI = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def parse_baselines(text: str) -> tuple[str, ...]:
    """``"dense,gmp"`` -> ``("dense", "gmp")`` (blank: the default, ``dense``); InputError on
    an unknown name."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in str(text).split(",") if n.strip()))
    for name in names:
        if name not in BASELINES:
            raise InputError(f"unknown baseline {name!r} in baselines ({', '.join(BASELINES)})")
    return names or DEFAULT_BASELINES


def check_aggregate(aggregate: str) -> Aggregate:
    """``aggregate`` (``iqm`` or ``mean``, any case), else InputError."""
    name = str(aggregate).strip().lower()
    if name not in AGGREGATES:
        raise InputError(f"unknown aggregate {aggregate!r} ({', '.join(AGGREGATES)})")
    return name  # type: ignore[return-value]


@dataclass(frozen=True)
class Condition:
    """What a run trained: the grid coordinates of the study.

    ``sparsity`` is the final sparsity, ``mask_sparsity`` the sparsity the run started from
    (both rounded to 2 decimals; equal unless a transfer prunes on from its mask).
    """

    algo: str
    source: str
    target: str
    method: str
    sparsity: str
    weights: str
    adapt: str
    condition: str
    mask_sparsity: str

    @property
    def span(self) -> str:
        """``0.80``, or ``0.80->0.90`` for a run that starts from a mask at 0.80 and ends at
        0.90."""
        final = _two_decimals(self.sparsity)
        start = _two_decimals(self.mask_sparsity or self.sparsity)
        return final if start == final else f"{start}->{final}"

    @property
    def label(self) -> str:
        if self.condition in ("dense", "baseline-dense"):
            return f"{self.algo} dense from scratch"
        if self.condition.startswith("baseline-"):
            return f"{self.algo} {self.condition[9:]} on target, s={self.span}"
        return (
            f"{self.algo} {self.method} {self.source}->{self.target} s={self.span} "
            f"{self.weights}/{self.adapt}"
        )

    @property
    def is_scratch(self) -> bool:
        return self.condition in ("dense", "baseline-dense")


@dataclass
class Curves:
    """One condition's runs: (steps, values) per run."""

    run_ids: list[str] = field(default_factory=list)
    steps: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


def condition_of(run: Any) -> Condition:
    """The condition of a training run, from its tags and params."""
    tags, params = run.data.tags, run.data.params
    game = params.get("game", "")
    if tags.get(Tag.ENTRY_POINT) == TRAIN_DENSE:
        algo = params.get("agent.algo", "")
        return Condition(algo, game, game, "", "0", "", "", "dense", mask_sparsity="0")
    # The final sparsity; the mask's (start) sparsity defaults to it on runs logged before the
    # mask_sparsity tag existed, and on baselines, which train at one sparsity throughout.
    final = tags.get(Tag.SPARSITY, "0")
    return Condition(
        algo=tags.get(Tag.ALGO, params.get("agent.algo", "")),
        source=tags.get(Tag.SOURCE_GAME, "") or "-",
        target=tags.get(Tag.TARGET_GAME, game),
        method=tags.get(Tag.MASK_METHOD, "") or "-",
        # Realised sparsities (%.6g) differ in the last digits between masks of one level.
        sparsity=_rounded(final),
        weights=tags.get(Tag.WEIGHTS, ""),
        adapt=tags.get(Tag.ADAPT, ""),
        condition=tags.get(Tag.CONDITION, "transfer"),
        mask_sparsity=_rounded(tags.get(Tag.MASK_SPARSITY, final)),
    )


# ------------------------------------------------------------------------------ gathering
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


def dense_final_scores(curves: dict[Condition, Curves]) -> dict[tuple[str, str], list[float]]:
    """Per (algo, game), the per-seed score of every ``train-dense`` run: its last
    ``eval/score_mean`` (the mean over its final evaluation's episodes)."""
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for condition, runs in curves.items():
        if condition.condition == "dense":
            out[(condition.algo, condition.target)] += [float(v[-1]) for v in runs.values]
    return dict(out)


@dataclass
class TicketFigure:
    """The data of one winning-ticket figure (one algo and game).

    ``series``: per method (tickets first, the ``random`` control last), ``(sparsities (L,),
    points (L,), lows (L,), highs (L,))``: the IQM over seeds of the per-seed score at each
    level with its 95% stratified-bootstrap CI. ``dense``: the same statistic of the
    ``train-dense`` runs (0% sparsity), ``None`` when the study has none.
    """

    series: dict[str, figures.Curve]
    dense: Interval | None


def ticket_figures(
    levels: dict[TicketKey, dict[float, list[float]]],
    dense: dict[tuple[str, str], list[float]],
    reps: int,
    seed: int,
) -> dict[tuple[str, str], TicketFigure]:
    """Per (algo, game) with tickets: the IQM (with CI) vs sparsity of each method and the
    dense level, as in Frankle & Carbin (2019)'s figures."""
    out: dict[tuple[str, str], TicketFigure] = {}
    # Tickets (gmp, imp) first, the random control after them: the legend reads as in the paper.
    for algo, game, method in sorted(levels, key=lambda k: (k[0], k[1], k[2] == "random", k[2])):
        by_level = levels[(algo, game, method)]
        xs = sorted(by_level)
        cis = [_iqm_ci(by_level[x], reps, seed) for x in xs]
        points, lows, highs = (np.array(v) for v in zip(*cis, strict=True))
        if (algo, game) not in out:
            scores = dense.get((algo, game))
            out[(algo, game)] = TicketFigure({}, _iqm_ci(scores, reps, seed) if scores else None)
        out[(algo, game)].series[method] = (np.array(xs), points, lows, highs)
    return out


def _iqm_ci(scores: list[float], reps: int, seed: int) -> Interval:
    """IQM over seeds with its CI: ``scores (seeds,)``, one task."""
    return iqm_with_ci({"x": np.array(scores, dtype=np.float64)[:, None]}, reps, seed=seed)["x"]


def write_ticket_figures(data: dict[tuple[str, str], TicketFigure], folder: Path) -> list[Path]:
    """``tickets_<algo>_<game>``: IQM vs sparsity of each method (tickets and the random
    control) with the dense level as a dashed line and band."""
    files: list[Path] = []
    for (algo, game), figure in sorted(data.items()):
        title = f"winning tickets: {algo} on {game}"
        stem = folder / _slug("tickets", algo, game)
        files += figures.winning_ticket_curves(figure.series, stem, title, dense=figure.dense)
    return files


def _is_run_id(client: mlflow.MlflowClient, text: str) -> bool:
    if not text.isalnum():
        return False
    try:
        client.get_run(text)
    except mlflow.exceptions.MlflowException:
        return False
    return True


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


# ------------------------------------------------------------------------------ statistics
@dataclass
class Comparison:
    """Area ratio and probability of improvement of a condition against a reference one
    (``sparsity``: the reference's final sparsity)."""

    area_ratio: AreaRatio | None = None
    improvement: Interval | None = None
    note: str = ""
    sparsity: str = ""


@dataclass
class Summary:
    """One row of the conditions table (``versus``: per named sparse baseline, the comparison,
    or ``None`` when the study has no matching baseline runs; ``area_aggregate`` and
    ``area_offset``: how every area ratio of the row is computed)."""

    condition: Condition
    seeds: int
    final: Interval | None = None
    area_ratio: AreaRatio | None = None
    improvement: Interval | None = None
    note: str = ""
    curve: CurveCI | None = None
    matrix: np.ndarray | None = None
    train_final: Interval | None = None
    train_curve: CurveCI | None = None
    versus: dict[str, Comparison | None] = field(default_factory=dict)
    area_aggregate: str = DEFAULT_AGGREGATE
    area_offset: float = 0.0

    def add_note(self, text: str) -> None:
        if text:
            self.note = f"{self.note}; {text}" if self.note else text

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(self.condition, name) for name in FIELDS}
        row["seeds"] = self.seeds
        row.update(_interval_cells("final_iqm", self.final))
        row.update(_interval_cells("final_train_iqm", self.train_final))
        row.update(area_aggregate=self.area_aggregate, area_offset=self.area_offset)
        if self.area_ratio is not None:
            point, low, high, significant = self.area_ratio
            row.update(area_ratio=point, area_ratio_low=low, area_ratio_high=high)
            row["significant"] = significant
        if self.improvement is not None:
            row.update(_interval_cells("p_improvement", self.improvement))
        for name, comparison in self.versus.items():
            row.update(_versus_cells(name, comparison))
        row["note"] = self.note
        return row


def _interval_cells(prefix: str, interval: Interval | None) -> dict[str, Any]:
    point, low, high = interval if interval is not None else ("", "", "")
    return {prefix: point, f"{prefix}_low": low, f"{prefix}_high": high}


def _versus_cells(name: str, comparison: Comparison | None) -> dict[str, Any]:
    """``area_ratio_vs_<name>`` (point, low, high), ``significant_vs_<name>``,
    ``p_improvement_vs_<name>``, ``sparsity_vs_<name>`` (the baseline's final sparsity); empty
    cells where there is no value."""
    ratio = comparison.area_ratio if comparison is not None else None
    point, low, high, significant = ratio if ratio is not None else ("", "", "", "")
    improvement = comparison.improvement if comparison is not None else None
    return {
        f"sparsity_vs_{name}": comparison.sparsity if comparison is not None else "",
        f"area_ratio_vs_{name}": point,
        f"area_ratio_vs_{name}_low": low,
        f"area_ratio_vs_{name}_high": high,
        f"significant_vs_{name}": significant,
        f"p_improvement_vs_{name}": improvement[0] if improvement is not None else "",
    }


def summarise(
    curves: dict[Condition, Curves],
    reps: int,
    seed: int,
    train: dict[Condition, Curves] | None = None,
    baselines: Iterable[str] = DEFAULT_BASELINES,
    aggregate: Aggregate = DEFAULT_AGGREGATE,
) -> list[Summary]:
    """Final IQMs (evaluation and training return), curves, and comparisons against the
    scratch runs (``dense``) and the named sparse baselines of the same target.

    Every area ratio on a target game uses ``aggregate`` over runs and that game's fixed
    :func:`game_offset`, so all comparisons on one game share one zero of the return scale.
    """
    aggregate = check_aggregate(aggregate)  # before any bootstrap: not one note per comparison
    summaries = {c: _evaluation_summary(c, runs, reps, seed) for c, runs in curves.items()}
    for condition, runs in (train or {}).items():
        summary = summaries.setdefault(condition, Summary(condition, len(runs.run_ids)))
        _add_training(summary, runs, reps, seed)
    names = tuple(baselines)
    for summary in summaries.values():
        summary.area_aggregate = aggregate
        summary.area_offset = game_offset(summary.condition.target)
    for summary in summaries.values():
        _add_comparisons(summary, summaries, names, reps, seed)
    return list(summaries.values())


def _evaluation_summary(condition: Condition, runs: Curves, reps: int, seed: int) -> Summary:
    grid, matrix, info = align_curves(runs.steps, runs.values)
    final = iqm_with_ci({"x": matrix[:, -1:]}, reps=reps, seed=seed)["x"]
    curve = iqm_curve_with_ci({"x": matrix}, reps=reps, seed=seed)["x"]
    summary = Summary(condition, len(runs.run_ids), final, curve=(grid, *curve), matrix=matrix)
    summary.add_note(_truncation_note(info))
    return summary


def _add_training(summary: Summary, runs: Curves, reps: int, seed: int) -> None:
    """Final training-return IQM with its CI, and the IQM training-return curve."""
    grid, matrix, info = align_curves(runs.steps, runs.values)
    summary.train_final = iqm_with_ci({"x": matrix[:, -1:]}, reps=reps, seed=seed)["x"]
    summary.train_curve = (grid, *iqm_curve_with_ci({"x": matrix}, reps=reps, seed=seed)["x"])
    summary.add_note(_truncation_note(info, "training curves"))


def _add_comparisons(
    summary: Summary,
    summaries: dict[Condition, Summary],
    baselines: tuple[str, ...],
    reps: int,
    seed: int,
) -> None:
    """vs dense (when named) for every non-scratch condition; vs each named sparse baseline
    for transfers."""
    condition = summary.condition
    if summary.curve is None:  # training return only: nothing to compare
        return
    scratch = _scratch_for(condition, summaries)
    if "dense" in baselines and scratch is not None and not condition.is_scratch:
        comparison = _compare(summary, scratch, reps, seed)
        summary.area_ratio, summary.improvement = comparison.area_ratio, comparison.improvement
        summary.add_note(comparison.note)
    if condition.condition != "transfer":
        return
    for name in (b for b in baselines if b != "dense"):
        reference = _baseline_for(condition, name, summaries)
        if reference is None:
            summary.versus[name] = None
            level = _rounded(condition.sparsity)
            summary.add_note(f"no baseline-{name} runs on {condition.target} at s={level}")
            continue
        summary.versus[name] = _compare(summary, reference, reps, seed)
        if summary.versus[name].note:
            summary.add_note(f"vs {name}: {summary.versus[name].note}")


def _truncation_note(info: dict[str, Any], what: str = "curves") -> str:
    if not info.get("dropped_steps"):
        return ""
    span = [f"to step {info['truncated_to']}"] if info.get("truncated_to") is not None else []
    if info.get("started_from") is not None:
        span.insert(0, f"from step {info['started_from']}")
    return f"{what} truncated {' '.join(span)} ({info['dropped_steps']} grid steps dropped)"


def _scratch_for(condition: Condition, summaries: dict[Condition, Summary]) -> Summary | None:
    """The dense-from-scratch runs of the same algo on the same target game: the
    ``baseline-dense`` runs (trained like the transfers) if there are any, else the
    ``train-dense`` runs on that game."""
    matches = [
        (other.condition != "baseline-dense", summary)
        for other, summary in summaries.items()
        if other.is_scratch and (other.algo, other.target) == (condition.algo, condition.target)
    ]
    for _, summary in sorted(matches, key=lambda pair: pair[0]):
        return summary if summary.curve is not None else None
    return None


def _baseline_for(
    condition: Condition, name: str, summaries: dict[Condition, Summary]
) -> Summary | None:
    """The ``baseline-<name>`` runs of the same algo and target game at the same final sparsity
    (rounded to 2 decimals; a transfer that prunes on from 0.8 to 0.9 meets the baseline at
    0.9); the one with most seeds if several conditions match."""
    level = _rounded(condition.sparsity)
    matches = [
        summary
        for other, summary in summaries.items()
        if other.condition == f"baseline-{name}"
        and (other.algo, other.target) == (condition.algo, condition.target)
        and _rounded(other.sparsity) == level
        and summary.curve is not None
    ]
    return max(matches, key=lambda s: s.seeds, default=None)


def _rounded(sparsity: str) -> str:
    """A sparsity tag (``%.6g`` of the realised sparsity) rounded to 2 decimals, as text."""
    try:
        return f"{round(float(sparsity), 2):g}"
    except ValueError:
        return sparsity


def _two_decimals(sparsity: str) -> str:
    """``"0.8"`` -> ``"0.80"`` for labels and titles (text that is no number stays as it is)."""
    try:
        return f"{float(sparsity):.2f}"
    except ValueError:
        return sparsity


def _compare(summary: Summary, reference: Summary, reps: int, seed: int) -> Comparison:
    """Area ratio and probability of improvement against ``reference`` on a shared grid, with
    the summary's aggregate and (target game's) offset."""
    grid_a, grid_b = summary.curve[0], reference.curve[0]
    end = min(grid_a[-1], grid_b[-1])
    grid = np.union1d(grid_a[grid_a <= end], grid_b[grid_b <= end])
    if len(grid) < 2:
        return Comparison(note="too few steps for an area", sparsity=reference.condition.sparsity)
    ours = np.stack([np.interp(grid, grid_a, row) for row in summary.matrix])
    theirs = np.stack([np.interp(grid, grid_b, row) for row in reference.matrix])
    comparison = Comparison(sparsity=reference.condition.sparsity)
    try:
        comparison.area_ratio = area_ratio_ci(
            ours,
            theirs,
            grid,
            reps=reps,
            seed=seed,
            offset=summary.area_offset,
            aggregate=summary.area_aggregate,
        )
    except ValueError as error:
        comparison.note = f"no area ratio on {summary.condition.target}: {error}"
    comparison.improvement = probability_of_improvement(
        summary.matrix[:, -1:], reference.matrix[:, -1:], reps=min(reps, 2000), seed=seed
    )
    return comparison


# ------------------------------------------------------------------------------ tables
def write_tables(summaries: list[Summary], folder: Path) -> list[Path]:
    """``conditions.csv`` and ``conditions.md``, one row per condition."""
    rows = [s.row() for s in sorted(summaries, key=lambda s: tuple(map(str, s.row().values())))]
    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key != "note"]
    columns.append("note")
    csv_path, md_path = folder / "conditions.csv", folder / "conditions.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _slug(*parts: str) -> str:
    return "_".join(p.replace("/", "-").replace(" ", "") for p in parts if p)


def write_figures(
    summaries: list[Summary],
    plasticity: dict[Condition, Curves],
    folder: Path,
    reps: int,
    seed: int,
    baselines: Iterable[str] = DEFAULT_BASELINES,
) -> list[Path]:
    """Transfer grids (vs each named baseline), learning curves per target game (evaluation
    score and training return), and plasticity over training."""
    files: list[Path] = []
    for name in baselines:
        files += _write_grids(summaries, folder, name)
    files += _write_curves(summaries, folder, "curves", "IQM evaluation score")
    files += _write_curves(summaries, folder, "train_curves", "IQM training return")
    panels: dict[str, dict[str, Any]] = defaultdict(dict)
    for condition, runs in plasticity.items():
        grid, matrix, _ = align_curves(runs.steps, runs.values)
        curve = iqm_curve_with_ci({"x": matrix}, reps=reps, seed=seed)["x"]
        panels[condition.target][condition.label] = (grid, *curve)
    if panels:
        files += figures.small_multiples(
            panels,
            folder / "plasticity",
            "dormant units (tau 0.025) over training",
            "dormant ratio",
        )
    return files


def _ratio_vs(summary: Summary, name: str) -> AreaRatio | None:
    if name == "dense":
        return summary.area_ratio
    comparison = summary.versus.get(name)
    return comparison.area_ratio if comparison is not None else None


@dataclass
class Grid:
    """One transfer grid: its title and ``(source, target) -> (point, low, high,
    significant)`` cells."""

    title: str
    cells: dict[tuple[str, str], AreaRatio] = field(default_factory=dict)


def transfer_grids(summaries: list[Summary], name: str) -> dict[str, Grid]:
    """The source x target grids of area ratios vs baseline ``name``, by file stem: one per
    transfer setting, ``grid_<setting>`` vs dense, ``grid_vs-<name>_<setting>`` vs a sparse
    baseline. A setting whose transfers prune on from their mask's sparsity has
    ``<start>-<final>`` in its stem, and every title states the sparsity of both sides."""
    grids: dict[tuple[str, ...], Grid] = {}
    for s in summaries:
        c, ratio = s.condition, _ratio_vs(s, name)
        if c.condition != "transfer" or ratio is None:
            continue
        level = c.sparsity if c.mask_sparsity == c.sparsity else f"{c.mask_sparsity}-{c.sparsity}"
        key = (c.algo, c.method, level, c.weights, c.adapt)
        if key not in grids:
            if name == "dense":
                versus = "dense from scratch"
            else:  # matched at the final sparsity, so one level per setting
                versus = f"{name} on target at s={_two_decimals(s.versus[name].sparsity)}"
            grids[key] = Grid(
                f"area ratio ({s.area_aggregate.upper()} curves) vs {versus}\n"
                f"transfer s={c.span}: {c.algo} {c.method} {c.weights}/{c.adapt}"
            )
        grids[key].cells[(c.source, c.target)] = ratio
    prefix = ("grid",) if name == "dense" else ("grid", f"vs-{name}")
    return {_slug(*prefix, *key): grid for key, grid in sorted(grids.items())}


def _write_grids(summaries: list[Summary], folder: Path, name: str) -> list[Path]:
    files: list[Path] = []
    for stem, grid in transfer_grids(summaries, name).items():
        games = sorted({g for pair in grid.cells for g in pair})
        files += figures.transfer_grid(grid.cells, games, folder / stem, grid.title)
    return files


def _write_curves(summaries: list[Summary], folder: Path, kind: str, ylabel: str) -> list[Path]:
    """IQM learning curves per target game: ``kind`` is ``curves`` (evaluation score) or
    ``train_curves`` (training return)."""
    attribute = "curve" if kind == "curves" else "train_curve"
    files: list[Path] = []
    for target in sorted({s.condition.target for s in summaries}):
        curves = {
            s.condition.label: getattr(s, attribute)
            for s in summaries
            if s.condition.target == target and getattr(s, attribute) is not None
        }
        if curves:
            title = target if kind == "curves" else f"{target}: training return"
            files += figures.learning_curves(curves, folder / _slug(kind, target), title, ylabel)
    return files


def evaluate_study(
    study: str,
    folder: Path,
    reps: int = 10_000,
    seed: int = 0,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    aggregate: str = DEFAULT_AGGREGATE,
) -> list[Path]:
    """Gather, summarise, write tables (and figures when available); returns the files.

    ``aggregate``: ``"iqm"`` (default) or ``"mean"``, the curve over runs whose area the area
    ratios compare (see ``sparse_ticket.stats.aggregate.area_ratio``).
    """
    name = check_aggregate(aggregate)
    folder.mkdir(parents=True, exist_ok=True)
    everything = scope_runs(study)
    runs = study_runs(study, everything)
    evaluation = metric_curves(runs, EVAL_METRIC)
    train = training_curves(runs, evaluation)
    summaries = summarise(evaluation, reps, seed, train, baselines, name)
    files = write_tables(summaries, folder)
    plasticity = metric_curves(runs, PLASTICITY_METRIC)
    files += write_figures(summaries, plasticity, folder, reps, seed, baselines)
    tickets = ticket_figures(ticket_levels(everything), dense_final_scores(evaluation), reps, seed)
    files += write_ticket_figures(tickets, folder)
    record = {"study": study, "runs": len(runs), "conditions": len(summaries)}
    record["baselines"] = list(baselines)
    record["area_aggregate"] = name
    targets = sorted({s.condition.target for s in summaries})
    record["area_offset"] = {game: game_offset(game) for game in targets}
    record["per_seed_score"] = f"{EVAL_METRIC} of the final evaluation (tickets: final_eval_mean)"
    (folder / "study.json").write_text(json.dumps(record, indent=2))
    files.append(folder / "study.json")
    return files


def evaluate(
    study: str,
    output_dir: str,
    reps: str,
    seed: str,
    baselines: str = "dense",
    aggregate: str = DEFAULT_AGGREGATE,
) -> int:
    """The entry point: evaluate ``study`` inside an MLflow run and log every output file."""
    from mlproject.errors import parse_int
    from mlproject.tracking import log_provenance

    repetitions = parse_int(reps, "reps", minimum=100)
    rng_seed = parse_int(seed, "seed", minimum=0)
    names = parse_baselines(baselines)
    curve = check_aggregate(aggregate)
    runs = study_runs(study)  # validate before a run opens
    with mlflow.start_run() as run:
        folder = Path(output_dir or f"evaluation/{run.info.run_id}").resolve()
        params = {"study": study, "reps": repetitions, "baselines": ",".join(names)}
        params["aggregate"] = curve
        log_provenance(params, {Tag.ENTRY_POINT: ENTRY_POINT})
        files = evaluate_study(study, folder, repetitions, rng_seed, names, curve)
        for path in files:
            mlflow.log_artifact(str(path), EVALUATION)
        print(f"evaluate: {len(runs)} runs; tables and figures in {folder}")
    return 0
