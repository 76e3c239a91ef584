"""``benchmarks/precision_curves.py``: bf16 seed sets against fp32 ones, on hand-made records."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_benchmark_script


@pytest.fixture(scope="module")
def curves():
    return load_benchmark_script("precision_curves")


def write_run(root, tag: str, seed: int, score: float, steps: int = 500_000) -> None:
    """A run whose every episode (one per 1000 steps) scores ``score``: its curve is flat."""
    folder = root / tag / "ddqn" / "breakout"
    folder.mkdir(parents=True, exist_ok=True)
    episodes = [[step, score] for step in range(1000, steps + 1, 1000)]
    record = {"config": {"seed": seed}, "episodes": episodes, "step": steps, "finished": True}
    (folder / f"s{seed}.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("bf16_scores", "agrees"),
    [
        ((11.0, 13.0), True),  # mean 12 in [10 - 2, 12 + 2]
        ((14.5, 15.5), False),  # mean 15 > 14
        ((7.0, 9.5), True),  # spread 2.5 (bf16's, the larger): mean 8.25 in [7.5, 14.5]
    ],
)
def test_the_verdict_is_the_bf16_mean_area_within_the_widened_fp32_range(
    curves, tmp_path, bf16_scores, agrees
):
    for seed, score in enumerate((10.0, 12.0)):
        write_run(tmp_path, "fp32", seed, score)
    for seed, score in enumerate(bf16_scores):
        write_run(tmp_path, "bf16", seed, score)
    args = curves.parse_args(
        ["--results", str(tmp_path), "--fp32-tag", "fp32", "--bf16-tag", "bf16"]
    )
    result = curves.compare_game(args, "breakout")
    assert result["sides"]["fp32"]["areas"] == {0: 10.0, 1: 12.0}
    assert result["sides"]["bf16"]["at"][250_000] == list(bf16_scores)
    assert result["agrees"] is agrees
    assert ("| yes |" if agrees else "| no |") in curves.table(args, [result])


def test_runs_short_of_the_budget_are_left_out(curves, tmp_path):
    write_run(tmp_path, "fp32", 0, 10.0)
    write_run(tmp_path, "bf16", 0, 10.0, steps=300_000)
    args = curves.parse_args(
        ["--results", str(tmp_path), "--fp32-tag", "fp32", "--bf16-tag", "bf16"]
    )
    result = curves.compare_game(args, "breakout")
    assert result["sides"]["bf16"]["seeds"] == [] and result["agrees"] is None
