"""TD targets and losses as small pure functions of batch tensors.

Every target is a constant of the regression: the functions run under ``torch.no_grad()`` and
return tensors that carry no graph, whatever their inputs carry. Shapes: ``B`` is the batch size,
``A`` the number of actions; ``rewards`` and ``terminals`` are ``(B,)`` float tensors, with
``terminals`` 1.0 where the episode really ended (a time-limit truncation is not terminal, so it
still bootstraps: Pardo et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_ticket.config import LOSSES

__all__ = [
    "bootstrap_target",
    "clip_rewards_to_sign",
    "double_q_target",
    "dqv_max_v_target",
    "dqv_target",
    "td_loss",
]


def _as_batch_vector(values: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """``values`` ``(B,)`` or ``(B, 1)`` as ``(B,)``; anything else is an error.

    A ``(B, 1)`` tensor added to a ``(B,)`` one broadcasts to ``(B, B)`` without complaint, the
    classic silent bug of value-network targets: reject ambiguous shapes instead.
    """
    if values.dim() == 2 and values.shape[1] == 1:
        values = values.squeeze(1)
    if values.shape != (batch,):
        shape = tuple(values.shape)
        raise ValueError(f"{name} must have shape ({batch},) or ({batch}, 1), got {shape}")
    return values


def _check_action_values(values: torch.Tensor, batch: int, name: str) -> None:
    """Require ``values`` to be ``(B, A)``."""
    if values.dim() != 2 or values.shape[0] != batch:
        shape = tuple(values.shape)
        raise ValueError(f"{name} must have shape ({batch}, num_actions), got {shape}")


def clip_rewards_to_sign(rewards: torch.Tensor) -> torch.Tensor:
    """Rewards ``(B,)`` clipped to their sign in {-1, 0, 1} (Mnih et al. 2015).

    Clipping happens in the target only; the replay keeps raw rewards so scores stay reportable.
    """
    return torch.sign(rewards)


@torch.no_grad()
def bootstrap_target(
    rewards: torch.Tensor, terminals: torch.Tensor, gamma: float, next_values: torch.Tensor
) -> torch.Tensor:
    """One-step target ``r + gamma * (1 - d) * next_values``, all ``(B,)``, no graph."""
    next_values = _as_batch_vector(next_values, rewards.shape[0], "next_values")
    not_done = 1.0 - terminals.to(next_values.dtype)
    return (rewards + gamma * not_done * next_values).detach()


@torch.no_grad()
def double_q_target(
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
) -> torch.Tensor:
    """Double DQN target (van Hasselt et al. 2016), shape ``(B,)``.

    ``r + gamma * (1 - d) * Q_target(s', argmax_a Q_online(s', a))``: the online network selects
    the action and the target network evaluates it, which removes most of the max-operator's
    overestimation bias of plain DQN.

    Args:
        rewards: ``(B,)`` (already clipped if clipping is wanted).
        terminals: ``(B,)`` 1.0 for terminal transitions.
        gamma: Discount factor.
        next_q_online: ``(B, A)`` online Q values of ``s'``.
        next_q_target: ``(B, A)`` target-network Q values of ``s'``.
    """
    batch = rewards.shape[0]
    _check_action_values(next_q_online, batch, "next_q_online")
    _check_action_values(next_q_target, batch, "next_q_target")
    best_actions = next_q_online.argmax(dim=1, keepdim=True)
    next_values = next_q_target.gather(1, best_actions).squeeze(1)
    return bootstrap_target(rewards, terminals, gamma, next_values)


@torch.no_grad()
def dqv_target(
    rewards: torch.Tensor, terminals: torch.Tensor, gamma: float, next_v_target: torch.Tensor
) -> torch.Tensor:
    """DQV target (Sabatelli et al. 2018), shape ``(B,)``: ``r + gamma * (1 - d) * V(s')``.

    In DQV both V(s) and Q(s, a) regress to it with ``V`` the target V network; DQV-Max uses the
    same formula for its Q target with the *online* V network (detached).

    Args:
        next_v_target: ``(B,)`` or ``(B, 1)`` state values of ``s'``.
    """
    return bootstrap_target(rewards, terminals, gamma, next_v_target)


@torch.no_grad()
def dqv_max_v_target(
    rewards: torch.Tensor, terminals: torch.Tensor, gamma: float, next_q_target: torch.Tensor
) -> torch.Tensor:
    """DQV-Max's V target (Sabatelli et al. 2020), shape ``(B,)``.

    ``r + gamma * (1 - d) * max_a Q_target(s', a)`` with ``next_q_target`` ``(B, A)``.
    """
    _check_action_values(next_q_target, rewards.shape[0], "next_q_target")
    return bootstrap_target(rewards, terminals, gamma, next_q_target.amax(dim=1))


def td_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean TD loss between ``prediction`` and ``target`` (both ``(B,)``), a 0-d tensor.

    Args:
        kind: ``"huber"`` (smooth L1 with delta 1: quadratic for errors below 1, linear above, as
            the gradient clipping of Mnih et al. 2015) or ``"mse"`` (squared error).

    Raises:
        ValueError: For an unknown ``kind`` or mismatched shapes (which would broadcast).
    """
    if prediction.shape != target.shape:
        shapes = f"{tuple(prediction.shape)} vs {tuple(target.shape)}"
        raise ValueError(f"prediction and target shapes differ: {shapes}")
    if kind == "huber":
        return F.smooth_l1_loss(prediction, target, beta=1.0)
    if kind == "mse":
        return F.mse_loss(prediction, target)
    raise ValueError(f"unknown TD loss {kind!r} (one of {', '.join(LOSSES)})")
