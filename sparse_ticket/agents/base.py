"""What every value-based agent shares: acting, optimiser steps, gradients, target copies.

Subclasses (:class:`~sparse_ticket.agents.dqn.DDQN`, :class:`~sparse_ticket.agents.dqv.DQV`,
:class:`~sparse_ticket.agents.dqv.DQVMax`) only build their networks (``_build_networks``) and
define ``losses`` (the loss of each online network on a batch) and ``update`` (one step per
network on those losses). Every network has a role name (``"q"``, ``"v"``):
:meth:`Agent.networks`, :meth:`Agent.target_networks` and :meth:`Agent.optimizers` are keyed by
it, and so are the checkpoints.

Two concerns live in modules of their own, and the agent's public methods hand over to them:

- the sparsity masks, :mod:`sparse_ticket.agents.masking` (:class:`AgentMasks`): enforced in
  every optimiser step (:func:`optimizer_step`), so weights stay ordinary tensors with zeros at
  pruned positions and target syncs, checkpoints and weight transfer between games stay
  ``load_state_dict``;
- the checkpoint bundle, :mod:`sparse_ticket.agents.agent_state` (its layout is shown there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sparse_ticket.agents.agent_state import (
    agent_state_dict,
    load_agent_state_dict,
    load_online_weights,
    online_weights,
)
from sparse_ticket.agents.masking import AgentMasks, MaskedParameters
from sparse_ticket.agents.steps import explore_draws, make_optimizer, optimizer_step
from sparse_ticket.agents.targets import clip_rewards_to_sign
from sparse_ticket.config import LOSSES
from sparse_ticket.nets import ValueNetwork, build_network
from sparse_ticket.seeding import derive_seed
from sparse_ticket.types import DeviceBatch, Mask, Weights

if TYPE_CHECKING:
    from sparse_ticket.config import AgentConfig
    from sparse_ticket.replay import ReplayBatch

__all__ = ["Agent"]


class Agent(ABC):
    """A value-based agent: epsilon-greedy acting on its Q network, one update per call.

    Args:
        config: Algorithm hyperparameters (``AgentConfig``).
        obs_shape: One observation's shape ``(C, H, W)``.
        num_actions: Size of the discrete action space.
        device: Torch device of the networks; batches arrive on the CPU and are moved here.
    """

    algo: str
    """The ``AgentConfig.algo`` name of the class, stored in checkpoints."""

    def __init__(
        self,
        config: AgentConfig,
        obs_shape: tuple[int, ...],
        num_actions: int,
        device: torch.device | str = "cpu",
        init_seed: int | None = None,
    ) -> None:
        """Check the config and hold what every agent needs.

        Args:
            init_seed: Seed of the initial weights; each role's network draws from its own
                stream ``derive_seed(init_seed, role)`` (:meth:`_build`). None draws the seed
                from torch's global generator, so seeding that first still reproduces the init.
        """
        if config.loss not in LOSSES:
            raise ValueError(f"unknown TD loss {config.loss!r} (one of {', '.join(LOSSES)})")
        if num_actions < 1:
            raise ValueError(f"num_actions must be positive, got {num_actions}")
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        self.device = torch.device(device)
        if init_seed is None:
            init_seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self.init_seed = init_seed
        self.mask_state = AgentMasks(self)
        """The sparsity masks (:mod:`sparse_ticket.agents.masking`); dense until set."""
        self._build_networks()

    # ----------------------------------------------------------------- roles (subclass contract)
    @abstractmethod
    def _build_networks(self) -> None:
        """Build the online networks (:meth:`_build`), their targets and optimisers.

        Called once, at the end of :meth:`__init__`, when config, shapes, device and seed are set.
        """

    @abstractmethod
    def networks(self) -> dict[str, ValueNetwork]:
        """The online networks by role (always with ``"q"``, the acting network)."""

    @abstractmethod
    def target_networks(self) -> dict[str, ValueNetwork]:
        """The target networks by role (a subset of :meth:`networks`' roles)."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per online network, keyed like :meth:`networks`."""

    @abstractmethod
    def losses(self, batch: ReplayBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The loss of each online network on ``batch``, and the metrics that need no step.

        The one place an algorithm's mathematics lives: :meth:`update` steps on these losses and
        :meth:`gradients` differentiates them. Every regression target is computed here, from the
        parameters as they are before any network steps.

        Returns:
            ``(losses, metrics)``: per role a 0-d loss that still carries its graph (the losses
            of different roles share no graph), in the order the networks are to step; and 0-d
            detached metric tensors on the device.
        """

    @abstractmethod
    def update(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """One gradient step per online network on ``batch``; 0-d detached metric tensors.

        The metrics stay on the device: reading them (``.item()``) is the caller's choice, so
        the training loop can aggregate many updates before one host synchronisation.
        """

    def grad_norm_metrics(self, norms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The gradient-norm metrics of one update from each role's pre-clip norm.

        One network: ``grad_norm``. :class:`~sparse_ticket.agents.population.Population` steps
        many agents at once and reports through this, so its metrics match :meth:`update`'s.
        """
        (norm,) = norms.values()
        return {"grad_norm": norm}

    # ------------------------------------------------------------------------------ building
    def _build(self, role: str, num_outputs: int) -> ValueNetwork:
        """A fresh network of this agent's encoder for ``role``, on its device.

        Its weights come from the role's own stream (the encoder is drawn before the head), so
        a role's encoder init depends on the seed and the role only: not on the order roles are
        built in nor on another role's head size (DQV's Q head has one output per action).
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.init_seed, role))
            network = build_network(
                self.config.encoder, self.obs_shape, num_outputs, self.config.precision
            )
        return network.to(self.device)

    def _optimizer(self, network: ValueNetwork) -> torch.optim.Adam:
        """Adam with the configured learning rate and epsilon."""
        return make_optimizer(network, self.config.lr, self.config.adam_eps)

    def _step(self, role: str, loss: torch.Tensor) -> torch.Tensor:
        """:func:`optimizer_step` of ``role``'s network with the configured clipping and masks.

        Returns:
            The pre-clip gradient norm (of the masked gradient when ``role`` has masks).
        """
        return optimizer_step(
            self.networks()[role],
            self.optimizers()[role],
            loss,
            self.config.max_grad_norm,
            self.mask_state.online.get(role),
        )

    def _to_device(self, batch: ReplayBatch) -> DeviceBatch:
        """Move ``batch`` to the device; rewards clipped to sign iff ``config.clip_rewards``."""
        obs, actions, rewards, next_obs, terminals = (
            tensor.to(self.device, non_blocking=True) for tensor in batch
        )
        if self.config.clip_rewards:
            rewards = clip_rewards_to_sign(rewards)
        return obs, actions, rewards, next_obs, terminals

    # -------------------------------------------------------------------------------- acting
    def act(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy actions for a batch of observations.

        Every call draws exactly ``N`` uniforms and ``N`` random actions from ``rng`` whatever
        ``epsilon`` is, so the generator's stream (and a checkpoint of it) does not depend on
        the exploration schedule. The Q network runs only on the rows that act greedily, and
        not at all when none does (the ``epsilon = 1`` warm-up costs no forward pass).

        Args:
            obs: ``(N, *obs_shape)`` uint8 observations.
            epsilon: Probability of a uniformly random action, per row.
            rng: Source of all exploration randomness.

        Returns:
            ``(N,)`` int64 actions.
        """
        self.check_obs(obs)
        actions, greedy = explore_draws(rng, obs.shape[0], epsilon, self.num_actions)
        if greedy.any():
            actions[greedy] = self.greedy_actions(obs[greedy])
        return actions

    def check_obs(self, obs: np.ndarray) -> None:
        """Raise a ValueError unless ``obs`` is a batch ``(N, *obs_shape)``."""
        if obs.ndim != len(self.obs_shape) + 1 or tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(f"obs must have shape (N, {self.obs_shape}), got {obs.shape}")

    def greedy_actions(self, obs: np.ndarray) -> np.ndarray:
        """``argmax_a Q(s, a)`` of the online Q network, ``(N,)`` int64 for ``obs`` ``(N, ...)``."""
        q_network = self.networks()["q"]
        with torch.inference_mode():
            tensor = torch.as_tensor(obs).to(self.device, non_blocking=True)
            return q_network(tensor).argmax(dim=1).cpu().numpy().astype(np.int64, copy=False)

    # ------------------------------------------------------------------------------ gradients
    def gradients(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """The dense gradient of each online network's loss on ``batch``, by flat name.

        What :meth:`update` would compute before masking and clipping, for every parameter,
        pruned ones included: RigL regrows the inactive weights of largest gradient magnitude
        (Evci et al. 2020), so the gradient at masked positions is the point. Nothing steps:
        parameters and optimiser state are unchanged, and every online ``.grad`` is left
        ``None`` (stale gradients would otherwise outlive the call and hold memory).

        Returns:
            ``{"{role}.{param}": gradient}`` for every entry of :meth:`named_parameters`; a
            parameter that takes no part in its network's loss gets zeros.
        """
        losses, _ = self.losses(batch)
        grads: dict[str, torch.Tensor] = {}
        for role, network in self.networks().items():
            named = list(network.named_parameters())
            # ``autograd.grad`` returns the gradients instead of accumulating them into ``.grad``:
            # the same backward pass as ``loss.backward()``, leaving the optimiser's inputs alone.
            params = [param for _, param in named]
            values = torch.autograd.grad(losses[role], params, allow_unused=True)
            for (name, param), grad in zip(named, values, strict=True):
                grads[f"{role}.{name}"] = torch.zeros_like(param) if grad is None else grad
        for optimizer in self.optimizers().values():
            optimizer.zero_grad(set_to_none=True)
        return grads

    # ---------------------------------------------------------------------------------- masks
    def named_parameters(self) -> dict[str, torch.Tensor]:
        """Every online parameter by flat name ``"{role}.{param}"`` (``"q.head.weight"``).

        The live parameters, not copies: the names and shapes a mask must match. Editing one in
        place must happen under ``torch.no_grad()``, followed by :meth:`apply_masks`.
        """
        return {
            f"{role}.{name}": param
            for role, network in self.networks().items()
            for name, param in network.named_parameters()
        }

    @property
    def masks(self) -> Mask | None:
        """The current masks, flat names to bool tensors on the device, or None when unmasked
        (:attr:`AgentMasks.current`)."""
        return self.mask_state.current

    @property
    def masked_groups(self) -> dict[str, MaskedParameters]:
        """The online networks' masked parameters by role (empty when the agent is dense):
        what a population batches its gradient masking over."""
        return self.mask_state.online

    def set_masks(self, mask: Mapping[str, torch.Tensor] | None) -> None:
        """Mask the online networks from now on, and zero their masked weights, their targets'
        and their Adam moments at once (:meth:`AgentMasks.set`; None stops masking).

        Every later :meth:`update` keeps them at zero (:func:`optimizer_step`).

        Raises:
            ValueError: Naming the offending parameter (unknown name, wrong shape or dtype);
                nothing changes then.
        """
        self.mask_state.set(mask)

    def apply_masks(self) -> None:
        """Zero the masked weights of the online and target networks, and their Adam moments.

        :meth:`set_masks` and the checkpoint loaders call it; call it after changing weights or
        masks in place (:meth:`AgentMasks.apply`). No-op without masks.
        """
        self.mask_state.apply()

    def reset_optimizer_state(self, positions: Mapping[str, torch.Tensor]) -> None:
        """Zero the Adam moments of the online networks at ``positions``.

        The fresh optimiser state of weights regrown by SET (Mocanu et al. 2018) or RigL (Evci
        et al. 2020): a regrown weight starts from zero momentum instead of whatever it carried
        before it was pruned. Adam's ``step`` counter is one per tensor, not per element, so the
        bias correction of a regrown weight is not reset: late in training (correction ~1) its
        moments refill from zero uncorrected, and while they do its update is
        ``(1 - beta1^k) / sqrt(1 - beta2^k)`` times ``lr`` after ``k`` steps of a steady
        gradient, ~3x at ``k = 1`` and up to ~6x around ``k = 10`` with the default betas,
        settling to ~1x over ~``1 / (1 - beta2)`` steps (Kingma & Ba 2015, §3 on why the
        correction exists).

        Args:
            positions: Flat name -> bool tensor shaped like the parameter, True where to reset.
                Parameters without state yet (no step taken) are skipped: their moments are
                zero already.

        Raises:
            ValueError: Naming the offending parameter (unknown name, wrong shape or dtype).
        """
        self.mask_state.zero_moments(self.mask_state.checked(positions, "positions"))

    # ------------------------------------------------------------------------------- targets
    def sync_target(self) -> None:
        """Hard copy of every online network that has a target into that target."""
        online = self.networks()
        for role, target in self.target_networks().items():
            target.load_state_dict(online[role].state_dict())

    # ------------------------------------------------------------ checkpoints (agent_state.py)
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: online and target networks and the optimisers.

        Masks are not included (the runner checkpoints them next to this). The layout is shown
        in :mod:`sparse_ticket.agents.agent_state`.
        """
        return agent_state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; strict, and checked in full before anything loads.

        Masks are left as they are and applied after loading, so masked weights and their Adam
        moments stay zero whatever the checkpoint holds.

        Raises:
            ValueError: Naming the role and key of the first mismatch.
        """
        load_agent_state_dict(self, state)
        self.apply_masks()

    def weights_state_dict(self) -> Weights:
        """CPU copies of the online networks' weights by role (``init.pt`` / ``final.pt``)."""
        return online_weights(self)

    def load_weights_state_dict(
        self, weights: Mapping[str, Mapping[str, torch.Tensor]], sync_target: bool = True
    ) -> None:
        """Load online weights from :meth:`weights_state_dict` output (strict, checked first).

        Optimiser state is left as it is. With ``sync_target`` (default) the target networks are
        then copied from the loaded weights: bootstrapping a rewound network from targets of
        another training run is rarely what anyone wants. If the agent has masks they are applied
        after loading: rewinding a ticket to its initial weights (Frankle & Carbin 2019) loads
        dense weights that must be pruned again.
        """
        load_online_weights(self, weights)
        if sync_target:
            self.sync_target()
        self.apply_masks()
