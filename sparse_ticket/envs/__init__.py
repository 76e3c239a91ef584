"""Environments: ALE Atari games and MinAtar behind one resumable vector-env interface."""

from __future__ import annotations

from sparse_ticket.config import EnvConfig
from sparse_ticket.envs.base import (
    Backend,
    EpisodeStats,
    EpisodicVecEnv,
    StepResult,
    episode_seed,
)


def make_backend(
    game: str, config: EnvConfig, num_envs: int, max_episode_frames: int | None = None
) -> Backend:
    """The backend of ``config.suite`` for ``game`` (ValueError for an unknown suite or game)."""
    if config.suite == "atari":
        from sparse_ticket.envs.atari import AtariBackend

        return AtariBackend(game, config, num_envs, max_episode_frames)
    if config.suite == "minatar":
        from sparse_ticket.envs.minatar import MinAtarBackend

        return MinAtarBackend(game, config, num_envs, max_episode_frames)
    raise ValueError(f"unknown env suite {config.suite!r} (atari or minatar)")


def make_env(
    game: str,
    config: EnvConfig,
    seed: int,
    num_envs: int | None = None,
    max_episode_frames: int | None = None,
) -> EpisodicVecEnv:
    """A training or evaluation vector env; call ``reset()`` before stepping."""
    backend = make_backend(game, config, num_envs or config.num_envs, max_episode_frames)
    return EpisodicVecEnv(backend, seed)


def available_games(suite: str) -> list[str]:
    """Game names of a suite."""
    if suite == "atari":
        from sparse_ticket.envs.atari import atari_games

        return atari_games()
    if suite == "minatar":
        from sparse_ticket.envs.minatar import minatar_games

        return minatar_games()
    raise ValueError(f"unknown env suite {suite!r} (atari or minatar)")


__all__ = [
    "Backend",
    "EpisodeStats",
    "EpisodicVecEnv",
    "StepResult",
    "available_games",
    "episode_seed",
    "make_backend",
    "make_env",
]
