"""What the benchmark measures, built: its config, budgets, runners and populations, warmed up.

Everything here is untimed. The config is the full-scale protocol with a small replay and an early
learning phase (:func:`build_config`); the runners are brought to where a training run spends most
of its time, learning with epsilon at ``eps_end`` (:func:`start_training`,
:func:`start_population`), before :mod:`.timing` starts a timer.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparse_ticket.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    parse_overrides,
    resolve_key,
    validate,
)
from sparse_ticket.population_runner import PopulationRunner
from sparse_ticket.runner import Runner

TOTAL_STEPS = 10**12
"""``run.total_steps`` of the benchmark: far beyond anything it runs, so the loop never ends."""

REPLAY_CAPACITY = 100_000
"""Replay of the benchmarked runner (the full 1M is only constructed, for its size)."""


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


@dataclass(frozen=True)
class Setup:
    """What both benchmarks (single run and population) start from."""

    budget: Budget
    steps: int
    """Agent steps of one timed loop run (per member, for a population), before rounding."""
    config: TrainConfig
    device: torch.device
    sync: Callable[[], None]
    """Waits for the device's queued work (a no-op on CPU); called before every timer read."""


# ------------------------------------------------------------------------------------ config


def prepare(args: argparse.Namespace) -> Setup:
    """The budget, config and device of this invocation; a bad device or config exits first."""
    budget = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    config = build_config(args, budget)
    device = check_device(config.run.device)
    return Setup(budget, args.steps or budget.loop_steps, config, device, synchroniser(device))


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


def synchroniser(device: torch.device) -> Callable[[], None]:
    """A call that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


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


@contextmanager
def unknown_names_as_config_errors() -> Iterator[None]:
    """Turn the ValueError of an unknown game or algorithm (raised on construction) into the
    ConfigError that the command line reports in one line."""
    try:
        yield
    except ValueError as error:
        raise ConfigError(str(error)) from None


# ----------------------------------------------------------------------------------- runners


def masked_runner(config: TrainConfig, sparsity: float, directory: str) -> Runner | None:
    """The same run under a static random encoder mask (None when ``sparsity`` is 0)."""
    if sparsity <= 0:
        return None
    masked_config = copy.deepcopy(config)
    apply_overrides(masked_config, {"sparsity.regime": "static", "sparsity.sparsity": sparsity})
    return Runner(masked_config, Path(directory) / "masked", progress=False)


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


# ------------------------------------------------------------------------------------ warm-up


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
