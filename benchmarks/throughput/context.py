"""What a result was measured on: the run's shape, the machine and the versions.

Both benchmarks (single run and population) put these fields into their JSON, in the same order,
so that figures from different invocations can be compared with what decides them beside them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.throughput.build import Setup
from sparse_ticket.config import TrainConfig


@dataclass(frozen=True)
class LoopState:
    """Where the timed loop ran: read off the (first) runner around the timed repeats."""

    epsilon: float
    """Epsilon at the first timed step."""
    epsilon_at_end: float
    """Epsilon at the last timed step (equal to ``epsilon`` once the decay is over)."""
    replay_fill: int
    """Transitions in the (first) runner's replay after the timed repeats."""


def run_fields(setup: Setup, state: LoopState, *, suite: bool = False) -> dict[str, Any]:
    """The run's shape: game, algorithm, device, threads, envs, updates, epsilon and replay
    (``suite`` adds the env suite after the algorithm)."""
    config, device = setup.config, setup.device
    fields: dict[str, Any] = {"game": config.game, "algo": config.agent.algo}
    if suite:
        fields["suite"] = config.env.suite
    return fields | {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "env_threads": env_threads(config),
        "num_envs": config.env.num_envs,
        "train_freq": config.run.train_freq,
        "batch_size": config.agent.batch_size,
        "precision": config.agent.precision,
        "epsilon": state.epsilon,
        "epsilon_at_end": state.epsilon_at_end,
        "replay_fill": state.replay_fill,
        "replay_capacity": config.run.replay_capacity,
    }


def host_fields() -> dict[str, Any]:
    """The machine and the versions."""
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "versions": version_info()}


# ------------------------------------------------------------------------------------ machine


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
