"""Atari 2600 games through ale-py's C++ vector env (ROMs ship in the ale-py wheel).

The whole preprocessing of the v5 protocol (frame skip with max-pool, grayscale, resize to 84x84,
frame stack, no-op starts, fire reset, sticky actions, 108k-frame limit) runs inside
``ale_py.vector_env.AtariVectorEnv``'s threads. Two of its defaults differ from our protocol and
are set explicitly: sticky actions (its default is 0.0; Machado et al. 2018 use 0.25) and reward
clipping (its default is on; we keep raw scores and let the agent clip).
"""

from __future__ import annotations

import os

import numpy as np
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv

from sparse_ticket.config import EnvConfig
from sparse_ticket.envs.base import Backend


def atari_games() -> list[str]:
    """Every ALE game name (snake_case) whose ROM ships with ale-py."""
    return sorted(roms.get_all_rom_ids())


def normalise_game(game: str) -> str:
    """``Pong``, ``SpaceInvaders``, ``space-invaders`` -> ``pong``, ``space_invaders``."""
    text = game.strip().replace("-", "_")
    if any(c.isupper() for c in text) and "_" not in text:
        text = "".join(f"_{c.lower()}" if c.isupper() else c for c in text).lstrip("_")
    return text.lower()


class AtariBackend(Backend):
    """``AtariVectorEnv`` with the protocol of :class:`EnvConfig`, reset only on request."""

    def __init__(
        self, game: str, config: EnvConfig, num_envs: int, max_episode_frames: int | None = None
    ) -> None:
        name = normalise_game(game)
        if name not in atari_games():
            raise ValueError(f"unknown Atari game {game!r}")
        threads = config.env_threads or min(num_envs, os.cpu_count() or 1)
        self.env = AtariVectorEnv(
            name,
            num_envs,
            num_threads=threads,
            max_num_frames_per_episode=max_episode_frames or config.max_episode_frames,
            repeat_action_probability=config.sticky_actions,
            full_action_space=config.full_action_space,
            img_height=config.screen_size,
            img_width=config.screen_size,
            stack_num=config.frame_stack,
            frameskip=config.frame_skip,
            noop_max=config.noop_max,
            episodic_life=config.episodic_life,
            reward_clipping=False,
            use_fire_reset=config.fire_reset,
        )
        self.num_envs = num_envs
        self.num_actions = int(self.env.single_action_space.n)
        self.obs_shape = (config.frame_stack, config.screen_size, config.screen_size)
        self.frame_shape = (config.screen_size, config.screen_size)

    def reset(self, mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        if mask.all():
            obs, _ = self.env.reset(seed=seeds)
        else:
            obs, _ = self.env.reset(seed=seeds, options={"reset_mask": mask})
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, terminals, truncations, _ = self.env.step(actions.astype(np.int64))
        return obs, rewards, terminals, truncations

    def send(self, actions: np.ndarray) -> None:
        self.env.send(actions.astype(np.int64))

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, terminals, truncations, _ = self.env.recv()
        return obs, rewards, terminals, truncations

    def latest_frame(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, -1]

    def close(self) -> None:
        self.env.close()
