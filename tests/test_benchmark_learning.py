"""The statistic of ``benchmarks/learning.py``: Young & Tian's 100-episode moving average of the
training return, per seed, and its IQM over seeds, on hand-made episode records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark_script


@pytest.fixture(scope="module")
def learning():
    return load_benchmark_script("learning")


def test_moving_average_takes_the_last_100_episodes_ended_by_the_step(learning):
    # 150 episodes, episode i ends at step 10 * (i + 1) with score i.
    episodes = np.array([[10.0 * (i + 1), float(i)] for i in range(150)])
    assert math.isnan(learning.moving_average_at(episodes, 9))  # none has ended yet
    assert learning.moving_average_at(episodes, 30) == 1.0  # scores 0, 1, 2
    # By step 1500 all 150 have ended: the last 100 are scores 50..149, mean 99.5.
    assert learning.moving_average_at(episodes, 1500) == 99.5
    # By step 1205: 120 episodes (0..119), the last 100 are 20..119, mean 69.5.
    assert learning.moving_average_at(episodes, 1205) == 69.5


def test_summary_is_the_iqm_over_seeds_that_reached_the_step(learning):
    def run(score: float, step: int) -> dict:
        return {"episodes": [[5, score]], "step": step}

    # Four seeds at 1, 2, 3, 10: IQM = mean of the middle two = 2.5; a fifth run stopped at
    # step 50 has not reached step 100 and does not count.
    runs = [run(1.0, 100), run(2.0, 100), run(3.0, 100), run(10.0, 100), run(99.0, 50)]
    row = learning.summary_row(runs, 100)
    assert row == {"seeds": 4, "iqm": 2.5, "min": 1.0, "max": 10.0}
    assert learning.summary_row(runs, 200)["seeds"] == 0


def test_the_report_puts_each_game_between_its_random_and_published_scores(learning, tmp_path):
    # Breakout, published 9.5 at 1M; a cached random score of 0.5. Two seeds whose last 100
    # episodes by 0.3M average 5.0 and 6.0 (IQM of two = 5.5) and by 1M 9.0 and 10.0 (9.5).
    folder = tmp_path / "minatar" / "ddqn" / "breakout"
    folder.mkdir(parents=True)
    for seed, (early, late) in enumerate([(5.0, 9.0), (6.0, 10.0)]):
        episodes = [[300_000, early]] * 100 + [[1_000_000, late]] * 100
        record = {"episodes": episodes, "step": 1_000_000, "seconds": 1000.0, "finished": True}
        (folder / f"s{seed}.json").write_text(json.dumps(record))
    (tmp_path / "minatar" / "random").mkdir()
    (tmp_path / "minatar" / "random" / "breakout.json").write_text('{"mean": 0.5}')
    args = learning.parse_args(["--results", str(tmp_path), "--games", "breakout"])

    table = learning.report(args, "minatar", ["ddqn"], ["breakout"])
    lines = table.splitlines()
    header, _, row = ([c.strip() for c in line.strip("|").split("|")] for line in lines)
    cell = dict(zip(header, row, strict=True))
    assert cell["random"] == "0.50"
    assert cell["0.3M"] == "5.5 [5.0, 6.0] (n=2)"
    assert cell["1M"] == "9.5 [9.0, 10.0] (n=2)"
    assert cell["ratio 1M"] == "1.00" and cell["reaches"] == "yes"
    # (5.5 - 0.5) / (9.5 - 0.5) = 0.56 of the way from random to published
    assert cell["learned at 0.3M"] == "0.56"
    assert cell["steps/s"] == "1,000"  # 2M steps in 2000 s


def test_the_random_score_is_a_fixed_seed_measurement_cached_beside_the_results(learning, tmp_path):
    args = learning.parse_args(["--results", str(tmp_path)])
    first = learning.random_score(args, "breakout")
    cached = json.loads((tmp_path / "minatar" / "random" / "breakout.json").read_text())
    assert cached == {"episodes": 100, "mean": first}
    (tmp_path / "minatar" / "random" / "breakout.json").unlink()
    assert learning.random_score(args, "breakout") == first  # the same episodes again
    assert 0.0 <= first < 2.0  # a random Breakout paddle rarely hits the ball


def test_a_run_records_its_training_episodes(tmp_path):
    """A real (tiny) MinAtar run through the script: the episode record is what it trained."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "learning.py"
    args = [sys.executable, str(script), "--games", "breakout", "--seeds", "0"]
    args += ["--steps", "2000", "--checkpoints", "2000", "--results", str(tmp_path / "results")]
    args += ["--work", str(tmp_path / "work"), "--tag", "tiny"]
    for override in ("run.learning_starts=200", "run.checkpoint_every=1000", "run.eval_every=0"):
        args += ["--set", override]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "results/tiny/ddqn/breakout/s0.json").read_text())
    assert record["finished"] and record["step"] == 2000
    steps = [step for step, _ in record["episodes"]]
    # Breakout episodes last tens of steps under a near-random policy: many end in 2000 steps.
    assert len(steps) > 10 and steps == sorted(steps) and 0 < steps[-1] <= 2000
