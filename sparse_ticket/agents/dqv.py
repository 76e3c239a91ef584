"""The Deep Quality-Value family: DQV (Sabatelli et al. 2018) and DQV-Max (Sabatelli et al. 2020).

Both learn a state-value network V(s) next to the Q network and act greedily on Q:

- DQV: V and Q both regress to ``r + gamma * V_target(s')``; only V has a target network.
- DQV-Max: V regresses to ``r + gamma * max_a Q_target(s', a)`` and Q to ``r + gamma * V(s')``
  with the online V (detached); only Q has a target network.

Every update computes both targets from the parameters before the step, then takes one Adam step
per network, each with its own gradient clipping.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from sparse_ticket.agents.base import Agent
from sparse_ticket.agents.steps import make_target
from sparse_ticket.agents.targets import dqv_max_v_target, dqv_target, td_loss
from sparse_ticket.nets import ValueNetwork

if TYPE_CHECKING:
    from sparse_ticket.replay import ReplayBatch

__all__ = ["DQV", "DQVMax"]


class _QualityValueAgent(Agent):
    """Online ``q`` and ``v`` networks with one Adam each; subclasses pick targets and losses.

    Metrics of :meth:`update` (0-d tensors on the device):

    - ``v_loss``, ``q_loss`` and ``td_loss = v_loss + q_loss`` (the sum, so the one name the
      runner logs for every algorithm still falls when either network improves);
    - ``q_mean`` (mean ``Q(s, a)``) and ``v_mean`` (mean ``V(s)``) over the batch;
    - ``v_grad_norm``, ``q_grad_norm`` (each network's global norm before clipping) and
      ``grad_norm``, their maximum: each network is clipped on its own, so the maximum is what
      tells whether any clipping happened.
    """

    def _build_networks(self) -> None:
        """Online Q and V networks, one Adam each; subclasses add the target they bootstrap on."""
        # Each role draws its init from its own stream: V's does not depend on Q's head size.
        self.q = self._build("q", self.num_actions)
        self.v = self._build("v", 1)
        self.q_optimizer = self._optimizer(self.q)
        self.v_optimizer = self._optimizer(self.v)

    def networks(self) -> dict[str, ValueNetwork]:
        """``{"q": online Q network, "v": online V network (one output)}``."""
        return {"q": self.q, "v": self.v}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``{"q": Adam of Q, "v": Adam of V}``."""
        return {"q": self.q_optimizer, "v": self.v_optimizer}

    @abstractmethod
    def _targets(
        self, rewards: torch.Tensor, terminals: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The regression targets ``(v_target, q_target)``, each ``(B,)`` and without graph."""

    def losses(self, batch: ReplayBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``{"v": V loss, "q": Q loss}`` of ``batch`` (``B`` transitions), V first as it steps.

        Both targets come from the parameters before either network steps. Metrics:
        ``td_loss``, ``v_loss``, ``q_loss``, ``q_mean``, ``v_mean``.
        """
        obs, actions, rewards, next_obs, terminals = self._to_device(batch)
        with torch.no_grad():
            v_target, q_target = self._targets(rewards, terminals, next_obs)
        v = self.v(obs).squeeze(1)  # (B,)
        q_taken = self.q(obs).gather(1, actions.unsqueeze(1)).squeeze(1)  # (B,)
        v_loss = td_loss(v, v_target, self.config.loss)
        q_loss = td_loss(q_taken, q_target, self.config.loss)
        v_value, q_value = v_loss.detach(), q_loss.detach()
        metrics = {
            "td_loss": v_value + q_value,
            "v_loss": v_value,
            "q_loss": q_value,
            "q_mean": q_taken.detach().mean(),
            "v_mean": v.detach().mean(),
        }
        return {"v": v_loss, "q": q_loss}, metrics

    def update(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """One Adam step for V and one for Q on ``batch`` (``B`` transitions)."""
        losses, metrics = self.losses(batch)
        norms = {role: self._step(role, losses[role]) for role in ("v", "q")}
        return {**metrics, **self.grad_norm_metrics(norms)}

    def grad_norm_metrics(self, norms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``grad_norm`` (the larger of the two), ``v_grad_norm`` and ``q_grad_norm``."""
        return {
            "grad_norm": torch.maximum(norms["v"], norms["q"]),
            "v_grad_norm": norms["v"],
            "q_grad_norm": norms["q"],
        }


class DQV(_QualityValueAgent):
    """Deep Quality-Value learning (Sabatelli et al. 2018).

    Roles: ``{"q", "v"}`` online and optimisers; ``{"v"}`` target. Both networks regress to
    ``r + gamma * (1 - d) * V_target(s')``: learning V is easier than Q, and Q then follows a
    target that does not carry the max-operator's overestimation.
    """

    algo = "dqv"

    def _build_networks(self) -> None:
        super()._build_networks()
        self.v_target = make_target(self.v)

    def target_networks(self) -> dict[str, ValueNetwork]:
        """``{"v": target V network}``."""
        return {"v": self.v_target}

    def _targets(
        self, rewards: torch.Tensor, terminals: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V and Q share the target ``r + gamma * (1 - d) * V_target(s')``."""
        target = dqv_target(rewards, terminals, self.config.gamma, self.v_target(next_obs))
        return target, target


class DQVMax(_QualityValueAgent):
    """DQV-Max (Sabatelli et al. 2020).

    Roles: ``{"q", "v"}`` online and optimisers; ``{"q"}`` target. V regresses to
    ``r + gamma * (1 - d) * max_a Q_target(s', a)`` and Q to ``r + gamma * (1 - d) * V(s')``
    with the online V network, detached.
    """

    algo = "dqv-max"

    def _build_networks(self) -> None:
        super()._build_networks()
        self.q_target = make_target(self.q)

    def target_networks(self) -> dict[str, ValueNetwork]:
        """``{"q": target Q network}``."""
        return {"q": self.q_target}

    def _targets(
        self, rewards: torch.Tensor, terminals: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V from the target Q's max, Q from the online V (both before this update's steps)."""
        gamma = self.config.gamma
        v_target = dqv_max_v_target(rewards, terminals, gamma, self.q_target(next_obs))
        q_target = dqv_target(rewards, terminals, gamma, self.v(next_obs))
        return v_target, q_target
