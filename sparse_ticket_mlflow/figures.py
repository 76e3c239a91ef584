"""Plain-data plotting functions for the paper's figures.

Every function takes plain Python/numpy data (no MLflow, no torch), writes both
``<stem>.png`` (150 dpi) and ``<stem>.pdf``, and returns those two paths. Figures are built
with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so there is no
global state, no interactive backend and nothing to close: the figure is cleared after saving
and freed with its last reference.

Colours come from the colour-blind-safe ``tab10`` cycle (assigned by label, so a label keeps
its colour across the panels of one figure); the transfer grid uses the diverging ``RdBu``
map centred at 0 with symmetric limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, TwoSlopeNorm
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, PercentFormatter
from matplotlib.transforms import ScaledTranslation, Transform

__all__ = [
    "Curve",
    "GridCell",
    "learning_curves",
    "small_multiples",
    "transfer_grid",
    "winning_ticket_curves",
]

Curve = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(x, points, lows, highs)``: a curve and its pointwise confidence interval."""

GridCell = tuple[float, float, float, bool]
"""``(point, low, high, significant)`` for one source -> target cell of the transfer grid."""

DPI = 150
BAND_ALPHA = 0.2
MISSING_GREY = "0.82"
DODGE_POINTS = 5.0
_PALETTE = matplotlib.colormaps["tab10"].colors


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``fig`` to ``<stem>.png`` and ``<stem>.pdf``, free it, and return both paths.

    The suffixes are appended to the stem's name (not substituted), so a stem such as
    ``grid_0.80`` keeps its ``.80``.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    try:
        for path in paths:
            fig.savefig(path, dpi=DPI)
    finally:
        fig.clear()
    return paths


def _colours(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Assign each distinct label a ``tab10`` colour in order of first appearance."""
    unique = list(dict.fromkeys(labels))
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(unique)}


def _as_float(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """A 1-D float copy of ``values`` (``None`` entries become NaN)."""
    return np.asarray(values, dtype=float).reshape(-1)


def _fmt(value: float) -> str:
    """Two-decimal text for a number, ``n/a`` for NaN/inf."""
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _plot_curves(ax: Axes, curves: Mapping[str, Curve], colours: Mapping[str, object]) -> None:
    """Draw each curve as a line with a shaded CI band (NaN bounds leave gaps in the band)."""
    for label, (steps, points, lows, highs) in curves.items():
        x = _as_float(steps)
        colour = colours[label]
        ax.plot(x, _as_float(points), color=colour, label=label, linewidth=1.6)
        band = (_as_float(lows), _as_float(highs))
        ax.fill_between(x, *band, color=colour, alpha=BAND_ALPHA, linewidth=0)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("agent steps")
    ax.grid(True, alpha=0.3)


# --------------------------------------------------------------------------------------------
# 1. transfer grid
# --------------------------------------------------------------------------------------------


def _grid_matrix(
    cells: Mapping[tuple[str, str], GridCell], games: Sequence[str]
) -> np.ma.MaskedArray:
    """Point estimates as a rows=source x cols=target array, missing/non-finite cells masked."""
    n = len(games)
    values = np.full((n, n), np.nan)
    for i, source in enumerate(games):
        for j, target in enumerate(games):
            cell = cells.get((source, target))
            if cell is not None:
                values[i, j] = float(cell[0])
    return np.ma.masked_invalid(values)


def _symmetric_norm(values: np.ma.MaskedArray) -> TwoSlopeNorm:
    """A norm centred at 0 with limits ``±max|value|`` (``±1`` when nothing is finite/nonzero)."""
    finite = values.compressed()
    limit = float(np.max(np.abs(finite))) if finite.size else 0.0
    if not math.isfinite(limit) or limit <= 0.0:
        limit = 1.0
    return TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)


def _cell_text(cell: GridCell | None) -> str:
    """``"0.12*\\n[-0.05, 0.30]"`` for a cell (``*`` when significant), ``"n/a"`` if missing."""
    if cell is None or not math.isfinite(float(cell[0])):
        return "n/a"
    point, low, high, significant = cell
    star = "*" if significant else ""
    return f"{_fmt(float(point))}{star}\n[{_fmt(float(low))}, {_fmt(float(high))}]"


def _text_colour(value: float, norm: TwoSlopeNorm, cmap: Colormap) -> str:
    """Black or white text, whichever reads better on the cell colour."""
    if not math.isfinite(value):
        return "black"
    r, g, b, _ = cmap(norm(value))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "white" if luminance < 0.5 else "black"


def transfer_grid(
    cells: Mapping[tuple[str, str], GridCell],
    games: Sequence[str],
    stem: Path,
    title: str,
) -> list[Path]:
    """Heatmap of transfer area ratios: rows = source games, columns = target games.

    Args:
        cells: ``(source, target) -> (point, low, high, significant)``; absent cells (or a
            non-finite point) are drawn grey with ``n/a``; NaN CI bounds print as ``n/a``.
        games: Order of both the rows and the columns.
        stem: Output path without suffix; ``<stem>.png`` and ``<stem>.pdf`` are written.
        title: Figure title.

    Returns:
        ``[<stem>.png, <stem>.pdf]``.
    """
    if not games:
        raise ValueError("transfer_grid needs at least one game")
    games = list(games)
    n = len(games)
    values = _grid_matrix(cells, games)
    norm = _symmetric_norm(values)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad=MISSING_GREY)

    side = 1.9 * n + 2.2
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="equal")
    for i, source in enumerate(games):
        for j, target in enumerate(games):
            cell = cells.get((source, target))
            colour = _text_colour(float(values.data[i, j]), norm, cmap)
            ax.text(j, i, _cell_text(cell), ha="center", va="center", color=colour, fontsize=10)

    ax.set_xticks(range(n), games)
    ax.set_yticks(range(n), games)
    ax.tick_params(axis="x", labelrotation=30 if max(len(g) for g in games) > 10 else 0)
    ax.set_xlabel("target game")
    ax.set_ylabel("source game")
    ax.set_title(title)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    fig.colorbar(image, ax=ax, label="area ratio r", shrink=0.85)
    return _save(fig, stem)


# --------------------------------------------------------------------------------------------
# 2. learning curves
# --------------------------------------------------------------------------------------------


def learning_curves(
    curves: Mapping[str, Curve],
    stem: Path,
    title: str,
    ylabel: str = "IQM evaluation score",
) -> list[Path]:
    """Learning curves with shaded confidence bands, one line per label.

    Args:
        curves: ``label -> (steps, points, lows, highs)``; NaN bounds leave gaps in the band.
        stem: Output path without suffix.
        title: Axes title.
        ylabel: y-axis label.

    Returns:
        ``[<stem>.png, <stem>.pdf]``.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    _plot_curves(ax, curves, _colours(list(curves)))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if curves:
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
    return _save(fig, stem)


# --------------------------------------------------------------------------------------------
# 3. winning-ticket curves
# --------------------------------------------------------------------------------------------


def _error_lengths(points: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """``[below, above]`` error-bar lengths, clipped at 0 (NaN stays NaN: no bar drawn)."""
    return np.vstack([np.fmax(points - lows, 0.0), np.fmax(highs - points, 0.0)])


def _shift(container: ErrorbarContainer, transform: Transform) -> None:
    """Draw an error-bar series with ``transform`` (after autoscaling used its data limits)."""
    line, caps, bars = container.lines
    for artist in [line, *caps, *bars]:
        if artist is not None:
            artist.set_transform(transform)


DENSE_LABEL = "dense (0% sparsity)"


def _dense_reference(ax: Axes, dense: tuple[float, float, float]) -> None:
    """A dashed horizontal line at the dense point with its CI as a grey band.

    A line across all sparsities rather than a point at 0%: the x axis shows only the measured
    levels (e.g. 60-95%), and the question each ticket answers is "does it reach the dense
    level?". Frankle & Carbin (2019) show the unpruned network as the 100%-of-weights point of
    each curve; the line makes the same comparison at every level.
    """
    point, low, high = (float(v) for v in dense)
    if math.isfinite(low) and math.isfinite(high):
        ax.axhspan(low, high, color="0.5", alpha=BAND_ALPHA, linewidth=0)
    if math.isfinite(point):
        ax.axhline(point, color="0.25", linestyle="--", linewidth=1.2, label=DENSE_LABEL)


def winning_ticket_curves(
    series: Mapping[str, Curve],
    stem: Path,
    title: str,
    dense: tuple[float, float, float] | None = None,
) -> list[Path]:
    """Score vs sparsity with CI error bars, one series per label, and a dense reference.

    The winning-ticket figure of Frankle & Carbin (2019): each ticket method (IMP, GMP) and the
    random control (a random mask at the same sparsity) beside the dense network's level. All
    of them show the same statistic, the IQM over seeds of the per-seed score.

    Args:
        series: ``label -> (sparsities, points, lows, highs)``, each ``(L,)``; sparsities are
            fractions in ``[0, 1]`` and are shown as percentages.
        stem: Output path without suffix.
        title: Axes title.
        dense: Optional ``(point, low, high)`` of the dense network (0% sparsity), drawn as a
            dashed line labelled :data:`DENSE_LABEL` with a shaded band.

    Returns:
        ``[<stem>.png, <stem>.pdf]``.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colours = _colours(list(series))
    for index, (label, (sparsities, points, lows, highs)) in enumerate(series.items()):
        y = _as_float(points)
        # Dodge series sideways by a few points so error bars at a shared sparsity don't overlap.
        dodge = (index - (len(series) - 1) / 2) * DODGE_POINTS / 72
        container = ax.errorbar(
            _as_float(sparsities),
            y,
            yerr=_error_lengths(y, _as_float(lows), _as_float(highs)),
            color=colours[label],
            marker="o",
            markersize=5,
            linewidth=1.2,
            capsize=3,
            label=label,
        )
        _shift(container, ax.transData + ScaledTranslation(dodge, 0, fig.dpi_scale_trans))
    if dense is not None:
        _dense_reference(ax, dense)
    # Ticks at the measured levels only: 60/70/80%, not matplotlib's 63%, 65%, 68%, ...
    ax.set_xticks(sorted({float(x) for s, *_ in series.values() for x in _as_float(s)}))
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("sparsity")
    ax.set_ylabel("IQM evaluation score")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
    return _save(fig, stem)


# --------------------------------------------------------------------------------------------
# 4. small multiples
# --------------------------------------------------------------------------------------------


def small_multiples(
    panels: Mapping[str, Mapping[str, Curve]],
    stem: Path,
    title: str,
    ylabel: str,
) -> list[Path]:
    """A grid of learning-curve panels (e.g. one per target game) sharing one legend.

    Args:
        panels: ``panel title -> (label -> (steps, points, lows, highs))``. A label keeps the
            same colour in every panel.
        stem: Output path without suffix.
        title: Figure title.
        ylabel: y-axis label of the left-most panels.

    Returns:
        ``[<stem>.png, <stem>.pdf]``.
    """
    if not panels:
        raise ValueError("small_multiples needs at least one panel")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours = _colours([label for curves in panels.values() for label in curves])
    for index, (panel_title, curves) in enumerate(panels.items()):
        ax = axes.flat[index]
        _plot_curves(ax, curves, colours)
        ax.set_title(panel_title)
        if index % ncols == 0:
            ax.set_ylabel(ylabel)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    if colours:
        handles = [Line2D([], [], color=colour, linewidth=1.6) for colour in colours.values()]
        fig.legend(
            handles,
            list(colours),
            loc="outside lower center",
            ncols=min(len(colours), 5),
            frameon=False,
        )
    return _save(fig, stem)
