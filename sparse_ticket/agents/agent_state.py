"""An agent's checkpoint bundle: what :meth:`Agent.state_dict` saves and how it loads back.

Layout of :func:`agent_state_dict` (only CPU tensors and plain containers, so
``torch.load(..., weights_only=True)`` reads it)::

    {"algo": "ddqn",
     "networks":   {role: state_dict},      # the online networks (also init.pt / final.pt)
     "targets":    {role: state_dict},      # the target networks
     "optimizers": {role: optimizer state}} # Adam, moments included

Masks are not part of it: they are the sparsity module's data and are checkpointed by the
runner next to it (:meth:`Agent.set_masks` restores them). Every loader checks the whole bundle
before it copies anything, so a failed load leaves the agent untouched; the agent applies its
masks after loading, so masked weights and their Adam moments stay zero whatever was loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sparse_ticket.types import AgentRoles, Weights

__all__ = ["agent_state_dict", "load_agent_state_dict", "load_online_weights", "online_weights"]


def online_weights(agent: AgentRoles) -> Weights:
    """CPU copies of the online networks' weights by role (``init.pt`` / ``final.pt``)."""
    return _cpu_copy({role: net.state_dict() for role, net in agent.networks().items()})


def agent_state_dict(agent: AgentRoles) -> dict[str, Any]:
    """Everything an exact resume needs: online and target networks and the optimisers."""
    return {
        "algo": agent.algo,
        "networks": online_weights(agent),
        "targets": _cpu_copy(
            {role: net.state_dict() for role, net in agent.target_networks().items()}
        ),
        "optimizers": _cpu_copy(
            {role: opt.state_dict() for role, opt in agent.optimizers().items()}
        ),
    }


def load_agent_state_dict(agent: AgentRoles, state: Mapping[str, Any]) -> None:
    """Restore :func:`agent_state_dict` output; strict, and checked in full before anything loads.

    Raises:
        ValueError: Naming the role and key of the first mismatch (algorithm, missing or
            unexpected roles or keys, tensor shapes, optimiser layout).
    """
    if state.get("algo") != agent.algo:
        raise ValueError(f"checkpoint is for algo {state.get('algo')!r}, not {agent.algo!r}")
    sections: dict[str, dict[str, Any]] = {
        "networks": agent.networks(),
        "targets": agent.target_networks(),
        "optimizers": agent.optimizers(),
    }
    for section, modules in sections.items():
        _check_section(section, modules, state.get(section))
    for section, modules in sections.items():
        for role, module in modules.items():
            if section == "optimizers":
                _load_optimizer(module, state[section][role])
            else:
                module.load_state_dict(state[section][role])


def load_online_weights(
    agent: AgentRoles, weights: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Load online weights from :func:`online_weights` output (strict, checked first).

    Targets, optimiser state and masks are the caller's (:meth:`Agent.load_weights_state_dict`).
    """
    networks = agent.networks()
    if set(weights) != set(networks):
        raise ValueError(f"weights: expected roles {sorted(networks)}, got {sorted(weights)}")
    for role, network in networks.items():
        _check_tensors(network.state_dict(), weights[role], f"weights[{role!r}]")
    for role, network in networks.items():
        network.load_state_dict(weights[role])


def _check_section(section: str, modules: Mapping[str, Any], given: Any) -> None:
    """Require ``given`` to hold one loadable entry per role of ``modules``."""
    if not isinstance(given, Mapping) or set(given) != set(modules):
        found = sorted(given) if isinstance(given, Mapping) else given
        raise ValueError(f"{section}: expected roles {sorted(modules)}, got {found}")
    for role, module in modules.items():
        where = f"{section}[{role!r}]"
        if section == "optimizers":
            _check_optimizer_state(module, given[role], where)
        else:
            _check_tensors(module.state_dict(), given[role], where)


def _load_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load ``state`` into ``optimizer``, keeping this device's kernel flags.

    Saved param_groups carry the kernel flags of the device they were saved on; keep this
    device's (fused Adam of a GPU run is not what a CPU resume uses).
    """
    flags = [(group["foreach"], group["fused"]) for group in optimizer.param_groups]
    optimizer.load_state_dict(_clone_tensors(state))
    for group, (foreach, fused) in zip(optimizer.param_groups, flags, strict=True):
        group["foreach"], group["fused"] = foreach, fused


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
