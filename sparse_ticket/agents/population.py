"""K independent agents of one shape trained as one batched model (a population).

A DQN update at batch 32 leaves a GPU almost idle: launch overhead, not arithmetic, bounds it. A
study trains thousands of runs of the same shape (seeds, or conditions that differ only in their
masks and initial weights), so :class:`Population` steps K of them together:

* **One optimiser.** A single fused Adam over every member's parameters: one kernel launch per
  update for all K members instead of one per member and network. Adam is elementwise and keeps
  its ``step`` counter per tensor, so every member's optimiser state stays its own. The members'
  own optimisers share its per-parameter state, so ``member.state_dict()``, resets of Adam
  moments (SET/RigL regrowth) and checkpoints work on a member exactly as alone.
* **Per-member masks and clipping.** Each member's gradients are masked by its own masks and
  clipped by its own global norm, per network, as :func:`~sparse_ticket.agents.steps.optimizer_step`
  does alone; the masks are the members' (``member.set_masks``), so every sparsity decision is
  taken within one member and never across members.
* **Two ways to batch the arithmetic** (``batching``):

  - ``"loop"``: each member's loss is its own ``losses`` call, and one backward pass runs over
    the sum. Every kernel sees exactly the tensors it would see alone, so a member's update is
    **bit-identical** to the same agent stepping alone (tested). The choice on a CPU, where the
    cores are busy with one member anyway.
  - ``"vmap"``: the members' parameters are stacked with a leading member dimension
    (``(K, *shape)``) and one ``torch.func.vmap`` of ``functional_call`` computes every loss:
    convolutions become grouped convolutions and linear layers batched matmuls, one kernel
    launch for all K. The members' parameters become views of the stacked tensors, so acting,
    evaluation, masks, probes and checkpoints still go through each member. Batching changes
    the summation order inside the kernels, so results match the member alone to float
    tolerance (tested: see ``tests/test_population.py``), not bit for bit.

The agent classes themselves are untouched: a member is an ordinary
:class:`~sparse_ticket.agents.base.Agent`, and a population of one is an agent with a shared
optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.func import functional_call, vmap

from sparse_ticket.agents.base import Agent
from sparse_ticket.agents.steps import explore_draws
from sparse_ticket.replay import ReplayBatch

if TYPE_CHECKING:
    from sparse_ticket.agents.masking import MaskedParameters

__all__ = ["BATCHING", "Population", "resolve_batching"]

BATCHING = ("auto", "loop", "vmap")
"""How a population batches its members' arithmetic (``auto``: vmap on CUDA, loop on CPU)."""


def resolve_batching(batching: str, device: torch.device | str) -> str:
    """``loop`` or ``vmap`` for a requested ``batching`` on ``device``."""
    if batching not in BATCHING:
        raise ValueError(f"unknown batching {batching!r} (one of {', '.join(BATCHING)})")
    if batching == "auto":
        return "vmap" if torch.device(device).type == "cuda" else "loop"
    return batching


class _LossModule(torch.nn.Module):
    """One member's networks as one module, whose forward is the member's ``losses``.

    ``functional_call`` swaps the parameters of these submodules (the member's own networks)
    for stacked ones inside ``vmap``, so the algorithm's mathematics is written once, in the
    agent, and batched here without a copy of it.
    """

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = [agent]  # a list: not registered as a submodule twice
        for role, network in agent.networks().items():
            self.add_module(f"online_{role}", network)
        for role, network in agent.target_networks().items():
            self.add_module(f"target_{role}", network)

    def forward(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return self.agent[0].losses(ReplayBatch(*batch))


class Population:
    """K member agents of one algorithm and shape, stepped together by one optimiser.

    Args:
        members: The agents, all of one class, config (seeds aside, which the agent does not
            hold), observation shape, action count and device. Build each as it would be built
            alone (its own seed for the initial weights); the population takes over their
            optimisation.
        batching: ``loop``, ``vmap`` or ``auto`` (see the module docstring).

    Raises:
        ValueError: If the members differ in anything that must be shared.
    """

    def __init__(self, members: Sequence[Agent], batching: str = "auto") -> None:
        if not members:
            raise ValueError("a population needs at least one member")
        self.members = list(members)
        _check_alike(self.members)
        first = self.members[0]
        self.device = first.device
        self.batching = resolve_batching(batching, self.device)
        if self.batching == "vmap" and first.config.precision != "fp32":
            # torch.autocast does not reach the weights inside torch.func.vmap (torch 2.13):
            # the members would run fp32 while the config says otherwise.
            raise ValueError(
                f"agent.precision={first.config.precision} needs batching=loop "
                "(autocast does not apply inside vmap)"
            )
        self.roles = list(first.networks())
        # One fused Adam over every member's parameters, with the members' hyperparameters.
        params = [p for agent in self.members for p in _online_params(agent)]
        config = first.config
        self.optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps, fused=True)
        self.relink()
        self._stacked: dict[str, torch.Tensor] = {}
        self._views: dict[str, list[torch.Tensor]] = {}
        self._loss_module: _LossModule | None = None
        if self.batching == "vmap":
            self._stack()

    @property
    def size(self) -> int:
        """The number of members ``K``."""
        return len(self.members)

    # ------------------------------------------------------------------------------ state
    def relink(self) -> None:
        """Make each member parameter's optimiser state one dict shared with the population.

        Adam fills a parameter's state dict in place at its first step, so the member's
        optimiser (``member.state_dict()``, Adam-moment resets) and the population's step see
        the same tensors. Call again after loading a member's state: ``Optimizer.load_state_dict``
        gives the member's optimiser new dicts, which then become the shared ones.
        """
        shared = self.optimizer.state
        for agent in self.members:
            for optimizer in agent.optimizers().values():
                for group in optimizer.param_groups:
                    for param in group["params"]:
                        shared[param] = optimizer.state[param]  # a defaultdict: {} if none

    def _stack(self) -> None:
        """Stack each parameter over members and make the members' parameters views of it."""
        self._loss_module = _LossModule(self.members[0])
        modules = [_LossModule(agent) for agent in self.members]
        for name, first in self._loss_module.named_parameters():
            per_member = [dict(module.named_parameters())[name] for module in modules]
            stacked = torch.stack([p.detach() for p in per_member])
            stacked.requires_grad_(first.requires_grad)
            for index, param in enumerate(per_member):
                # The member's Parameter object stays (optimiser and masks hold it); its data
                # becomes row `index` of the stacked tensor, so in-place edits reach both.
                param.data = stacked[index]
            self._stacked[name] = stacked
            self._views[name] = per_member

    # ------------------------------------------------------------------------------ acting
    def act(
        self,
        obs: Sequence[np.ndarray],
        epsilons: Sequence[float],
        rngs: Sequence[np.random.Generator],
    ) -> list[np.ndarray]:
        """Each member's epsilon-greedy actions ``(N,)`` int64 for its observations ``(N, ...)``.

        Every member draws from its own generator exactly what :meth:`Agent.act` draws, so a
        member's exploration stream is the one it has alone. With ``vmap`` batching, one
        batched forward pass (and one device-to-host copy) serves every member's greedy rows.
        """
        if self.batching == "loop":
            return [
                agent.act(o, e, r)
                for agent, o, e, r in zip(self.members, obs, epsilons, rngs, strict=True)
            ]
        draws = []
        for agent, o, e, r in zip(self.members, obs, epsilons, rngs, strict=True):
            agent.check_obs(o)
            draws.append(explore_draws(r, o.shape[0], e, agent.num_actions))
        if not any(greedy.any() for _, greedy in draws):
            return [actions for actions, _ in draws]
        greedy_actions = self._greedy(np.stack(obs))
        out = []
        for (actions, greedy), best in zip(draws, greedy_actions, strict=True):
            actions[greedy] = best[greedy]
            out.append(actions)
        return out

    def _greedy(self, obs: np.ndarray) -> np.ndarray:
        """``(K, N)`` greedy actions of every member's online Q network for ``(K, N, ...)``."""
        q_params = {
            name.removeprefix("online_q."): tensor
            for name, tensor in self._stacked.items()
            if name.startswith("online_q.")
        }
        q_network = self.members[0].networks()["q"]
        with torch.inference_mode():
            tensor = torch.as_tensor(obs).to(self.device, non_blocking=True)
            values = vmap(lambda p, x: functional_call(q_network, p, (x,)))(q_params, tensor)
            return values.argmax(dim=2).cpu().numpy().astype(np.int64, copy=False)

    # ------------------------------------------------------------------------------ update
    def update(self, batches: Sequence[ReplayBatch]) -> list[dict[str, torch.Tensor]]:
        """One gradient step of every member on its own batch; per member, 0-d metric tensors.

        The same step as each member's :meth:`Agent.update`: every loss from the parameters
        before any step, gradients masked by the member's masks, clipped by the member's own
        global norm per network, one Adam step, masked weights zeroed again.
        """
        if len(batches) != self.size:
            raise ValueError(f"{len(batches)} batches for a population of {self.size}")
        losses, metrics = self.losses(batches)
        self.optimizer.zero_grad(set_to_none=True)
        for stacked in self._stacked.values():
            stacked.grad = None
        torch.stack([loss for member in losses for loss in member.values()]).sum().backward()
        self._share_stacked_grads()
        groups = [group for agent in self.members for group in agent.masked_groups.values()]
        _mask_gradients(groups)
        norms = self._clip()
        self.optimizer.step()
        if groups:  # pruned weights stay exactly zero, as in optimizer_step
            with torch.no_grad():
                torch._foreach_mul_(
                    [p for g in groups for p in g.params], [m for g in groups for m in g.masks]
                )
        return [
            {**member_metrics, **agent.grad_norm_metrics(member_norms)}
            for agent, member_metrics, member_norms in zip(
                self.members, metrics, norms, strict=True
            )
        ]

    def losses(
        self, batches: Sequence[ReplayBatch]
    ) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
        """Per member, its losses by role (with graph) and its no-step metrics."""
        if self.batching == "loop":
            pairs = [
                agent.losses(batch) for agent, batch in zip(self.members, batches, strict=True)
            ]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        stacked_batch = tuple(
            torch.stack([batch[i] for batch in batches]).to(self.device, non_blocking=True)
            for i in range(len(ReplayBatch._fields))
        )
        module = self._loss_module
        losses, metrics = vmap(lambda p, b: functional_call(module, p, (b,)))(
            self._stacked, stacked_batch
        )
        unstack = range(self.size)
        return (
            [{role: loss[k] for role, loss in losses.items()} for k in unstack],
            [{key: value[k] for key, value in metrics.items()} for k in unstack],
        )

    def _share_stacked_grads(self) -> None:
        """Give each member parameter (a view of a stacked tensor) its row of the gradient."""
        for name, stacked in self._stacked.items():
            if stacked.grad is not None:
                for index, param in enumerate(self._views[name]):
                    param.grad = stacked.grad[index]

    def _clip(self) -> list[dict[str, torch.Tensor]]:
        """Clip each member's gradients per network by its own global norm; pre-clip norms.

        ``loop``: the very calls an agent makes alone (bit-identical). ``vmap``: the norms of
        all members at once from the stacked gradients, the same formula as
        ``torch.nn.utils.clip_grad_norm_`` (coefficient ``max / (norm + 1e-6)``, at most 1).
        """
        max_norm = self.members[0].config.max_grad_norm
        if self.batching == "vmap":
            return self._clip_stacked(max_norm)
        norms = []
        for agent in self.members:
            member: dict[str, torch.Tensor] = {}
            for role, network in agent.networks().items():
                params = [p for p in network.parameters() if p.grad is not None]
                if max_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
                else:
                    norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
                member[role] = norm.detach()
            norms.append(member)
        return norms

    def _clip_stacked(self, max_norm: float) -> list[dict[str, torch.Tensor]]:
        per_role: dict[str, torch.Tensor] = {}
        for role in self.roles:
            grads = [
                s.grad
                for name, s in self._stacked.items()
                if name.startswith(f"online_{role}.") and s.grad is not None
            ]
            tensor_norms = torch.stack(
                [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]
            )  # (tensors, K)
            total = torch.linalg.vector_norm(tensor_norms, dim=0)  # (K,)
            if max_norm > 0:
                coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
                for g in grads:
                    g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
            per_role[role] = total.detach()
        return [{role: norm[k] for role, norm in per_role.items()} for k in range(self.size)]


def _online_params(agent: Agent) -> list[torch.Tensor]:
    return [p for network in agent.networks().values() for p in network.parameters()]


def _mask_gradients(groups: Sequence[MaskedParameters]) -> None:
    """Multiply every masked parameter's gradient by its mask, all members in one call."""
    pairs = [
        (p.grad, m)
        for g in groups
        for p, m in zip(g.params, g.masks, strict=True)
        if p.grad is not None
    ]
    if pairs:
        torch._foreach_mul_([grad for grad, _ in pairs], [mask for _, mask in pairs])


def _check_alike(members: Sequence[Agent]) -> None:
    """Raise a ValueError naming the first way a member differs from the first one."""
    first = members[0]
    for index, agent in enumerate(members[1:], start=1):
        for what, mine, theirs in (
            ("algorithm", type(agent).__name__, type(first).__name__),
            ("agent config", agent.config, first.config),
            ("observation shape", agent.obs_shape, first.obs_shape),
            ("action count", agent.num_actions, first.num_actions),
            ("device", agent.device, first.device),
        ):
            if mine != theirs:
                raise ValueError(
                    f"population member {index} differs from member 0 in its {what}: "
                    f"{mine} vs {theirs}"
                )
