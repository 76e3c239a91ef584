"""What ``evaluate`` writes: the conditions tables and the figures, with the data each shows.

``conditions.csv`` / ``conditions.md`` hold one row per condition (``Summary.row`` of
:mod:`sparse_ticket_mlflow.summaries`). The figures (PNG and PDF, drawn by
:mod:`sparse_ticket_mlflow.figures` from plain data): transfer grids of area ratios (``grid_*`` vs
dense, ``grid_vs-<name>_*`` vs each named sparse baseline), learning curves per target game of the
evaluation score (``curves_<target>``) and of the training return (``train_curves_<target>``),
winning-ticket curves (``tickets_<algo>_<game>``: tickets and the random control against the dense
level, as Frankle & Carbin 2019), and plasticity over training.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparse_ticket.stats.curves import align_curves
from sparse_ticket.stats.scores import iqm_curve_with_ci, iqm_with_ci
from sparse_ticket.types import Interval
from sparse_ticket_mlflow import figures
from sparse_ticket_mlflow.conditions import DEFAULT_BASELINES, Condition, Curves, two_decimals
from sparse_ticket_mlflow.study_data import TicketKey
from sparse_ticket_mlflow.summaries import AreaRatio, Summary


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


# ------------------------------------------------------------------------------ figures
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
                versus = f"{name} on target at s={two_decimals(s.versus[name].sparsity)}"
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


# ------------------------------------------------------------------------------ winning tickets
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
