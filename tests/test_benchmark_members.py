"""The population figures of ``benchmarks/throughput/`` (``--members``), on a tiny MinAtar run."""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "throughput"
"""The benchmark package, run as a folder (its ``__main__.py``)."""
MINATAR = "env.suite=minatar agent.encoder=minatar env.frame_stack=1"
LEARNING_STARTS = 400
"""Below --quick's replay fill, to keep the test short (well above the batch of 32)."""


@functools.cache
def load_benchmark():
    """The benchmark package (``parse_args`` and the report formatters are at its top)."""
    return importlib.import_module("benchmarks.throughput")


def run_script(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    """``python benchmarks/throughput ARGS``, its output captured as text."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def population_result() -> dict:
    """``--quick --members 1,2 --batching loop,vmap --json`` on MinAtar Breakout (a few seconds)."""
    result = run_script(
        [
            "--game",
            "breakout",
            "--overrides",
            f"{MINATAR} run.learning_starts={LEARNING_STARTS}",
            "--quick",
            "--steps",
            "40",
            "--repeats",
            "2",
            "--members",
            "1,2",
            "--batching",
            "loop,vmap",
            "--json",
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # stdout is the JSON object alone


def test_population_figures_per_k(population_result):
    rows = population_result["population"]
    assert [(row["members"], row["batching"]) for row in rows] == [
        (1, "loop"),
        (1, "vmap"),
        (2, "loop"),
        (2, "vmap"),
    ]
    k1 = {row["batching"]: row["aggregate_steps_per_s"] for row in rows if row["members"] == 1}
    study = population_result["study"]
    assert study["name"] == "paper"
    assert study["agent_steps"] > 0 and study["training_runs"] > 0
    for row in rows:
        assert row["replay"] == "FrameReplay"  # a CPU run samples on the host
        assert len(row["values"]) == 2 and all(value > 0 for value in row["values"])
        assert row["per_member_steps_per_s"] > 0
        assert row["aggregate_steps_per_s"] == pytest.approx(
            row["members"] * row["per_member_steps_per_s"], rel=1e-9
        )
        assert row["speedup_vs_k1"] == pytest.approx(
            row["aggregate_steps_per_s"] / k1[row["batching"]], rel=1e-9
        )
        assert row["study_device_hours"] == pytest.approx(
            study["agent_steps"] / row["aggregate_steps_per_s"] / 3600, rel=1e-9
        )
    assert population_result["device_hours_unit"] == "CPU-hours"
    assert population_result["suite"] == "minatar"
    assert population_result["steps_per_member_per_run"] == 40
    # Warmed up as the single run is: the replay filled past learning_starts.
    assert population_result["replay_fill"] >= LEARNING_STARTS
    assert population_result["epsilon"] == population_result["epsilon_at_end"] == 0.01
    assert "loop_steps_per_s" not in population_result  # the single-run figures are skipped


def test_population_report_has_one_row_per_population(population_result):
    text = load_benchmark().format_population_report(population_result)
    assert "paper CPU-hours" in text
    assert f"{population_result['study']['agent_steps']:,} agent steps" in text
    table = [line.split() for line in text.splitlines() if line[:1] in ("1", "2")]
    assert [(cells[0], cells[1]) for cells in table] == [
        ("1", "loop"),
        ("1", "vmap"),
        ("2", "loop"),
        ("2", "vmap"),
    ]
    hours = [float(cells[-1].replace(",", "")) for cells in table]
    expected = [row["study_device_hours"] for row in population_result["population"]]
    assert hours == pytest.approx(expected, abs=0.5)


def test_members_and_batching_are_parsed_and_checked():
    benchmark = load_benchmark()
    args = benchmark.parse_args(["--members", "4,1,2,2", "--batching", "auto,vmap"])
    assert args.members == [1, 2, 4]
    assert args.batching == ["auto", "vmap"]
    assert benchmark.parse_args([]).members == []
    for bad in (
        ["--members", "0"],
        ["--members", "1,x"],
        ["--members", "1", "--batching", "grouped"],
        ["--members", "1", "--profile"],
        ["--batching", "vmap"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.parse_args(bad)
        assert exit_info.value.code == 2


def test_unknown_study_is_one_line_error():
    result = run_script(["--members", "1", "--study", "no-such-study"], timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --study no-such-study")
    assert len(result.stderr.strip().splitlines()) == 1
