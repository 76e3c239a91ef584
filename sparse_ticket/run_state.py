"""The runner's checkpoint bundle: what a checkpoint holds to continue a run exactly.

The runner and the checkpoint files meet here (Dopamine's ``bundle_and_checkpoint`` /
``unbundle``): :func:`bundle` gathers a :class:`~sparse_ticket.runner.Runner`'s state into the two
parts :class:`~sparse_ticket.checkpoint.CheckpointManager` writes, and :func:`unbundle` puts them
back. Layout::

    tensors (state.pt, loaded weights_only)
        agent       Agent.state_dict(): networks, targets, optimisers (agents/agent_state.py)
        torch_rng   torch's global generator
        sparsity    SparsityController.state_dict(): the masks and the schedule's position
        rewind      the rewind point's online weights {role: state_dict}, or None
        probe       the plasticity probe's fixed batch, or None before the first measurement
    state (runner.json)
        step, updates, update_debt        the loop's counters
        stopped_early                     whether an early stop ended training (IMP's option)
        act_rng                           numpy bit-generator state of the exploration stream
        env                               the training envs' episode state (EpisodicVecEnv)
        eval_history, episode_scores      what was measured so far
        config                            flatten(TrainConfig), checked on resume

The replay (``replay.npz``) is written next to them when the run checkpoints it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from sparse_ticket.checkpoint import CheckpointError
from sparse_ticket.config import TrainConfig, flatten
from sparse_ticket.metrics.plasticity import PlasticityProbe

if TYPE_CHECKING:
    from sparse_ticket.agents import Agent
    from sparse_ticket.envs import EpisodicVecEnv
    from sparse_ticket.sparsity.controller import SparsityController
    from sparse_ticket.types import Weights

__all__ = ["Bundled", "bundle", "unbundle"]


class Bundled(Protocol):
    """What a checkpoint holds of a run: the state :class:`~sparse_ticket.runner.Runner` keeps
    (the runner is one; this module does not import it)."""

    config: TrainConfig
    agent: Agent
    sparsity: SparsityController
    env: EpisodicVecEnv
    act_rng: np.random.Generator
    rewind_weights: Weights | None
    probe: PlasticityProbe | None
    step: int
    updates: int
    update_debt: float
    stopped_early: bool
    eval_history: list[dict[str, Any]]
    episode_scores: list[float]
    obs: np.ndarray | None


def bundle(runner: Bundled) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, state)`` of ``runner`` as it is now (the replay apart)."""
    tensors = {
        "agent": runner.agent.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "sparsity": runner.sparsity.state_dict(),
        "rewind": runner.rewind_weights,
        "probe": runner.probe.state_dict() if runner.probe is not None else None,
    }
    state = {
        "step": runner.step,
        "updates": runner.updates,
        "update_debt": runner.update_debt,
        "stopped_early": runner.stopped_early,
        "act_rng": runner.act_rng.bit_generator.state,
        "env": runner.env.state_dict(),
        "eval_history": runner.eval_history,
        "episode_scores": runner.episode_scores,
        "config": _jsonable(flatten(runner.config)),
    }
    return tensors, state


def unbundle(
    runner: Bundled, tensors: Mapping[str, Any], state: Mapping[str, Any], where: str
) -> None:
    """Put :func:`bundle`'s output back into ``runner`` (the replay apart).

    Raises:
        CheckpointError: The checkpoint at ``where`` was written by another configuration, or
            its agent or masks do not fit this run's.
    """
    if state.get("config") != _jsonable(flatten(runner.config)):
        raise CheckpointError(f"checkpoint {where} was written by a different configuration")
    try:
        # The checkpoint's mask first: loading weights re-applies the agent's current mask,
        # which must not be the fresh run's step-0 mask (SET/RigL have moved on since).
        runner.sparsity.load_state_dict(tensors["sparsity"])
        runner.agent.load_state_dict(tensors["agent"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {where} does not fit this agent: {error}") from None
    torch.set_rng_state(tensors["torch_rng"])
    runner.rewind_weights = tensors["rewind"]
    if tensors.get("probe") is not None:
        runner.probe = PlasticityProbe.from_state_dict(tensors["probe"])
    runner.episode_scores = state["episode_scores"]
    runner.act_rng.bit_generator.state = state["act_rng"]
    runner.step, runner.updates = state["step"], state["updates"]
    runner.update_debt = state["update_debt"]
    # A round of an IMP chain that stopped early is finished (a resumed chain must not train
    # it on); checkpoints written before this field existed never stopped early.
    runner.stopped_early = state.get("stopped_early", False)
    runner.eval_history = state["eval_history"]
    runner.obs = runner.env.load_state_dict(state["env"])


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so comparisons match what a checkpoint stored."""
    return json.loads(json.dumps(values))
