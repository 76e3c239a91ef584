"""The statistic of ``benchmarks/learning.py``: Young & Tian's 100-episode moving average of the
training return, per seed, and its IQM over seeds, on hand-made episode records."""

from __future__ import annotations

import math

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
