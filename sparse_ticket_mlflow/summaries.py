"""The statistics of a study, one summary per condition: the rows of the conditions table.

Per condition, over seeds (every statistic, with the paper that defines it, is listed in
docs/protocol.md): the IQM of the final evaluation score with a 95% stratified-bootstrap CI
(rliable) and the IQM sample-efficiency curve on a common step grid (truncation is noted); the
same of the training return; the area ratio against the dense-from-scratch runs of the same
target and algo (and against each named sparse baseline at the same final sparsity) with a
bootstrap CI and a significance mark, and the probability of improvement over them. The
statistics themselves are :mod:`sparse_ticket.stats`' functions on plain arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparse_ticket.stats.area_ratios import AGGREGATES, Aggregate, area_ratio_ci, game_offset
from sparse_ticket.stats.curves import align_curves
from sparse_ticket.stats.scores import iqm_curve_with_ci, iqm_with_ci, probability_of_improvement
from sparse_ticket.types import Interval
from sparse_ticket_mlflow.conditions import (
    DEFAULT_BASELINES,
    FIELDS,
    Condition,
    Curves,
    rounded_sparsity,
)
from sparse_ticket_mlflow.errors import InputError

DEFAULT_AGGREGATE: Aggregate = "iqm"

AreaRatio = tuple[float, float, float, bool]
CurveCI = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def check_aggregate(aggregate: str) -> Aggregate:
    """``aggregate`` (``iqm`` or ``mean``, any case), else InputError."""
    name = str(aggregate).strip().lower()
    if name not in AGGREGATES:
        raise InputError(f"unknown aggregate {aggregate!r} ({', '.join(AGGREGATES)})")
    return name  # type: ignore[return-value]


# ------------------------------------------------------------------------------ summaries
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
            level = rounded_sparsity(condition.sparsity)
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
    level = rounded_sparsity(condition.sparsity)
    matches = [
        summary
        for other, summary in summaries.items()
        if other.condition == f"baseline-{name}"
        and (other.algo, other.target) == (condition.algo, condition.target)
        and rounded_sparsity(other.sparsity) == level
        and summary.curve is not None
    ]
    return max(matches, key=lambda s: s.seeds, default=None)


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
