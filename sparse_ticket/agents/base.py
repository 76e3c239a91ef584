"""What every value-based agent shares: acting, optimiser steps, target copies and checkpoints.

Subclasses (:class:`~sparse_ticket.agents.dqn.DDQN`, :class:`~sparse_ticket.agents.dqv.DQV`,
:class:`~sparse_ticket.agents.dqv.DQVMax`) only build their networks and define ``update``.
Every network has a role name (``"q"``, ``"v"``): :meth:`Agent.networks`,
:meth:`Agent.target_networks` and :meth:`Agent.optimizers` are keyed by it, and so are the
checkpoints, which lets a sparsity module mask weights and Adam moments without knowing the
algorithm.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sparse_ticket.agents.targets import LOSSES, clip_rewards_to_sign
from sparse_ticket.nets import ValueNetwork, build_network

if TYPE_CHECKING:
    from sparse_ticket.config import AgentConfig
    from sparse_ticket.replay import ReplayBatch

__all__ = ["Agent", "DeviceBatch", "make_optimizer", "make_target", "optimizer_step"]

DeviceBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(obs, actions, rewards, next_obs, terminals)`` on the agent's device, rewards as used."""


def make_target(network: ValueNetwork) -> ValueNetwork:
    """A frozen copy of ``network``: same weights, ``requires_grad`` False (Mnih et al. 2015)."""
    target = copy.deepcopy(network)
    target.requires_grad_(False)
    return target


def make_optimizer(network: ValueNetwork, lr: float, eps: float) -> torch.optim.Adam:
    """Adam over ``network``'s parameters with the fused kernel (CPU and CUDA).

    One kernel per step instead of one per parameter tensor matters most for small batches,
    where an update is launch-bound on a GPU (DESIGN.md §4); on a 2-core CPU the fused step
    made a batch-32 DDQN update 14% faster than the foreach one (measured in one process).
    """
    return torch.optim.Adam(network.parameters(), lr=lr, eps=eps, fused=True)


def optimizer_step(
    network: ValueNetwork,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float,
) -> torch.Tensor:
    """Backpropagate ``loss``, clip the global gradient norm, and step ``optimizer``.

    Clipping is by the global L2 norm of all of ``network``'s gradients (as in Stable-Baselines3's
    DQN); it is skipped when ``max_grad_norm <= 0``.

    Returns:
        The global gradient norm *before* clipping, a 0-d tensor on the device (no host sync).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in network.parameters() if p.grad is not None]
    if max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    optimizer.step()
    return grad_norm.detach()


def _cpu_copy(value: Any) -> Any:
    """Deep copy of a nest of dicts/lists/tuples with every tensor cloned to the CPU.

    Checkpoints must not alias live parameters (an in-memory snapshot would otherwise keep
    training) and must load on a machine without the training device.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(item) for item in value)
    return value


def _check_tensors(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], where: str
) -> None:
    """Raise a ValueError naming the first key of ``given`` that cannot load into ``expected``.

    Checked before anything is copied, so a failed load leaves the agent untouched (PyTorch's
    strict ``load_state_dict`` copies the matching tensors before it raises).
    """
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {missing}, unexpected keys {unexpected}")
    for key, tensor in expected.items():
        value = given[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{where}: {key} expected shape {tuple(tensor.shape)}, got {got}")


def _check_optimizer_state(
    optimizer: torch.optim.Optimizer, state: Mapping[str, Any], where: str
) -> None:
    """Require ``state`` to hold per-parameter tensors shaped like ``optimizer``'s parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = state.get("param_groups")
    per_param = state.get("state")
    if not isinstance(groups, list) or not isinstance(per_param, Mapping):
        raise ValueError(f"{where}: not an optimizer state dict")
    sizes = [len(group["params"]) for group in groups]
    if sizes != [len(group["params"]) for group in optimizer.param_groups]:
        raise ValueError(f"{where}: parameter groups of sizes {sizes} do not match the network")
    for index, moments in per_param.items():
        if not 0 <= index < len(params):
            raise ValueError(f"{where}: state for unknown parameter index {index}")
        for name, moment in moments.items():
            if moment.dim() > 0 and moment.shape != params[index].shape:
                raise ValueError(
                    f"{where}: state[{index}][{name!r}] expected shape "
                    f"{tuple(params[index].shape)}, got {tuple(moment.shape)}"
                )


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
    ) -> None:
        if config.loss not in LOSSES:
            raise ValueError(f"unknown TD loss {config.loss!r} (one of {', '.join(LOSSES)})")
        if num_actions < 1:
            raise ValueError(f"num_actions must be positive, got {num_actions}")
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        self.device = torch.device(device)

    # ----------------------------------------------------------------- roles (subclass contract)
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
    def update(self, batch: ReplayBatch) -> dict[str, torch.Tensor]:
        """One gradient step per online network on ``batch``; 0-d detached metric tensors.

        The metrics stay on the device: reading them (``.item()``) is the caller's choice, so
        the training loop can aggregate many updates before one host synchronisation.
        """

    # ------------------------------------------------------------------------------ building
    def _build(self, num_outputs: int) -> ValueNetwork:
        """A fresh network of this agent's encoder, on its device."""
        network = build_network(self.config.encoder, self.obs_shape, num_outputs)
        return network.to(self.device)

    def _optimizer(self, network: ValueNetwork) -> torch.optim.Adam:
        """Adam with the configured learning rate and epsilon."""
        return make_optimizer(network, self.config.lr, self.config.adam_eps)

    def _step(
        self, network: ValueNetwork, optimizer: torch.optim.Optimizer, loss: torch.Tensor
    ) -> torch.Tensor:
        """:func:`optimizer_step` with the configured clipping; returns the pre-clip norm."""
        return optimizer_step(network, optimizer, loss, self.config.max_grad_norm)

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
        if obs.ndim != len(self.obs_shape) + 1 or tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(f"obs must have shape (N, {self.obs_shape}), got {obs.shape}")
        explore = rng.random(obs.shape[0]) < epsilon
        actions = rng.integers(self.num_actions, size=obs.shape[0], dtype=np.int64)
        greedy = ~explore
        if greedy.any():
            actions[greedy] = self.greedy_actions(obs[greedy])
        return actions

    def greedy_actions(self, obs: np.ndarray) -> np.ndarray:
        """``argmax_a Q(s, a)`` of the online Q network, ``(N,)`` int64 for ``obs`` ``(N, ...)``."""
        q_network = self.networks()["q"]
        with torch.inference_mode():
            tensor = torch.as_tensor(obs).to(self.device, non_blocking=True)
            return q_network(tensor).argmax(dim=1).cpu().numpy().astype(np.int64, copy=False)

    # ------------------------------------------------------------------------------- targets
    def sync_target(self) -> None:
        """Hard copy of every online network that has a target into that target."""
        online = self.networks()
        for role, target in self.target_networks().items():
            target.load_state_dict(online[role].state_dict())

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: online and target networks and the optimisers.

        Only CPU tensors and plain containers, so ``torch.load(..., weights_only=True)`` reads it.
        Layout: ``{"algo", "networks": {role: sd}, "targets": {role: sd},
        "optimizers": {role: sd}}``.
        """
        return {
            "algo": self.algo,
            "networks": self.weights_state_dict(),
            "targets": _cpu_copy(
                {role: net.state_dict() for role, net in self.target_networks().items()}
            ),
            "optimizers": _cpu_copy(
                {role: opt.state_dict() for role, opt in self.optimizers().items()}
            ),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; strict, and checked in full before anything loads.

        Raises:
            ValueError: Naming the role and key of the first mismatch (algorithm, missing or
                unexpected roles or keys, tensor shapes, optimiser layout).
        """
        if state.get("algo") != self.algo:
            raise ValueError(f"checkpoint is for algo {state.get('algo')!r}, not {self.algo!r}")
        sections: dict[str, dict[str, Any]] = {
            "networks": self.networks(),
            "targets": self.target_networks(),
            "optimizers": self.optimizers(),
        }
        for section, modules in sections.items():
            given = state.get(section)
            if not isinstance(given, Mapping) or set(given) != set(modules):
                found = sorted(given) if isinstance(given, Mapping) else given
                raise ValueError(f"{section}: expected roles {sorted(modules)}, got {found}")
            for role, module in modules.items():
                where = f"{section}[{role!r}]"
                if section == "optimizers":
                    _check_optimizer_state(module, given[role], where)
                else:
                    _check_tensors(module.state_dict(), given[role], where)
        for section, modules in sections.items():
            for role, module in modules.items():
                if section != "optimizers":
                    module.load_state_dict(state[section][role])
                    continue
                # Saved param_groups carry the kernel flags of the device they were saved on;
                # keep this device's (fused Adam of a GPU run is not what a CPU resume uses).
                flags = [(group["foreach"], group["fused"]) for group in module.param_groups]
                module.load_state_dict(state[section][role])
                for group, (foreach, fused) in zip(module.param_groups, flags, strict=True):
                    group["foreach"], group["fused"] = foreach, fused

    def weights_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """CPU copies of the online networks' weights by role (``init.pt`` / ``final.pt``)."""
        return _cpu_copy({role: net.state_dict() for role, net in self.networks().items()})

    def load_weights_state_dict(
        self, weights: Mapping[str, Mapping[str, torch.Tensor]], sync_target: bool = True
    ) -> None:
        """Load online weights from :meth:`weights_state_dict` output (strict, checked first).

        Optimiser state is left as it is. With ``sync_target`` (default) the target networks are
        then copied from the loaded weights: bootstrapping a rewound network from targets of
        another training run is rarely what anyone wants.
        """
        networks = self.networks()
        if set(weights) != set(networks):
            raise ValueError(f"weights: expected roles {sorted(networks)}, got {sorted(weights)}")
        for role, network in networks.items():
            _check_tensors(network.state_dict(), weights[role], f"weights[{role!r}]")
        for role, network in networks.items():
            network.load_state_dict(weights[role])
        if sync_target:
            self.sync_target()
