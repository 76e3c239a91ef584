"""Value-based agents: Double DQN, DQV and DQV-Max, and the pure TD-target functions they use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sparse_ticket.agents.base import Agent
from sparse_ticket.agents.dqn import DDQN
from sparse_ticket.agents.dqv import DQV, DQVMax

if TYPE_CHECKING:
    from sparse_ticket.config import AgentConfig

__all__ = ["AGENTS", "DDQN", "DQV", "Agent", "DQVMax", "make_agent"]

AGENTS: dict[str, type[Agent]] = {cls.algo: cls for cls in (DDQN, DQV, DQVMax)}
"""Agent classes by ``AgentConfig.algo`` name."""


def make_agent(
    config: AgentConfig,
    obs_shape: tuple[int, ...],
    num_actions: int,
    device: torch.device | str = "cpu",
    init_seed: int | None = None,
) -> Agent:
    """The agent named by ``config.algo`` (``ddqn``, ``dqv`` or ``dqv-max``).

    Each role's network draws its weights from ``derive_seed(init_seed, role)``; without an
    ``init_seed`` one is drawn from torch's global generator (seed it first to reproduce).

    Raises:
        ValueError: For an unknown algorithm, encoder or loss.
    """
    if config.algo not in AGENTS:
        raise ValueError(f"unknown algo {config.algo!r} (one of {', '.join(AGENTS)})")
    return AGENTS[config.algo](config, obs_shape, num_actions, device, init_seed)
