"""``benchmarks/throughput --ab REF``: the interleaved A/B against a git ref, on tiny MinAtar."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT
from tests.test_benchmark_members import LEARNING_STARTS, MINATAR, load_benchmark, run_script


def worktrees() -> list[str]:
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in listing.splitlines() if line.startswith("worktree ")]


@pytest.mark.integration
def test_ab_runs_every_side_in_turn_and_cleans_up():
    before = worktrees()
    result = run_script(
        [
            "--ab",
            "HEAD",
            "--modes",
            "fp32,bf16",
            "--game",
            "breakout",
            "--overrides",
            f"{MINATAR} run.learning_starts={LEARNING_STARTS}",
            "--quick",
            "--steps",
            "40",
            "--repeats",
            "2",
            "--json",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ab = json.loads(result.stdout)
    assert list(ab["sides"]) == ["baseline", "fp32", "bf16"]
    for side in ab["sides"].values():
        assert len(side["loop_steps_per_s_all"]) == len(side["updates_per_s_all"]) == 2
        assert side["loop_steps_per_s_median"] > 0
    assert ab["sides"]["baseline"]["loop_steps_per_s_ratio"] == 1.0
    bf16 = ab["sides"]["bf16"]
    assert bf16["updates_per_s_ratio"] == pytest.approx(
        bf16["updates_per_s_median"] / ab["sides"]["baseline"]["updates_per_s_median"]
    )
    # The order alternates (A B1 B2, then B2 B1 A): the progress lines say so.
    order = [
        line.split(":")[0].split()[-1]
        for line in result.stderr.splitlines()
        if line.startswith("repeat ")
    ]
    assert order == ["baseline", "fp32", "bf16", "bf16", "fp32", "baseline"]
    assert worktrees() == before  # the baseline's worktree is gone


def test_a_bad_ref_is_one_line_and_status_2():
    result = run_script(["--ab", "no-such-ref-xyz", "--quick"], timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --ab 'no-such-ref-xyz'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_modes_are_parsed_and_checked():
    benchmark = load_benchmark()
    assert benchmark.parse_args(["--modes", "bf16,fp32,bf16"]).modes == ["bf16", "fp32"]
    for bad in (
        ["--modes", "fp16"],
        ["--ab", "HEAD", "--members", "1"],
        ["--ab", "HEAD", "--profile"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.parse_args(bad)
        assert exit_info.value.code == 2
