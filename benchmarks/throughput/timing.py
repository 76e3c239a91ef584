"""The timed blocks: each runs one fixed amount of work and returns one rate or one duration.

Timers are ``time.perf_counter``; a block that runs device work calls ``sync`` (see
:func:`.build.synchroniser`) before each timer read, so queued CUDA kernels are paid for by the
block that queued them. Bookkeeping that is not part of the work (flushing buffered metrics) stays
outside the timers.
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sparse_ticket.agents import Agent
from sparse_ticket.config import ConfigError
from sparse_ticket.envs import EpisodicVecEnv
from sparse_ticket.population_runner import PopulationRunner
from sparse_ticket.replay import FrameReplay, ReplayBatch
from sparse_ticket.runner import Runner

NOISY = 1.2
"""A figure whose slowest and fastest repeats differ by more than this factor is flagged."""


@dataclass
class Figure:
    """The repeated measurements of one figure."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def noisy(self) -> bool:
        """Whether the repeats differ by more than the factor :data:`NOISY`."""
        return max(self.values) > NOISY * min(self.values)


def whole_vector_steps(steps: int, num_envs: int) -> int:
    """``steps`` agent steps rounded up to whole steps of a vector env of ``num_envs``."""
    return math.ceil(steps / num_envs) * num_envs


# -------------------------------------------------------------------------------------- loop


def time_loop(trainer: Runner | PopulationRunner, steps: int, sync: Callable[[], None]) -> float:
    """Agent steps per second (of one member, for a population) of ``trainer.iterate()`` over
    ``steps`` (rounded up to whole vector steps) agent steps per member."""
    runners = trainer.runners if isinstance(trainer, PopulationRunner) else [trainer]
    first = runners[0]
    iterations = math.ceil(steps / first.env.num_envs)
    if trainer.step + iterations * first.env.num_envs >= first.config.run.total_steps:
        raise ConfigError("run.total_steps is too small: the benchmark would end training")
    start_step = trainer.step
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.iterate()
    sync()
    elapsed = time.perf_counter() - start
    # Outside the timer: hand the buffered update stats to the (null) sink so they stay bounded.
    for runner in runners:
        runner.flush_metrics()
    return (trainer.step - start_step) / elapsed


def profile_loop(runner: Runner, steps: int, top: int = 25) -> str:
    """cProfile one loop run of ``steps`` agent steps; the top functions by own time."""
    profiler = cProfile.Profile()
    iterations = math.ceil(steps / runner.env.num_envs)
    profiler.enable()
    for _ in range(iterations):
        runner.iterate()
    profiler.disable()
    runner.flush_metrics()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


# ------------------------------------------------------------------------------------- parts


def time_env(env: EpisodicVecEnv, steps: int, rng: np.random.Generator) -> float:
    """Agent steps per second of ``env`` stepped with pre-drawn uniformly random actions."""
    iterations = math.ceil(steps / env.num_envs)
    # (iterations, num_envs): drawn before the timer, one row per vector step.
    actions = rng.integers(env.num_actions, size=(iterations, env.num_envs), dtype=np.int64)
    start = time.perf_counter()
    for row in actions:
        env.step(row)
    elapsed = time.perf_counter() - start
    return iterations * env.num_envs / elapsed


def time_updates(
    agent: Agent, batches: list[ReplayBatch], count: int, sync: Callable[[], None]
) -> float:
    """``agent.update`` calls per second over ``count`` calls cycling through ``batches``."""
    sync()
    start = time.perf_counter()
    for i in range(count):
        agent.update(batches[i % len(batches)])
    sync()
    return count / (time.perf_counter() - start)


def time_sampling(replay: FrameReplay, batch_size: int, count: int) -> float:
    """Mean milliseconds of one ``replay.sample(batch_size)``."""
    start = time.perf_counter()
    for _ in range(count):
        replay.sample(batch_size)
    return (time.perf_counter() - start) / count * 1e3


def time_acting(
    agent: Agent,
    obs: np.ndarray,
    epsilon: float,
    count: int,
    rng: np.random.Generator,
    sync: Callable[[], None],
) -> float:
    """Mean milliseconds of one epsilon-greedy ``agent.act`` on ``obs``, a batch of observations
    ``(num_envs, *obs_shape)``."""
    sync()
    start = time.perf_counter()
    for _ in range(count):
        agent.act(obs, epsilon, rng)
    sync()
    return (time.perf_counter() - start) / count * 1e3


def presample(replay: FrameReplay, batch_size: int, count: int) -> list[ReplayBatch]:
    """``count`` independent batches (sample() returns views of a buffer it reuses: copy)."""
    return [
        ReplayBatch(*(tensor.clone() for tensor in replay.sample(batch_size))) for _ in range(count)
    ]
