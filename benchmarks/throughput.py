"""Throughput of the training loop against what its parts allow: one process, one config.

Usage::

    python benchmarks/throughput.py [--game pong] [--algo ddqn] [--device cpu|cuda]
        [--num-envs 4] [--steps N] [--threads T] [--repeats 3] [--quick] [--json]
        [--profile] [--overrides "key=value ..."]
        [--members K[,K...] [--batching auto|loop|vmap[,...]] [--study paper]]

MinAtar instead of Atari: ``--game breakout --overrides "env.suite=minatar agent.encoder=minatar
env.frame_stack=1"`` (the settings of ``mlproject/presets/minatar.toml`` that make it MinAtar; the
others there are schedule lengths the benchmark sets itself).

Every figure is measured on the same :class:`~sparse_ticket.config.TrainConfig` (the full-scale
protocol of ``TrainConfig()``, with a 100k replay, learning that starts after a few thousand steps,
and evaluation, checkpoints and metric flushes pushed out of the timed window). Each block is
timed ``--repeats`` times (interleaved, so slow drift of a shared machine hits every block alike);
the median is reported, with the min and max beside it. Timers are ``time.perf_counter``; on CUDA
the device is synchronised before every timer read.

The figures
-----------
``loop_steps_per_s``
    Agent steps per second (one agent step = one step of one of the ``num_envs`` envs) of exactly
    what :meth:`Runner.train` does per iteration (``Runner.iterate``: act, store, learn, periodic
    work), in its learning phase: acting epsilon-greedily with epsilon already at ``eps_end``
    (the value of most of a run; it is printed), one ``batch_size`` update per ``train_freq`` agent
    steps, target syncs as they fall due. Warm-up (replay fill past ``learning_starts``, a few
    updates) is not timed.
``env_steps_per_s``
    Agent steps per second of a second vector env built the same way (``make_env``, the same
    ``num_envs``), stepped with random actions and no agent: the emulators plus the Python
    episode bookkeeping of :class:`~sparse_ticket.envs.EpisodicVecEnv`.
``updates_per_s``
    ``agent.update(batch)`` calls per second on batches sampled beforehand from the filled replay
    (sampling is not included; a separate agent of the same config is used so the loop's agent is
    left as training would leave it).
``replay_sample_ms``
    Mean milliseconds of one ``replay.sample(batch_size)``. The replay holds only the warm-up's
    few thousand transitions, which fit in the CPU caches better than a full 1M buffer would, so
    read this as a lower bound for a late-run sample.
``act_ms``
    Mean milliseconds of one ``agent.act(obs, eps_end, rng)`` on the ``num_envs`` observations
    (the Q-network forward pass on the greedy rows, i.e. on nearly every vector step).
``limit_steps_per_s``
    ``1 / (1 / env_steps_per_s + (1 / train_freq) / updates_per_s)``: the rate of a loop that did
    nothing but step the env and pay for its updates (with ``train_freq = 4``:
    ``1 / (1/env + 0.25/update)``).
``ratio_to_limit``
    ``loop_steps_per_s / limit_steps_per_s``. Near 1: the loop costs what the env and the updates
    cost, and only a faster env or a faster update will speed it up. Below 1: ``1 - ratio`` is the
    share of loop time spent elsewhere: acting, replay writes and sampling, Python bookkeeping,
    and interference (torch's intra-op threads and the emulator threads competing for the same
    cores). Above 1 is not possible for a serial CPU loop (it means the figures are noisy: run
    again on a quiet machine); on CUDA an update is asynchronous and overlaps the host work that
    follows it until the next acting forward pass synchronises, so it may slightly exceed 1.
``accounted_steps_per_s``, ``ratio_to_accounted``
    The same limit with acting and sampling added,
    ``1 / (1/env + act_s/num_envs + (sample_s + 1/update) / train_freq)``, and the loop's ratio
    to it: what is left below 1 is replay writes, the loop's own Python and interference.
``replay_bytes_per_transition``
    ``FrameReplay.bytes_per_transition`` of a 1M-transition buffer of this env (built but never
    written: ``np.zeros`` maps its pages lazily), with what 1M transitions take in GB.

Figures whose repeats differ by more than a factor 1.2 are listed under ``noisy``: on a shared
machine (other jobs, or torch's OpenMP threads descheduled mid-kernel) rerun before quoting them.

``--json`` prints one JSON object (the figures above plus the setup and every repeat's value);
``--profile`` adds one cProfile'd loop run after the measurements (top functions to stderr).

Population figures
------------------
``--members 1,2,4,8,16`` measures :class:`~sparse_ticket.population_runner.PopulationRunner`
instead:
K runners of the benchmark's config (seeds ``--seed`` .. ``--seed + K - 1``, each with a
:class:`~sparse_ticket.runner.NullSink` and a temporary checkpoint directory of its own, each with
a ``REPLAY_CAPACITY`` replay) trained in lock-step by one population, for every K given and every
``--batching`` given (``loop,vmap`` compares the two in one invocation; ``auto`` resolves to vmap
on CUDA, loop on CPU, and a batching that resolves to one already listed is measured once). The
single-run figures above are then **not** measured (nor ``--masked`` and ``--profile``): a
population run is long enough on its own; run the benchmark again without ``--members`` for them.

Every population is built and warmed up first, as the single run is (``begin()`` on each member,
then ``PopulationRunner.iterate`` until every member is past ``learning_starts`` with an update
done, then ``warmup_updates`` more updates per member); then each repeat times one run of every
(K, batching) in turn, so drift of a shared machine hits them alike. All populations are alive at
once (K members each hold their envs, emulator threads and replay; on CUDA a device replay mirror
each while it fits, see ``run.replay_device``). A timed run is ``ceil(steps / num_envs)``
population iterations, i.e. the single-run loop's agent steps *per member*.

``per_member_steps_per_s``
    Agent steps per second of one member (every member advances the same steps per iteration):
    member steps of the timed run / its wall time, the median over ``--repeats`` (min and max
    beside it).
``aggregate_steps_per_s``
    ``K * per_member_steps_per_s``: agent steps per second of all K members together.
``speedup_vs_k1``
    ``aggregate_steps_per_s / aggregate_steps_per_s`` at ``K = 1`` of the same batching in the
    same invocation (``null`` in JSON, blank in the table, when 1 is not among ``--members``).
``batching``, ``replay``
    The batching the population resolved (``loop`` or ``vmap``) and the members' replay class
    (``DeviceFrameReplay`` or ``FrameReplay``; a mix is listed with counts).
``study_device_hours``
    Device-hours of the ``--study`` preset (default ``paper``: about 44.4G agent steps) at this
    aggregate rate: ``study_agent_steps / aggregate_steps_per_s / 3600``, where
    ``study_agent_steps`` is the total the study's dry run reports (``mlproject.main.load``
    and ``mlproject.study.dag_size``). It assumes every training run of the study trains in a
    full population of K at this rate (this benchmark's game and algorithm stand for all of
    them). A :class:`PopulationRunner` needs K runs of one config but their seeds (or masks and
    initial weights) at a time: the ``paper`` study has 10 seeds per condition, so read K > 10
    as what packing conditions of one shape together would give.

``--json`` then prints the setup, ``study`` (name, agent steps, training runs) and
``population``: one object per (K, batching) with the figures above, ``members``,
``requested_batching``, every repeat's per-member value and ``noisy`` (max/min > 1.2).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparse_ticket.agents import Agent, make_agent
from sparse_ticket.agents.population import BATCHING, resolve_batching
from sparse_ticket.clock import linear_schedule
from sparse_ticket.config import (
    ALGOS,
    ConfigError,
    TrainConfig,
    apply_overrides,
    parse_overrides,
    resolve_key,
    validate,
)
from sparse_ticket.envs import EpisodicVecEnv, make_env
from sparse_ticket.population_runner import PopulationRunner
from sparse_ticket.replay import FrameReplay, ReplayBatch
from sparse_ticket.runner import Runner, derive_seed

TOTAL_STEPS = 10**12
"""``run.total_steps`` of the benchmark: far beyond anything it runs, so the loop never ends."""

REPLAY_CAPACITY = 100_000
"""Replay of the benchmarked runner (the full 1M is only constructed, for its size)."""

FULL_REPLAY = 1_000_000
"""Capacity whose memory cost is reported."""

PRESAMPLED_BATCHES = 16
"""Distinct batches cycled through by the update block."""

NOISY = 1.2
"""A figure whose slowest and fastest repeats differ by more than this factor is flagged."""

ENV_STEPS_PER_LOOP_STEP = 4
"""The env block steps this many times as many agent steps as a loop run (it is much faster)."""


@dataclass(frozen=True)
class Budget:
    """How much work each timed block does per repeat (fixed counts, not fixed wall time)."""

    loop_steps: int
    """Agent steps of one timed loop run (rounded up to a multiple of ``num_envs``)."""
    learning_starts: int
    """Agent steps of replay fill before the first update (``run.learning_starts``)."""
    warmup_updates: int
    """Untimed loop updates after learning starts, before the first timed run."""
    samples: int
    """``replay.sample`` calls of one timed sampling run."""
    acts: int
    """``agent.act`` calls of one timed acting run."""


# About 60-90 s on a 2-core CPU at ~25-40 updates/s: 2 x 3 x 300 updates (loop and update
# blocks) dominate; --quick (2 x 3 x 60 updates) about 15 s.
DEFAULT_BUDGET = Budget(
    loop_steps=1200, learning_starts=4000, warmup_updates=20, samples=500, acts=200
)
QUICK_BUDGET = Budget(loop_steps=240, learning_starts=1600, warmup_updates=8, samples=200, acts=100)


@dataclass
class Figure:
    """The repeated measurements of one figure."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)


# ------------------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training-loop throughput against the env and update limits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--game",
        default="pong",
        help="game (snake_case): ALE, or MinAtar with env.suite=minatar in --overrides",
    )
    parser.add_argument("--algo", default="ddqn", choices=ALGOS)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--num-envs", type=int, default=4, help="parallel training envs")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"agent steps per timed loop run (default {DEFAULT_BUDGET.loop_steps}, "
        f"--quick {QUICK_BUDGET.loop_steps}); the update block does as many updates as the loop",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per block (median)")
    parser.add_argument(
        "--masked",
        type=float,
        default=0.8,
        help="also time the loop under a static encoder mask of this sparsity, interleaved with "
        "the dense loop in the same run (0 disables)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smaller budget (~15 s on 2 CPUs)")
    parser.add_argument(
        "--overrides", default="", help='extra config overrides, e.g. "target_update=10000"'
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one more loop run (top costs to stderr)"
    )
    parser.add_argument(
        "--members",
        default="",
        help="population sizes K to measure instead of the single run, e.g. 1,2,4,8,16 "
        "(see 'Population figures' in the module docstring)",
    )
    parser.add_argument(
        "--batching",
        default="auto",
        help=f"population batching, one or more of {','.join(BATCHING)} (comma-separated; "
        "several are interleaved in one run); with --members only",
    )
    parser.add_argument(
        "--study",
        default="paper",
        help="study preset whose device-hours are reported at each population's rate",
    )
    args = parser.parse_args(argv)
    try:
        args.members = parse_members(args.members)
        args.batching = parse_batching(args.batching)
    except ValueError as error:
        parser.error(str(error))
    if args.members and args.profile:
        parser.error("--profile profiles the single-run loop: leave out --members")
    if not args.members and args.batching != ["auto"]:
        parser.error("--batching is for populations: give --members too")
    for name in ("num_envs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def parse_members(text: str) -> list[int]:
    """Population sizes ``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, each once; ``""`` -> ``[]``)."""
    if not text.strip():
        return []
    sizes = []
    for word in text.split(","):
        try:
            size = int(word)
        except ValueError:
            raise ValueError(f"--members: {word.strip()!r} is not an integer") from None
        if size < 1:
            raise ValueError(f"--members: sizes must be >= 1, got {size}")
        sizes.append(size)
    return sorted(set(sizes))


def parse_batching(text: str) -> list[str]:
    """Requested batchings ``"loop,vmap"`` -> ``["loop", "vmap"]`` (in order, each once)."""
    choices = [word.strip() for word in text.split(",")]
    for choice in choices:
        if choice not in BATCHING:
            raise ValueError(f"--batching: {choice!r} is not one of {', '.join(BATCHING)}")
    return list(dict.fromkeys(choices))


def check_device(name: str) -> torch.device:
    """The torch device ``name``; SystemExit with one line if it cannot be used here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(
            f"error: device {name!r} is not a torch device (cpu, cuda, cuda:N)"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"error: device {name!r}: only cpu and cuda are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"error: device {name}: no CUDA device is usable "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise SystemExit(
                f"error: device {name}: only {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def build_config(args: argparse.Namespace, budget: Budget) -> TrainConfig:
    """The benchmarked config: full-scale defaults, an early learning phase, nothing periodic.

    Epsilon decays over ``learning_starts`` steps, so it is at ``eps_end`` from the first timed
    step (unless ``--overrides`` sets ``eps_decay_fraction``; the epsilon used is reported).
    """
    config = TrainConfig()
    apply_overrides(
        config,
        {
            "game": args.game,
            "seed": args.seed,
            "agent.algo": args.algo,
            "env.num_envs": args.num_envs,
            "run.device": args.device,
            "run.torch_threads": args.threads,
            "run.total_steps": TOTAL_STEPS,
            "run.learning_starts": budget.learning_starts,
            "run.replay_capacity": REPLAY_CAPACITY,
            "run.eval_every": 0,
            "run.checkpoint_every": 0,
            "run.log_every": TOTAL_STEPS,
            # The runner always builds an evaluation env; keep it to one emulator.
            "run.eval_envs": 1,
            "run.eval_episodes": 1,
        },
    )
    user_keys = {resolve_key(config, key) for key, _ in parse_overrides(args.overrides)}
    apply_overrides(config, args.overrides)
    if "run.eps_decay_fraction" not in user_keys:
        decay = max(config.run.learning_starts, 1) / config.run.total_steps
        config.run.eps_decay_fraction = min(decay, 1.0)
    validate(config)
    if config.run.total_steps <= config.run.learning_starts:
        raise ConfigError("run.total_steps must exceed run.learning_starts for the benchmark")
    return config


# ------------------------------------------------------------------------------------ timing


def synchroniser(device: torch.device) -> Callable[[], None]:
    """A call that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def warm_up(iterate: Callable[[], None], runners: list[Runner], budget: Budget) -> None:
    """Call ``iterate`` until every runner learns, then ``warmup_updates`` more updates each."""
    while any(r.step < r.config.run.learning_starts or r.updates == 0 for r in runners):
        iterate()
    targets = [runner.updates + budget.warmup_updates for runner in runners]
    while any(runner.updates < target for runner, target in zip(runners, targets, strict=True)):
        iterate()
    for runner in runners:
        runner.flush_metrics()


def start_training(runner: Runner, budget: Budget) -> None:
    """Do what ``Runner.train`` does before its loop, then fill the replay and warm up."""
    runner.obs = runner.env.reset()
    every_env = np.ones(runner.env.num_envs, dtype=bool)
    runner.replay.add_reset(every_env, runner.env.latest_frame(runner.obs))
    runner.start_interval()
    warm_up(runner.iterate, [runner], budget)


def start_population(population: PopulationRunner, budget: Budget) -> None:
    """Do what ``PopulationRunner.train`` does before its loop, then fill and warm up alike."""
    for runner in population.runners:
        runner.begin()
    warm_up(population.iterate, population.runners, budget)


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


def versions_text(versions: dict[str, str]) -> str:
    """The setup table's ``versions`` line."""
    return (
        f"python {versions['python']}, torch {versions['torch']}, "
        f"ale-py {versions['ale_py']}, numpy {versions['numpy']}"
    )


def aligned(setup: list[tuple[str, str]]) -> list[str]:
    """``key  value`` lines with the keys padded to one width."""
    width = max(len(key) for key, _ in setup)
    return [f"{key:<{width}}  {value}" for key, value in setup]


def time_env(env: EpisodicVecEnv, steps: int, rng: np.random.Generator) -> float:
    """Agent steps per second of ``env`` stepped with pre-drawn uniformly random actions."""
    iterations = math.ceil(steps / env.num_envs)
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
    """Mean milliseconds of one epsilon-greedy ``agent.act`` on a batch of observations."""
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


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def version_info() -> dict[str, str]:
    """The versions that decide the figures."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ale_py": package_version("ale-py"),
        "numpy": np.__version__,
        "sparse_ticket": package_version("sparse-ticket"),
    }


def env_threads(config: TrainConfig) -> int:
    """Emulator threads of the training env (as :class:`AtariBackend` chooses them)."""
    return config.env.env_threads or min(config.env.num_envs, os.cpu_count() or 1)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr (C++ libraries included), so --json stays clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ------------------------------------------------------------------------------- benchmark


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every figure; returns the JSON-ready result."""
    wall_start = time.perf_counter()
    budget = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    steps = args.steps or budget.loop_steps
    config = build_config(args, budget)
    device = check_device(config.run.device)
    run, agent_config = config.run, config.agent
    sync = synchroniser(device)

    with tempfile.TemporaryDirectory(prefix="throughput-") as checkpoint_dir:
        try:
            runner = Runner(config, checkpoint_dir, progress=False)
            masked = masked_runner(config, args.masked, checkpoint_dir)
        except ValueError as error:  # an unknown game or algorithm
            raise ConfigError(str(error)) from None
        env = make_env(config.game, config.env, derive_seed(config.seed, "benchmark-env"))
        try:
            start_training(runner, budget)
            if masked is not None:
                start_training(masked, budget)
            decay_steps = int(run.eps_decay_fraction * run.total_steps)
            epsilon = linear_schedule(runner.step, run.eps_start, run.eps_end, decay_steps)
            update_agent = make_agent(
                agent_config, runner.env.obs_shape, runner.env.num_actions, device
            )
            batches = presample(runner.replay, agent_config.batch_size, PRESAMPLED_BATCHES)
            update_count = max(math.ceil(steps / run.train_freq), 10)
            # Untimed warm-up of the blocks that have not run yet (allocators, kernels, caches).
            env.reset()
            time_env(env, 4 * env.num_envs, np.random.default_rng(0))
            time_updates(update_agent, batches, 3, sync)
            act_rng = np.random.default_rng(derive_seed(config.seed, "benchmark-act"))
            env_rng = np.random.default_rng(derive_seed(config.seed, "benchmark-actions"))

            figures: dict[str, Figure] = {
                key: Figure([])
                for key in (
                    "loop_steps_per_s",
                    "env_steps_per_s",
                    "updates_per_s",
                    "replay_sample_ms",
                    "act_ms",
                )
            }
            if masked is not None:
                figures["masked_loop_steps_per_s"] = Figure([])
            for _ in range(args.repeats):
                figures["loop_steps_per_s"].values.append(time_loop(runner, steps, sync))
                if masked is not None:
                    figures["masked_loop_steps_per_s"].values.append(time_loop(masked, steps, sync))
                figures["env_steps_per_s"].values.append(
                    time_env(env, ENV_STEPS_PER_LOOP_STEP * steps, env_rng)
                )
                figures["updates_per_s"].values.append(
                    time_updates(update_agent, batches, update_count, sync)
                )
                figures["replay_sample_ms"].values.append(
                    time_sampling(runner.replay, agent_config.batch_size, budget.samples)
                )
                figures["act_ms"].values.append(
                    time_acting(runner.agent, runner.obs, epsilon, budget.acts, act_rng, sync)
                )
            epsilon_end = runner.last_epsilon
            profile = profile_loop(runner, steps) if args.profile else None
            bytes_per_transition, bytes_source = full_replay_bytes(runner)
            replay_fill = len(runner.replay)
        finally:
            env.close()
            runner.close()
            if masked is not None:
                masked.close()

    median = {key: figure.median for key, figure in figures.items()}
    env_rate, update_rate = median["env_steps_per_s"], median["updates_per_s"]
    limit = 1.0 / (1.0 / env_rate + (1.0 / run.train_freq) / update_rate)
    accounted = 1.0 / (
        1.0 / env_rate
        + median["act_ms"] * 1e-3 / config.env.num_envs
        + (median["replay_sample_ms"] * 1e-3 + 1.0 / update_rate) / run.train_freq
    )
    result: dict[str, Any] = {
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
        "game": config.game,
        "algo": agent_config.algo,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "env_threads": env_threads(config),
        "num_envs": config.env.num_envs,
        "train_freq": run.train_freq,
        "batch_size": agent_config.batch_size,
        "epsilon": epsilon,
        "epsilon_at_end": epsilon_end,
        "replay_fill": replay_fill,
        "replay_capacity": run.replay_capacity,
        "loop_steps_per_run": math.ceil(steps / config.env.num_envs) * config.env.num_envs,
        "updates_per_run": update_count,
        "repeats": args.repeats,
        "quick": args.quick,
        "values": {key: figure.values for key, figure in figures.items()},
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": version_info(),
        "noisy": [
            key
            for key, figure in figures.items()
            if max(figure.values) > NOISY * min(figure.values)
        ],
        "wall_s": time.perf_counter() - wall_start,
    }
    if masked is not None:
        result["masked_sparsity"] = args.masked
        result["masked_loop_steps_per_s"] = median["masked_loop_steps_per_s"]
        # Per-repeat pairs were timed back to back: the median of their ratios is the fairest.
        pairs = zip(
            figures["masked_loop_steps_per_s"].values,
            figures["loop_steps_per_s"].values,
            strict=True,
        )
        result["masking_overhead"] = 1.0 - float(np.median([m / d for m, d in pairs]))
    if profile is not None:
        result["profile"] = profile
    return result


def masked_runner(config: TrainConfig, sparsity: float, directory: str) -> Runner | None:
    """The same run under a static random encoder mask (None when ``sparsity`` is 0)."""
    if sparsity <= 0:
        return None
    masked_config = copy.deepcopy(config)
    apply_overrides(masked_config, {"sparsity.regime": "static", "sparsity.sparsity": sparsity})
    return Runner(masked_config, Path(directory) / "masked", progress=False)


# ------------------------------------------------------------------------------ population


@dataclass
class PopulationCell:
    """One measured population: K members under one batching."""

    members: int
    requested: str
    """The ``--batching`` value that asked for it (``auto`` or the resolved name)."""
    population: PopulationRunner
    per_member: Figure


def build_population(
    config: TrainConfig, members: int, batching: str, directory: Path
) -> PopulationRunner:
    """``members`` runners of ``config`` (seeds ``seed`` .. ``seed + members - 1``) as one."""
    runners: list[Runner] = []
    try:
        for index in range(members):
            member = copy.deepcopy(config)
            apply_overrides(member, {"seed": config.seed + index})
            runners.append(Runner(member, directory / f"member-{index}", progress=False))
        return PopulationRunner(runners, batching)
    except BaseException:
        for runner in runners:
            runner.close()
        raise


def replay_kind(population: PopulationRunner) -> str:
    """The members' replay class name (with counts if they differ)."""
    names = [type(runner.replay).__name__ for runner in population.runners]
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    if len(counts) == 1:
        return names[0]
    return " + ".join(f"{count} {name}" for name, count in counts.items())


def study_size(name: str) -> dict[str, Any]:
    """The study preset's total agent steps and training runs, as its dry run counts them."""
    # Imported here: mlflow comes with the driver and costs a few seconds.
    from mlproject.errors import InputError
    from mlproject.main import StudyRequest, load
    from mlproject.study import dag_size

    try:
        spec, nodes = load(StudyRequest(preset=name))
    except InputError as error:
        raise ConfigError(f"--study {name}: {error}") from None
    sizes = dag_size(nodes)
    return {
        "name": spec.name,
        "agent_steps": sizes["total"].agent_steps,
        "training_runs": sizes["total"].runs - sizes["evaluate"].runs,
    }


def run_population_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (K, batching) population; returns the JSON-ready result."""
    wall_start = time.perf_counter()
    budget = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    steps = args.steps or budget.loop_steps
    config = build_config(args, budget)
    device = check_device(config.run.device)
    sync = synchroniser(device)
    study = study_size(args.study)  # first: a bad --study fails before minutes of warm-up
    requested: dict[str, str] = {}  # resolved batching -> the --batching value asking for it
    for name in args.batching:
        requested.setdefault(resolve_batching(name, device), name)

    cells: list[PopulationCell] = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as root:
        try:
            for size in args.members:
                for batching, asked in requested.items():
                    directory = Path(root) / f"{batching}-{size}"
                    try:
                        population = build_population(config, size, batching, directory)
                    except ValueError as error:  # an unknown game or algorithm
                        raise ConfigError(str(error)) from None
                    cells.append(PopulationCell(size, asked, population, Figure([])))
            for cell in cells:
                start_population(cell.population, budget)
            first = cells[0].population.runners[0]
            epsilon = first.epsilon()
            for _ in range(args.repeats):
                for cell in cells:
                    cell.per_member.values.append(time_loop(cell.population, steps, sync))
            epsilon_end = first.epsilon()
            replay_fill = len(first.replay)
            replays = [replay_kind(cell.population) for cell in cells]
            resolved = [cell.population.population.batching for cell in cells]
        finally:
            for cell in cells:
                cell.population.close()

    k1 = {
        batching: cell.members * cell.per_member.median
        for cell, batching in zip(cells, resolved, strict=True)
        if cell.members == 1
    }
    rows = []
    for cell, batching, replay in zip(cells, resolved, replays, strict=True):
        per_member = cell.per_member.median
        aggregate = cell.members * per_member
        values = cell.per_member.values
        rows.append(
            {
                "members": cell.members,
                "batching": batching,
                "requested_batching": cell.requested,
                "replay": replay,
                "per_member_steps_per_s": per_member,
                "aggregate_steps_per_s": aggregate,
                "speedup_vs_k1": aggregate / k1[batching] if batching in k1 else None,
                "study_device_hours": study["agent_steps"] / aggregate / 3600,
                "values": values,
                "noisy": max(values) > NOISY * min(values),
            }
        )
    return {
        "population": rows,
        "study": study,
        "device_hours_unit": "GPU-hours" if device.type == "cuda" else "CPU-hours",
        "members": args.members,
        "batchings": list(requested),
        "game": config.game,
        "algo": config.agent.algo,
        "suite": config.env.suite,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "env_threads": env_threads(config),
        "num_envs": config.env.num_envs,
        "train_freq": config.run.train_freq,
        "batch_size": config.agent.batch_size,
        "epsilon": epsilon,
        "epsilon_at_end": epsilon_end,
        "replay_fill": replay_fill,
        "replay_capacity": config.run.replay_capacity,
        "steps_per_member_per_run": math.ceil(steps / config.env.num_envs) * config.env.num_envs,
        "repeats": args.repeats,
        "quick": args.quick,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": version_info(),
        "wall_s": time.perf_counter() - wall_start,
    }


# ---------------------------------------------------------------------------------- output


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report: the setup, then an aligned table of the figures."""
    versions = result["versions"]
    device = result["device"] + (f" ({result['gpu']})" if result["gpu"] else "")
    eps = result["epsilon"]
    eps_text = (
        f"{eps:g}"
        if eps == result["epsilon_at_end"]
        else (f"{eps:g} -> {result['epsilon_at_end']:g}")
    )
    setup = [
        ("game / algo", f"{result['game']} / {result['algo']}"),
        ("device", device),
        ("cpu", f"{result['cpu_model']} ({result['cpu_count']} logical CPUs)"),
        ("threads", f"torch {result['threads']}, emulator {result['env_threads']}"),
        ("num_envs", str(result["num_envs"])),
        (
            "loop",
            f"epsilon {eps_text}, 1 update of {result['batch_size']} per "
            f"{result['train_freq']} agent steps, replay {result['replay_fill']:,} / "
            f"{result['replay_capacity']:,}",
        ),
        (
            "budget",
            f"{result['repeats']} x ({result['loop_steps_per_run']:,} loop steps, "
            f"{result['updates_per_run']:,} updates), {result['wall_s']:.0f} s in all",
        ),
        ("versions", versions_text(versions)),
    ]
    lines = aligned(setup)

    values = result["values"]
    rows: list[tuple[str, str, str, str, str]] = []

    def add(key: str, unit: str, digits: int = 1) -> None:
        def text(x: float) -> str:
            return f"{x:,.{digits}f}"

        if key in values:
            low, high = text(min(values[key])), text(max(values[key]))
        else:
            low = high = ""
        rows.append((key, text(result[key]), low, high, unit))

    add("loop_steps_per_s", "agent steps/s")
    add("env_steps_per_s", "agent steps/s")
    add("updates_per_s", "updates/s")
    add("replay_sample_ms", f"ms per sample({result['batch_size']})", 3)
    add("act_ms", f"ms per act({result['num_envs']} obs)", 3)
    add("limit_steps_per_s", "agent steps/s: env + updates only")
    add("ratio_to_limit", "loop / limit", 3)
    add("accounted_steps_per_s", "agent steps/s: + acting and sampling")
    add("ratio_to_accounted", "loop / accounted", 3)
    add("replay_bytes_per_transition", f"bytes ({result['replay_gb_per_million']:.2f} GB per 1M)")
    if "masked_loop_steps_per_s" in result:
        add(
            "masked_loop_steps_per_s", f"agent steps/s, static {result['masked_sparsity']:.0%} mask"
        )
        add("masking_overhead", "1 - masked/dense loop (median of paired repeats)", 3)
    header = ("figure", "median", "min", "max", "unit")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines.append("")
    for row in [header, *rows]:
        name, *numbers, unit = row
        cells = [name.ljust(widths[0])]
        cells += [cell.rjust(widths[i + 1]) for i, cell in enumerate(numbers)]
        lines.append("  ".join([*cells, unit]).rstrip())
    if result["noisy"]:
        lines.append("")
        lines.append(
            f"noisy: {', '.join(result['noisy'])} (max/min > {NOISY:g}); "
            "rerun on a quiet machine before quoting these"
        )
    return "\n".join(lines)


def format_population_report(result: dict[str, Any]) -> str:
    """The human-readable population report: the setup, then one row per (K, batching)."""
    versions = result["versions"]
    device = result["device"] + (f" ({result['gpu']})" if result["gpu"] else "")
    eps = result["epsilon"]
    eps_text = (
        f"{eps:g}"
        if eps == result["epsilon_at_end"]
        else f"{eps:g} -> {result['epsilon_at_end']:g}"
    )
    study, unit = result["study"], result["device_hours_unit"]
    setup = [
        ("game / algo", f"{result['game']} ({result['suite']}) / {result['algo']}"),
        ("device", device),
        ("cpu", f"{result['cpu_model']} ({result['cpu_count']} logical CPUs)"),
        ("threads", f"torch {result['threads']}, emulator {result['env_threads']} per member"),
        ("num_envs", f"{result['num_envs']} per member"),
        (
            "loop",
            f"epsilon {eps_text}, 1 update of {result['batch_size']} per "
            f"{result['train_freq']} agent steps per member, replay {result['replay_fill']:,} / "
            f"{result['replay_capacity']:,} per member",
        ),
        (
            "budget",
            f"{result['repeats']} x {result['steps_per_member_per_run']:,} agent steps per member "
            f"per population (interleaved), {result['wall_s']:.0f} s in all",
        ),
        ("versions", versions_text(versions)),
    ]
    lines = aligned(setup)

    header = (
        "K",
        "batching",
        "replay",
        "per-member",
        "min",
        "max",
        "aggregate",
        "speedup_vs_k1",
        f"{study['name']} {unit}",
    )
    rows = [header]
    for row in result["population"]:
        speedup = row["speedup_vs_k1"]
        rows.append(
            (
                str(row["members"]),
                row["batching"],
                row["replay"],
                f"{row['per_member_steps_per_s']:,.1f}",
                f"{min(row['values']):,.1f}",
                f"{max(row['values']):,.1f}",
                f"{row['aggregate_steps_per_s']:,.1f}",
                "" if speedup is None else f"{speedup:.2f}",
                f"{row['study_device_hours']:,.0f}",
            )
        )
    left = {1, 2}  # batching and replay are words
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.append("")
    for row in rows:
        cells = [
            cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "",
        "per-member, min, max: agent steps/s of one member (median, min and max of the repeats);",
        "aggregate = K x per-member; speedup_vs_k1 = aggregate / aggregate at K=1, same batching",
        f"{unit}: the {study['name']} study's {study['agent_steps']:,} agent steps "
        f"({study['training_runs']:,} training runs) / aggregate / 3600,",
        "  assuming every run trains in a full population of K at this rate",
    ]
    noisy = [f"K={r['members']} {r['batching']}" for r in result["population"] if r["noisy"]]
    if noisy:
        lines.append("")
        lines.append(
            f"noisy: {', '.join(noisy)} (max/min > {NOISY:g}); "
            "rerun on a quiet machine before quoting these"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benchmark = run_population_benchmark if args.members else run_benchmark
    try:
        if args.json:
            with stdout_to_stderr():
                result = benchmark(args)
        else:
            result = benchmark(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    profile = result.pop("profile", None)
    if profile is not None:
        print(profile, file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    elif args.members:
        print(format_population_report(result))
    else:
        print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
