"""Tests for ``sparse_ticket_mlflow.figures``: every figure writes readable PNG and PDF files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from sparse_ticket_mlflow import figures

GAMES = ["Breakout", "Pong", "SpaceInvaders"]


def _curve(scale: float = 1.0, n: int = 20, nan_ci: bool = False) -> figures.Curve:
    """A rising curve over 0..2M steps with a +-10% band, optionally with NaN bounds."""
    steps = np.linspace(0, 2_000_000, n)
    points = scale * np.log1p(steps / 1e5)
    lows, highs = 0.9 * points, 1.1 * points
    if nan_ci:
        lows[::3] = np.nan
        highs[1::4] = np.nan
    return steps, points, lows, highs


def _grid_cells() -> dict[tuple[str, str], figures.GridCell]:
    """A 3x3 grid with one missing cell, one NaN CI and a mix of signs/significance."""
    cells: dict[tuple[str, str], figures.GridCell] = {}
    rng = np.random.default_rng(0)
    for source in GAMES:
        for target in GAMES:
            point = float(rng.normal(0, 0.3))
            low, high = point - 0.2, point + 0.2
            cells[(source, target)] = (point, low, high, low > 0 or high < 0)
    del cells[("Pong", "Breakout")]
    cells[("Breakout", "SpaceInvaders")] = (0.1, float("nan"), float("nan"), False)
    return cells


def _assert_written(paths: list[Path], stem: Path) -> None:
    """Both files exist at ``<stem>.png`` / ``<stem>.pdf`` with the right magic bytes."""
    assert paths == [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    png, pdf = paths
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert pdf.read_bytes()[:4] == b"%PDF"


def test_transfer_grid_writes_non_blank_files(tmp_path: Path) -> None:
    stem = tmp_path / "sub" / "grid_0.80"
    paths = figures.transfer_grid(_grid_cells(), GAMES, stem, "transfer at 80% sparsity")
    _assert_written(paths, stem)
    image = imread(paths[0])
    assert float(np.var(image)) > 0


def test_transfer_grid_all_missing_or_zero(tmp_path: Path) -> None:
    stem = tmp_path / "empty_grid"
    _assert_written(figures.transfer_grid({}, GAMES, stem, "nothing"), stem)
    zeros = {(s, t): (0.0, 0.0, 0.0, False) for s in GAMES for t in GAMES}
    _assert_written(figures.transfer_grid(zeros, GAMES, stem, "zeros"), stem)


def test_transfer_grid_cell_text() -> None:
    assert figures._cell_text(None) == "n/a"
    assert figures._cell_text((0.123, -0.05, 0.3, False)) == "0.12\n[-0.05, 0.30]"
    assert figures._cell_text((0.5, 0.1, 0.9, True)) == "0.50*\n[0.10, 0.90]"
    assert figures._cell_text((0.5, float("nan"), 0.9, False)) == "0.50\n[n/a, 0.90]"


def test_transfer_grid_needs_games(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        figures.transfer_grid({}, [], tmp_path / "x", "t")


def test_learning_curves(tmp_path: Path) -> None:
    stem = tmp_path / "curves"
    curves = {"dense": _curve(1.0), "ticket": _curve(0.8, nan_ci=True), "random": _curve(0.5)}
    _assert_written(figures.learning_curves(curves, stem, "Pong"), stem)


def test_learning_curves_empty(tmp_path: Path) -> None:
    stem = tmp_path / "none"
    _assert_written(figures.learning_curves({}, stem, "nothing", ylabel="return"), stem)


def test_winning_ticket_curves(tmp_path: Path) -> None:
    stem = tmp_path / "tickets"
    sparsities = np.array([0.5, 0.8, 0.9, 0.95])
    points = np.array([1.0, 0.95, 0.8, np.nan])
    lows = np.array([0.9, np.nan, 0.85, np.nan])  # 0.85 > 0.8: clipped, not an error
    highs = points + 0.1
    series = {
        "IMP": (sparsities, points, lows, highs),
        "random": (sparsities, points / 2, lows / 2, highs / 2),
    }
    paths = figures.winning_ticket_curves(series, stem, "Breakout", dense=(1.0, 0.9, np.nan))
    _assert_written(paths, stem)
    _assert_written(figures.winning_ticket_curves(series, stem, "no dense"), stem)


def test_dense_reference_is_a_labelled_line_with_its_ci_band() -> None:
    # The dense level (0% sparsity) beside the tickets: a dashed line at the IQM, a band over
    # its CI; no band where a CI bound is NaN.
    ax = Figure().add_subplot()
    figures._dense_reference(ax, (3.0, 2.0, 4.5))
    (line,) = ax.lines
    assert line.get_label() == figures.DENSE_LABEL == "dense (0% sparsity)"
    assert list(line.get_ydata()) == [3.0, 3.0] and line.get_linestyle() == "--"
    (band,) = ax.patches
    ys = ax.transData.inverted().transform(band.get_verts())[:, 1]  # data y of the corners
    assert (float(ys.min()), float(ys.max())) == pytest.approx((2.0, 4.5))
    other = Figure().add_subplot()
    figures._dense_reference(other, (3.0, float("nan"), 4.5))
    assert len(other.lines) == 1 and len(other.patches) == 0


def test_small_multiples(tmp_path: Path) -> None:
    stem = tmp_path / "multi"
    panels = {
        "Breakout": {"dense": _curve(1.0), "ticket": _curve(0.7)},
        "Pong": {"ticket": _curve(0.9, nan_ci=True), "random": _curve(0.4)},
        "SpaceInvaders": {},
        "Seaquest": {"dense": _curve(1.2)},
    }
    _assert_written(figures.small_multiples(panels, stem, "transfer targets", "IQM score"), stem)
    with pytest.raises(ValueError):
        figures.small_multiples({}, stem, "t", "y")


def test_colours_stable_per_label() -> None:
    colours = figures._colours(["a", "b", "a", "c"])
    assert list(colours) == ["a", "b", "c"]
    assert len(set(colours.values())) == 3
