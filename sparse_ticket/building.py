"""A run's parts built from its config, where more than one caller needs them.

:func:`make_replay` picks the replay for the run's device; :func:`probe_parameters` names the
parameters a run would train, so a mask or weights file is checked against the architecture
before any run starts (the MLflow layer checks ``runs:/`` masks with it).
"""

from __future__ import annotations

import torch

from sparse_ticket.agents import make_agent
from sparse_ticket.config import RunConfig, TrainConfig
from sparse_ticket.envs import make_env
from sparse_ticket.replay import DeviceFrameReplay, FrameReplay

__all__ = ["make_replay", "probe_parameters"]


def make_replay(
    run: RunConfig, num_envs: int, frame_shape: tuple[int, ...], stack: int, seed: int
) -> FrameReplay:
    """The replay of ``run.replay_device``: sampled on the host, or on the training device.

    Both draw the same batches from the same seed (the device one mirrors the frames on the
    device and gathers there, so an update copies indices instead of 1.8 MB of Atari frames).
    """
    device = torch.device(run.device)
    on_device = run.replay_device == "device" or (
        run.replay_device == "auto"
        and device.type == "cuda"
        and DeviceFrameReplay.fits(run.replay_capacity, num_envs, frame_shape, device)
    )
    if on_device:
        return DeviceFrameReplay(run.replay_capacity, num_envs, frame_shape, stack, seed, device)
    return FrameReplay(run.replay_capacity, num_envs, frame_shape, stack, seed=seed)


def probe_parameters(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The agent parameters (flat ``role.param`` names) a run of ``config`` would train.

    Builds a one-env backend just to learn the observation shape and action count, so a mask or
    weights file can be checked against the architecture before any run starts.
    """
    env = make_env(config.game, config.env, seed=0, num_envs=1)
    try:
        agent = make_agent(config.agent, env.obs_shape, env.num_actions, "cpu")
    finally:
        env.close()
    return agent.named_parameters()
