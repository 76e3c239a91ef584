"""The single-run figures: one runner's loop against its env, updates, acting and sampling.

:func:`run_benchmark` builds the runner (and, with ``--masked``, a masked twin), an env-only vector
env and an update-only agent, warms every block up, then times the blocks ``--repeats`` times,
interleaved, and derives the limits from the medians (see the package docstring for each figure).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.throughput.build import (
    Setup,
    masked_runner,
    prepare,
    start_training,
    unknown_names_as_config_errors,
)
from benchmarks.throughput.context import LoopState, host_fields, run_fields
from benchmarks.throughput.timing import (
    Figure,
    presample,
    profile_loop,
    time_acting,
    time_env,
    time_loop,
    time_sampling,
    time_updates,
    whole_vector_steps,
)
from sparse_ticket.agents import Agent, make_agent
from sparse_ticket.clock import linear_schedule
from sparse_ticket.config import TrainConfig
from sparse_ticket.envs import EpisodicVecEnv, make_env
from sparse_ticket.replay import FrameReplay, ReplayBatch
from sparse_ticket.runner import Runner
from sparse_ticket.seeding import derive_seed

FULL_REPLAY = 1_000_000
"""Capacity whose memory cost is reported."""

PRESAMPLED_BATCHES = 16
"""Distinct batches cycled through by the update block."""

ENV_STEPS_PER_LOOP_STEP = 4
"""The env block steps this many times as many agent steps as a loop run (it is much faster)."""

BLOCK_FIGURES = (
    "loop_steps_per_s",
    "env_steps_per_s",
    "updates_per_s",
    "replay_sample_ms",
    "act_ms",
)
"""The figures timed in every repeat (``masked_loop_steps_per_s`` too with ``--masked``)."""


@dataclass
class Blocks:
    """What the timed blocks run on, built and warmed up."""

    runner: Runner
    masked: Runner | None
    env: EpisodicVecEnv
    """The env-only block's vector env (the runner's own env is left to the loop)."""
    update_agent: Agent
    """The update-only block's agent, so the loop's agent is left as training would leave it."""
    batches: list[ReplayBatch]
    update_count: int
    """``agent.update`` calls of one timed update run."""
    epsilon: float
    act_rng: np.random.Generator
    env_rng: np.random.Generator


@dataclass
class Measurement:
    """Everything :func:`run_benchmark` measured, before the figures are derived."""

    figures: dict[str, Figure]
    state: LoopState
    update_count: int
    replay_bytes: tuple[float, str]
    """Bytes per transition of a full replay, and where the figure came from."""
    profile: str | None


# ------------------------------------------------------------------------------------ blocks


def build_blocks(
    setup: Setup, runner: Runner, masked: Runner | None, env: EpisodicVecEnv
) -> Blocks:
    """Warm the loop(s) up, build the other blocks and run each once untimed."""
    budget, config, sync = setup.budget, setup.config, setup.sync
    run, agent_config = config.run, config.agent
    start_training(runner, budget)
    if masked is not None:
        start_training(masked, budget)
    decay_steps = int(run.eps_decay_fraction * run.total_steps)
    epsilon = linear_schedule(runner.step, run.eps_start, run.eps_end, decay_steps)
    update_agent = make_agent(
        agent_config, runner.env.obs_shape, runner.env.num_actions, setup.device
    )
    batches = presample(runner.replay, agent_config.batch_size, PRESAMPLED_BATCHES)
    update_count = max(math.ceil(setup.steps / run.train_freq), 10)
    # Untimed warm-up of the blocks that have not run yet (allocators, kernels, caches).
    env.reset()
    time_env(env, 4 * env.num_envs, np.random.default_rng(0))
    time_updates(update_agent, batches, 3, sync)
    act_rng = np.random.default_rng(derive_seed(config.seed, "benchmark-act"))
    env_rng = np.random.default_rng(derive_seed(config.seed, "benchmark-actions"))
    return Blocks(
        runner, masked, env, update_agent, batches, update_count, epsilon, act_rng, env_rng
    )


def time_repeat(blocks: Blocks, figures: dict[str, Figure], setup: Setup) -> None:
    """Time every block once, in a fixed order, appending one value to each figure."""
    steps, sync, budget = setup.steps, setup.sync, setup.budget
    runner, batch_size = blocks.runner, setup.config.agent.batch_size
    figures["loop_steps_per_s"].values.append(time_loop(runner, steps, sync))
    if blocks.masked is not None:
        figures["masked_loop_steps_per_s"].values.append(time_loop(blocks.masked, steps, sync))
    figures["env_steps_per_s"].values.append(
        time_env(blocks.env, ENV_STEPS_PER_LOOP_STEP * steps, blocks.env_rng)
    )
    figures["updates_per_s"].values.append(
        time_updates(blocks.update_agent, blocks.batches, blocks.update_count, sync)
    )
    figures["replay_sample_ms"].values.append(
        time_sampling(runner.replay, batch_size, budget.samples)
    )
    figures["act_ms"].values.append(
        time_acting(runner.agent, runner.obs, blocks.epsilon, budget.acts, blocks.act_rng, sync)
    )


def full_replay_bytes(runner: Runner) -> tuple[float, str]:
    """Bytes per transition of a 1M buffer of this env, and where the figure came from."""
    replay = runner.replay
    try:
        full = FrameReplay(FULL_REPLAY, replay.num_envs, replay.frame_shape, replay.stack, seed=0)
    except MemoryError:
        # A host that refuses to map 7 GB even lazily: the per-transition cost is the same
        # formula, so the benchmark's own buffer gives it (up to rounding of per-env strips).
        return replay.bytes_per_transition, f"{replay.capacity:,}-transition buffer"
    value = full.bytes_per_transition
    del full
    return value, f"{FULL_REPLAY:,}-transition buffer (never written)"


# --------------------------------------------------------------------------------- benchmark


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every figure; returns the JSON-ready result."""
    wall_start = time.perf_counter()
    setup = prepare(args)
    config = setup.config
    with tempfile.TemporaryDirectory(prefix="throughput-") as checkpoint_dir:
        with unknown_names_as_config_errors():
            runner = Runner(config, checkpoint_dir, progress=False)
            masked = masked_runner(config, args.masked, checkpoint_dir)
        env = make_env(config.game, config.env, derive_seed(config.seed, "benchmark-env"))
        try:
            measurement = measure(args, setup, build_blocks(setup, runner, masked, env))
        finally:
            env.close()
            runner.close()
            if masked is not None:
                masked.close()
    return single_result(args, setup, measurement, wall_start)


def measure(args: argparse.Namespace, setup: Setup, blocks: Blocks) -> Measurement:
    """Time the blocks ``--repeats`` times, then profile and size the replay if asked."""
    figures = {key: Figure([]) for key in BLOCK_FIGURES}
    if blocks.masked is not None:
        figures["masked_loop_steps_per_s"] = Figure([])
    for _ in range(args.repeats):
        time_repeat(blocks, figures, setup)
    runner = blocks.runner
    epsilon_end = runner.last_epsilon
    profile = profile_loop(runner, setup.steps) if args.profile else None
    replay_bytes = full_replay_bytes(runner)
    state = LoopState(blocks.epsilon, epsilon_end, len(runner.replay))
    return Measurement(figures, state, blocks.update_count, replay_bytes, profile)


def derived_figures(
    median: dict[str, float], config: TrainConfig, replay_bytes: tuple[float, str]
) -> dict[str, Any]:
    """The medians with the limits they imply and the replay's memory cost."""
    train_freq = config.run.train_freq
    env_rate, update_rate = median["env_steps_per_s"], median["updates_per_s"]
    limit = 1.0 / (1.0 / env_rate + (1.0 / train_freq) / update_rate)
    accounted = 1.0 / (
        1.0 / env_rate
        + median["act_ms"] * 1e-3 / config.env.num_envs
        + (median["replay_sample_ms"] * 1e-3 + 1.0 / update_rate) / train_freq
    )
    bytes_per_transition, bytes_source = replay_bytes
    return {
        "loop_steps_per_s": median["loop_steps_per_s"],
        "env_steps_per_s": env_rate,
        "updates_per_s": update_rate,
        "limit_steps_per_s": limit,
        "ratio_to_limit": median["loop_steps_per_s"] / limit,
        "replay_bytes_per_transition": bytes_per_transition,
        "replay_gb_per_million": bytes_per_transition * 1e6 / 1e9,
        "replay_bytes_source": bytes_source,
        "replay_sample_ms": median["replay_sample_ms"],
        "act_ms": median["act_ms"],
        "accounted_steps_per_s": accounted,
        "ratio_to_accounted": median["loop_steps_per_s"] / accounted,
    }


def single_result(
    args: argparse.Namespace, setup: Setup, measurement: Measurement, wall_start: float
) -> dict[str, Any]:
    """The JSON-ready result: the figures, the setup, every repeat's value."""
    figures = measurement.figures
    median = {key: figure.median for key, figure in figures.items()}
    result: dict[str, Any] = {
        **derived_figures(median, setup.config, measurement.replay_bytes),
        **run_fields(setup, measurement.state),
        "loop_steps_per_run": whole_vector_steps(setup.steps, setup.config.env.num_envs),
        "updates_per_run": measurement.update_count,
        "repeats": args.repeats,
        "quick": args.quick,
        "values": {key: figure.values for key, figure in figures.items()},
        **host_fields(),
        "noisy": [key for key, figure in figures.items() if figure.noisy],
        "wall_s": time.perf_counter() - wall_start,
    }
    if "masked_loop_steps_per_s" in figures:
        result["masked_sparsity"] = args.masked
        result["masked_loop_steps_per_s"] = median["masked_loop_steps_per_s"]
        # Per-repeat pairs were timed back to back: the median of their ratios is the fairest.
        pairs = zip(
            figures["masked_loop_steps_per_s"].values,
            figures["loop_steps_per_s"].values,
            strict=True,
        )
        result["masking_overhead"] = 1.0 - float(np.median([m / d for m, d in pairs]))
    if measurement.profile is not None:
        result["profile"] = measurement.profile
    return result
