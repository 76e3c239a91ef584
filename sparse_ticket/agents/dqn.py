"""Double DQN (van Hasselt et al. 2016) on the Nature-CNN or MinAtar network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sparse_ticket.agents.base import Agent
from sparse_ticket.agents.steps import make_target
from sparse_ticket.agents.targets import double_q_target, td_loss
from sparse_ticket.nets import ValueNetwork

if TYPE_CHECKING:
    from sparse_ticket.replay import ReplayBatch

__all__ = ["DDQN"]


class DDQN(Agent):
    """Double DQN: one online Q network, its hard-copied target, Adam.

    Roles: ``{"q"}`` online, ``{"q"}`` target, ``{"q"}`` optimiser.

    Metrics of :meth:`update` (0-d tensors on the device): ``td_loss``, ``q_mean`` (mean of
    ``Q(s, a)`` over the batch) and ``grad_norm`` (global gradient norm before clipping).
    """

    algo = "ddqn"

    def _build_networks(self) -> None:
        """The online Q network, its target copy and its Adam."""
        self.q = self._build("q", self.num_actions)
        self.q_target = make_target(self.q)
        self.q_optimizer = self._optimizer(self.q)

    def networks(self) -> dict[str, ValueNetwork]:
        """``{"q": online Q network}``."""
        return {"q": self.q}

    def target_networks(self) -> dict[str, ValueNetwork]:
        """``{"q": target Q network}``."""
        return {"q": self.q_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``{"q": Adam of the online Q network}``."""
        return {"q": self.q_optimizer}

    def losses(self, batch: ReplayBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``{"q": Double DQN TD loss}`` of ``batch`` (``B`` transitions).

        Metrics: ``td_loss`` (that loss) and ``q_mean`` (mean ``Q(s, a)`` over the batch).
        """
        obs, actions, rewards, next_obs, terminals = self._to_device(batch)
        with torch.no_grad():
            # Online net selects a', target net evaluates it (van Hasselt et al. 2016).
            target = double_q_target(
                rewards, terminals, self.config.gamma, self.q(next_obs), self.q_target(next_obs)
            )
        q_taken = self.q(obs).gather(1, actions.unsqueeze(1)).squeeze(1)  # (B,)
        loss = td_loss(q_taken, target, self.config.loss)
        return {"q": loss}, {"td_loss": loss.detach(), "q_mean": q_taken.detach().mean()}

    def update(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """One Adam step on the Double DQN TD loss of ``batch`` (``B`` transitions)."""
        losses, metrics = self.losses(batch)
        return {**metrics, **self.grad_norm_metrics({"q": self._step("q", losses["q"])})}
