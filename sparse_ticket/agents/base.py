"""What every value-based agent shares: acting, optimiser steps, masks, target copies, checkpoints.

Subclasses (:class:`~sparse_ticket.agents.dqn.DDQN`, :class:`~sparse_ticket.agents.dqv.DQV`,
:class:`~sparse_ticket.agents.dqv.DQVMax`) only build their networks and define ``losses`` (the
loss of each online network on a batch) and ``update`` (one step per network on those losses).
Every network has a role name (``"q"``, ``"v"``): :meth:`Agent.networks`,
:meth:`Agent.target_networks` and :meth:`Agent.optimizers` are keyed by it, and so are the
checkpoints.

Sparsity masks are data kept apart from the networks: a ``dict[str, torch.Tensor]`` from a flat
parameter name ``"{role}.{param}"`` (``"q.encoder.fc.weight"``, as in
:meth:`Agent.named_parameters`) to a bool tensor of the parameter's shape, True where the weight is
active. The agent enforces them in every optimiser step (:func:`optimizer_step`) instead of
through ``torch.nn.utils.parametrize``, which costs ~20% per forward/backward pass and would turn
plain state dicts into parametrised ones: weights stay ordinary tensors with zeros at pruned
positions, so target syncs, checkpoints and weight transfer between games stay
``load_state_dict``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sparse_ticket.agents.targets import LOSSES, clip_rewards_to_sign
from sparse_ticket.nets import ValueNetwork, build_network
from sparse_ticket.seeding import derive_seed
from sparse_ticket.types import DeviceBatch

if TYPE_CHECKING:
    from sparse_ticket.config import AgentConfig
    from sparse_ticket.replay import ReplayBatch

__all__ = [
    "ADAM_MOMENTS",
    "Agent",
    "DeviceBatch",
    "MaskedParameters",
    "explore_draws",
    "make_optimizer",
    "make_target",
    "optimizer_step",
]

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
"""Per-element Adam state (``max_exp_avg_sq`` only with ``amsgrad``); ``step`` is per tensor."""


@dataclass(frozen=True)
class MaskedParameters:
    """The masked parameters of one network and their masks, as two lists in the same order.

    The masks are float 0/1 copies of the bool masks, in the parameters' dtype: one
    ``torch._foreach_mul_`` masks every tensor, and a same-dtype multiply stays on the
    vectorised kernel where a bool operand does not. On 2 CPU threads, multiplying the Nature
    encoder's weights took 80 us with float masks and 400 us with bool ones, and a masked
    batch-32 DDQN update cost 3.5% more than a dense one with float masks and 11% more with bool
    ones (measured interleaved, in one process).
    """

    params: list[torch.Tensor]
    """The parameters that have a mask (a subset of the network's, in its parameter order)."""
    masks: list[torch.Tensor]
    """Float 0/1 masks, each shaped and typed like its parameter; 1 marks an active weight."""

    def apply(self) -> None:
        """Zero the inactive weights in place (outside autograd: parameters are leaves)."""
        with torch.no_grad():
            torch._foreach_mul_(self.params, self.masks)


def make_target(network: ValueNetwork) -> ValueNetwork:
    """A frozen copy of ``network``: same weights, ``requires_grad`` False (Mnih et al. 2015)."""
    target = copy.deepcopy(network)
    target.requires_grad_(False)
    return target


def make_optimizer(network: ValueNetwork, lr: float, eps: float) -> torch.optim.Adam:
    """Adam over ``network``'s parameters with the fused kernel (CPU and CUDA).

    One kernel per step instead of one per parameter tensor matters most for small batches,
    where an update is launch-bound on a GPU (a batch-32 update is a few hundred small kernels);
    on a 2-core CPU the fused step made a batch-32 DDQN update 14% faster than the foreach one
    (measured in one process).
    """
    return torch.optim.Adam(network.parameters(), lr=lr, eps=eps, fused=True)


def optimizer_step(
    network: ValueNetwork,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float,
    masked: MaskedParameters | None = None,
) -> torch.Tensor:
    """Backpropagate ``loss``, clip the global gradient norm, and step ``optimizer``.

    Clipping is by the global L2 norm of all of ``network``'s gradients (as in Stable-Baselines3's
    DQN); it is skipped when ``max_grad_norm <= 0``.

    With ``masked``, the gradients of the masked parameters are multiplied by their masks before
    the norm is taken, so clipping and the returned norm see only the active weights and Adam's
    moments of pruned weights, zeroed by :meth:`Agent.set_masks`, stay exactly zero (Adam only
    ever sees zero gradients there); the weights are multiplied by their masks again after the
    step, so pruned weights stay exactly zero whatever the optimiser does (weight decay, or
    moments restored from elsewhere, would otherwise move them).
    This is the fixed-mask training of sparse networks (Frankle & Carbin 2019; Evci et al. 2020)
    without parametrisations. Both products are ``torch._foreach_mul_`` calls that queue on the
    device: no host synchronisation. Without ``masked`` the step is exactly the dense one.

    Returns:
        The global gradient norm *before* clipping, a 0-d tensor on the device (no host sync).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if masked is not None:
        # A parameter that took no part in the loss has no gradient to mask.
        pairs = [(p.grad, m) for p, m in zip(masked.params, masked.masks, strict=True)]
        grads = [grad for grad, _ in pairs if grad is not None]
        masks = [mask for grad, mask in pairs if grad is not None]
        torch._foreach_mul_(grads, masks)
    params = [p for p in network.parameters() if p.grad is not None]
    if max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    optimizer.step()
    if masked is not None:
        masked.apply()
    return grad_norm.detach()


def explore_draws(
    rng: np.random.Generator, n: int, epsilon: float, num_actions: int
) -> tuple[np.ndarray, np.ndarray]:
    """The random half of epsilon-greedy acting for ``n`` rows: ``(actions, greedy)``.

    Always exactly ``n`` uniforms, then ``n`` random actions, whatever ``epsilon`` is, so the
    generator's stream does not depend on the exploration schedule. ``actions`` ``(n,)`` int64
    holds the random actions; the caller overwrites the rows where ``greedy`` ``(n,)`` is True.
    """
    explore = rng.random(n) < epsilon
    actions = rng.integers(num_actions, size=n, dtype=np.int64)
    return actions, ~explore


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


def _clone_tensors(value: Any) -> Any:
    """Deep copy of a nest of dicts/lists/tuples with every tensor cloned where it is.

    ``Optimizer.load_state_dict`` keeps the given tensors when their dtype and device already
    fit (it only casts): without a clone, the agent's Adam moments would alias the caller's
    checkpoint, training would rewrite it in place, and two agents loaded from one checkpoint
    would share their moments.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _clone_tensors(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clone_tensors(item) for item in value)
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
        # Sparsity masks (see the module docstring): the flat bool masks as given, and per role
        # the float copies grouped with their online / target parameters for the step.
        self._masks: dict[str, torch.Tensor] | None = None
        self._masked: dict[str, MaskedParameters] = {}
        self._target_masked: dict[str, MaskedParameters] = {}

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
            network = build_network(self.config.encoder, self.obs_shape, num_outputs)
        return network.to(self.device)

    def _optimizer(self, network: ValueNetwork) -> torch.optim.Adam:
        """Adam with the configured learning rate and epsilon."""
        return make_optimizer(network, self.config.lr, self.config.adam_eps)

    @property
    def masked_groups(self) -> dict[str, MaskedParameters]:
        """The online networks' masked parameters by role (empty when the agent is dense):
        what a population batches its gradient masking over."""
        return self._masked

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
            self._masked.get(role),
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
    def masks(self) -> dict[str, torch.Tensor] | None:
        """The current masks, flat names to bool tensors on the device, or None when unmasked.

        The dict is new but its tensors are the agent's own: change masks with
        :meth:`set_masks`. (An in-place edit takes effect at the next :meth:`apply_masks`.)
        """
        return None if self._masks is None else dict(self._masks)

    def set_masks(self, mask: Mapping[str, torch.Tensor] | None) -> None:
        """Mask the online networks from now on, and zero their masked weights at once.

        Every name must be a flat parameter name of :meth:`named_parameters`; parameters without
        an entry (biases, say) stay dense. The masks are copied to the device. Right away, the
        masked weights of the online networks and of their target networks and the Adam moments
        (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) at masked positions are zeroed, so a
        target sync or a bootstrap target never sees a pruned weight and a pruned weight carries
        no momentum. Every later :meth:`update` keeps them at zero (:func:`optimizer_step`).

        Args:
            mask: Flat name -> bool tensor shaped like the parameter, True where the weight is
                active; or None to stop masking (the weights stay as they are, and pruned ones
                may grow again).

        Raises:
            ValueError: Naming the offending parameter (unknown name, wrong shape or dtype);
                nothing changes then.
        """
        if mask is None:
            self._masks = None
            self._masked, self._target_masked = {}, {}
            return
        self._masks = self._checked_positions(mask, "mask")
        self.apply_masks()

    def apply_masks(self) -> None:
        """Zero the masked weights of the online and target networks, and their Adam moments.

        :meth:`set_masks` and the checkpoint loaders call it; call it after changing weights or
        masks in place (a magnitude prune edits a mask, Zhu & Gupta 2017). The float copies used
        by the step are rebuilt from the bool masks first, so an in-place mask edit is picked
        up. Zeroing the moments keeps the invariant that a pruned weight has no Adam state,
        whichever way its mask changed. No-op without masks.
        """
        if self._masks is None:
            return
        self._masked, self._target_masked = self._group_masks(self._masks)
        for group in (*self._masked.values(), *self._target_masked.values()):
            group.apply()
        self._zero_moments({name: ~mask for name, mask in self._masks.items()})

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
        self._zero_moments(self._checked_positions(positions, "positions"))

    def _checked_positions(
        self, given: Mapping[str, torch.Tensor], what: str
    ) -> dict[str, torch.Tensor]:
        """Device copies of the bool tensors of ``given``, each checked against its parameter.

        Everything is checked before anything is returned, so a caller that fails leaves the
        agent as it was.
        """
        params = self.named_parameters()
        checked: dict[str, torch.Tensor] = {}
        for name, value in given.items():
            if name not in params:
                raise ValueError(
                    f"{what}: unknown parameter {name!r} of a {self.algo} agent "
                    f"(one of {', '.join(params)})"
                )
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{what}[{name!r}]: expected a tensor, got {type(value).__name__}")
            if value.dtype != torch.bool:
                raise ValueError(f"{what}[{name!r}]: expected a bool tensor, got {value.dtype}")
            if value.shape != params[name].shape:
                raise ValueError(
                    f"{what}[{name!r}]: expected shape {tuple(params[name].shape)}, "
                    f"got {tuple(value.shape)}"
                )
            checked[name] = value.detach().to(self.device, copy=True)
        return checked

    def _group_masks(
        self, masks: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, MaskedParameters], dict[str, MaskedParameters]]:
        """Per role, the masked online and target parameters with float copies of ``masks``.

        Built once per mask change, so a step only gathers its gradients. Parameters keep their
        identity for the agent's lifetime (every loader copies into them in place), so the
        lists stay valid; optimiser state does not (``Optimizer.load_state_dict`` replaces it)
        and is therefore looked up when needed instead.
        """
        targets = self.target_networks()
        online: dict[str, MaskedParameters] = {}
        target: dict[str, MaskedParameters] = {}
        for role, network in self.networks().items():
            target_params = dict(targets[role].named_parameters()) if role in targets else {}
            names, params, values = [], [], []
            for name, param in network.named_parameters():
                flat = f"{role}.{name}"
                if flat in masks:
                    names.append(name)
                    params.append(param)
                    values.append(masks[flat].to(param.dtype).contiguous())
            if not params:
                continue  # an unmasked role pays nothing in its steps
            online[role] = MaskedParameters(params, values)
            if target_params:
                target[role] = MaskedParameters([target_params[n] for n in names], values)
        return online, target

    def _zero_moments(self, positions: Mapping[str, torch.Tensor]) -> None:
        """Zero every Adam moment of ``ADAM_MOMENTS`` where ``positions`` (flat names) is True."""
        networks, optimizers = self.networks(), self.optimizers()
        for flat, where in positions.items():
            role, name = flat.split(".", 1)
            state = optimizers[role].state.get(networks[role].get_parameter(name))
            if not state:
                continue  # no step taken yet: Adam's moments start at zero
            for key in ADAM_MOMENTS:
                if key in state:
                    state[key].masked_fill_(where, 0.0)

    # ------------------------------------------------------------------------------- targets
    def sync_target(self) -> None:
        """Hard copy of every online network that has a target into that target."""
        online = self.networks()
        for role, target in self.target_networks().items():
            target.load_state_dict(online[role].state_dict())

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: online and target networks and the optimisers.

        Masks are not included: they are the sparsity module's data and are checkpointed by the
        runner next to this (:meth:`set_masks` restores them). Only CPU tensors and plain
        containers, so ``torch.load(..., weights_only=True)`` reads it.
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

        Masks are left as they are; if the agent has masks, they are applied after loading
        (:meth:`apply_masks`), so masked weights and their Adam moments stay zero whatever the
        checkpoint holds (a no-op for a checkpoint saved under the same masks).

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
                module.load_state_dict(_clone_tensors(state[section][role]))
                for group, (foreach, fused) in zip(module.param_groups, flags, strict=True):
                    group["foreach"], group["fused"] = foreach, fused
        self.apply_masks()

    def weights_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """CPU copies of the online networks' weights by role (``init.pt`` / ``final.pt``)."""
        return _cpu_copy({role: net.state_dict() for role, net in self.networks().items()})

    def load_weights_state_dict(
        self, weights: Mapping[str, Mapping[str, torch.Tensor]], sync_target: bool = True
    ) -> None:
        """Load online weights from :meth:`weights_state_dict` output (strict, checked first).

        Optimiser state is left as it is. With ``sync_target`` (default) the target networks are
        then copied from the loaded weights: bootstrapping a rewound network from targets of
        another training run is rarely what anyone wants. If the agent has masks they are applied
        after loading (:meth:`apply_masks`): rewinding a ticket to its initial weights (Frankle &
        Carbin 2019) loads dense weights that must be pruned again.
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
        self.apply_masks()
