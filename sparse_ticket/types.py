"""The types the library's modules pass each other, named once (as Stable-Baselines3's
``type_aliases.py``). Only torch and numpy below this module: every room may import it.

Shapes: ``B`` batch size, ``F = stack * C`` stacked channels (``C = 1`` for 2-d Atari frames),
``H, W`` the observation's sides.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, TypeAlias

import numpy as np
import torch

Metric: TypeAlias = tuple[str, float, int]
"""``(key, value, agent step)``: one metric point, as runs hand them to a ``MetricSink``."""

Mask: TypeAlias = dict[str, torch.Tensor]
"""Parameter name -> bool tensor of the parameter's shape (``True`` = weight kept)."""

Weights: TypeAlias = dict[str, dict[str, torch.Tensor]]
"""``{role: state_dict}`` of an agent's online networks (``"q"``, ``"v"``): init, ticket, final."""

DeviceBatch: TypeAlias = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(obs, actions, rewards, next_obs, terminals)`` on the agent's device, rewards as used."""

Interval: TypeAlias = tuple[float, float, float]
"""``(point, low, high)``: an estimate and its confidence interval."""

CurveInterval: TypeAlias = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(points, lows, highs)``, each ``(num_steps,)``: a curve and its pointwise interval."""


class ReplayBatch(NamedTuple):
    """A batch of ``B`` transitions; ``F = stack * C`` stacked channels (``C = 1`` for 2-d frames).

    ``obs`` and ``next_obs`` are views of a scratch buffer owned by the replay: they stay valid
    only until the next :meth:`FrameReplay.sample` call with the same batch size (copy them to
    keep them).
    """

    obs: torch.Tensor
    """``(B, F, H, W)`` uint8 (Atari: ``(B, 4, 84, 84)``; MinAtar: ``(B, 10, 10, 10)``)."""
    actions: torch.Tensor
    """``(B,)`` int64, the action taken from ``obs``."""
    rewards: torch.Tensor
    """``(B,)`` float32, the raw (unclipped) reward."""
    next_obs: torch.Tensor
    """``(B, F, H, W)`` uint8, the observation after the action."""
    terminals: torch.Tensor
    """``(B,)`` float32, 1.0 where ``next_obs`` is terminal (a truncation is *not* terminal)."""


class AgentRoles(Protocol):
    """What an agent's parts (its masks, its checkpoint bundle) see of it: its networks by role.

    :class:`~sparse_ticket.agents.base.Agent` is one; the parts take this instead of the agent
    class, so they do not import the module that imports them.
    """

    algo: str
    device: torch.device

    def networks(self) -> dict[str, torch.nn.Module]:
        """The online networks by role (``"q"``, ``"v"``)."""

    def target_networks(self) -> dict[str, torch.nn.Module]:
        """The target networks by role (a subset of the online roles)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per online network, keyed like :meth:`networks`."""

    def named_parameters(self) -> dict[str, torch.Tensor]:
        """Every online parameter by flat name ``"{role}.{param}"``."""


__all__ = [
    "AgentRoles",
    "CurveInterval",
    "DeviceBatch",
    "Interval",
    "Mask",
    "Metric",
    "ReplayBatch",
    "Weights",
]
