"""TD targets and losses against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from sparse_ticket.agents.targets import (
    clip_rewards_to_sign,
    double_q_target,
    dqv_max_v_target,
    dqv_target,
    td_loss,
)

GAMMA = 0.5
REWARDS = torch.tensor([1.0, -2.0, 0.5])
TERMINALS = torch.tensor([0.0, 1.0, 0.0])
# Row 0: online argmax is action 1, target argmax is action 0 -> Double DQN must read target[0, 1].
# Row 1: terminal, no bootstrap. Row 2: both argmax action 2.
NEXT_Q_ONLINE = torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
NEXT_Q_TARGET = torch.tensor([[10.0, 2.0, 4.0], [1.0, 7.0, 3.0], [6.0, 0.0, 8.0]])


def test_clip_rewards_to_sign() -> None:
    rewards = torch.tensor([-3.0, 0.0, 0.5])
    assert torch.equal(clip_rewards_to_sign(rewards), torch.tensor([-1.0, 0.0, 1.0]))


def test_double_q_target_by_hand() -> None:
    target = double_q_target(REWARDS, TERMINALS, GAMMA, NEXT_Q_ONLINE, NEXT_Q_TARGET)
    # 1 + 0.5 * Q_target(s', 1) = 1 + 0.5 * 2 (not 0.5 * 10, the target net's own max);
    # terminal: -2; 0.5 + 0.5 * 8.
    assert torch.allclose(target, torch.tensor([2.0, -2.0, 4.5]))


def test_dqv_target_by_hand_accepts_column_values() -> None:
    next_v = torch.tensor([4.0, 100.0, -2.0])
    expected = torch.tensor([3.0, -2.0, -0.5])
    assert torch.allclose(dqv_target(REWARDS, TERMINALS, GAMMA, next_v), expected)
    # A (B, 1) V-head output must not broadcast to (B, B).
    column = dqv_target(REWARDS, TERMINALS, GAMMA, next_v.unsqueeze(1))
    assert column.shape == (3,)
    assert torch.allclose(column, expected)


def test_dqv_max_v_target_by_hand() -> None:
    target = dqv_max_v_target(REWARDS, TERMINALS, GAMMA, NEXT_Q_TARGET)
    assert torch.allclose(target, torch.tensor([6.0, -2.0, 4.5]))


def test_targets_carry_no_graph() -> None:
    next_q = NEXT_Q_TARGET.clone().requires_grad_(True)
    next_v = torch.ones(3, requires_grad=True)
    for target in (
        double_q_target(REWARDS, TERMINALS, GAMMA, next_q, next_q),
        dqv_target(REWARDS, TERMINALS, GAMMA, next_v),
        dqv_max_v_target(REWARDS, TERMINALS, GAMMA, next_q),
    ):
        assert not target.requires_grad
        assert target.grad_fn is None


def test_targets_reject_ambiguous_shapes() -> None:
    with pytest.raises(ValueError, match="next_values"):
        dqv_target(REWARDS, TERMINALS, GAMMA, torch.ones(3, 2))
    with pytest.raises(ValueError, match="next_q_target"):
        dqv_max_v_target(REWARDS, TERMINALS, GAMMA, torch.ones(3))


def test_huber_and_mse_by_hand() -> None:
    prediction = torch.tensor([0.5, 2.0])
    target = torch.zeros(2)
    # Huber (delta 1): 0.5 * 0.5^2 = 0.125 below 1; 2 - 0.5 = 1.5 above.
    assert td_loss(prediction, target, "huber").item() == pytest.approx((0.125 + 1.5) / 2)
    assert td_loss(prediction, target, "mse").item() == pytest.approx((0.25 + 4.0) / 2)
    assert td_loss(prediction, target, "huber").dim() == 0


def test_td_loss_rejects_unknown_kind_and_broadcasting() -> None:
    with pytest.raises(ValueError, match="l1"):
        td_loss(torch.zeros(2), torch.zeros(2), "l1")
    with pytest.raises(ValueError, match="shapes differ"):
        td_loss(torch.zeros(2, 1), torch.zeros(2), "mse")
