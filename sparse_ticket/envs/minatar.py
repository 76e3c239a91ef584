"""MinAtar games (Young & Tian 2019) as a :class:`Backend`: CPU-scale stand-ins for Atari.

Each sub-env is one ``minatar.Environment`` stepped in plain Python; MinAtar has no frame skip,
so one agent step is one frame and ``max_episode_frames`` counts agent steps.

Observations
    A MinAtar state is a Markov (10, 10, C) bool grid whose channel count C depends on the game
    (asterix 4, breakout 4, freeway 7, seaquest 10, space_invaders 6). Transferring the first conv
    layer of a network across games needs one input layout, so every state is zero-padded to
    :data:`MINATAR_CHANNELS` = 10 channels (the game's own channels first) and transposed to
    channels-first: one observation is a (10, 10, 10) uint8 array of 0/1. Because the state is
    already Markov there is no frame stacking: ``obs_shape == frame_shape == (10, 10, 10)`` and the
    replay stores the whole observation as its "frame". ``EnvConfig.frame_stack`` must be 1.

Actions
    The agent's action ``i`` is ``minimal_action_set()[i]`` of the game: asterix 5, breakout 3,
    freeway 3, seaquest 6, space_invaders 4 actions. With ``EnvConfig.full_action_space`` all six
    MinAtar actions are used instead. Sticky actions (``EnvConfig.sticky_actions``) are MinAtar's
    own: with that probability the previous action is repeated.

Seeding
    ``Environment.seed`` installs one ``RandomState`` shared by the wrapper (sticky actions) and
    the game (spawns, start positions); the backend calls it once per sub-env and afterwards
    reseeds that shared generator in place, which yields the same stream far more cheaply.
    ``Environment.reset`` re-initialises all game state, but the wrapper's ``last_action`` (what a
    sticky action repeats) survives it, so :meth:`MinAtarBackend.reset` clears that too. An
    episode reset with seed ``s`` is therefore a pure function of ``(s, actions)``, whatever the
    sub-env did before: the property
    :meth:`~sparse_ticket.envs.base.EpisodicVecEnv.load_state_dict` relies on.

The Atari-only fields of :class:`EnvConfig` (``frame_skip``, ``screen_size``, ``noop_max``,
``fire_reset``, ``episodic_life``, ``env_threads``) do not apply to MinAtar and are ignored.
"""

from __future__ import annotations

import pkgutil

import minatar.environments
import numpy as np
from minatar import Environment

from sparse_ticket.config import EnvConfig
from sparse_ticket.envs.atari import normalise_game
from sparse_ticket.envs.base import Backend

MINATAR_CHANNELS = 10
"""Channels of every MinAtar observation: the most any game has (seaquest), shared for transfer."""

GRID_SIZE = 10
"""Side of the square MinAtar grid."""

NUM_MINATAR_ACTIONS = 6
"""Size of MinAtar's full action set (no-op, left, up, right, down, fire)."""


def minatar_games() -> list[str]:
    """Every game module (snake_case name) shipped with the installed ``minatar`` package."""
    return sorted(m.name for m in pkgutil.iter_modules(minatar.environments.__path__))


class MinAtarBackend(Backend):
    """``num_envs`` independent MinAtar environments with padded, channels-first observations.

    Returned arrays are fresh copies the caller owns (the backend fills preallocated buffers and
    copies them out once, so a caller may keep ``obs`` across steps without aliasing).
    """

    def __init__(
        self, game: str, config: EnvConfig, num_envs: int, max_episode_frames: int | None = None
    ) -> None:
        name = normalise_game(game)
        if name not in minatar_games():
            raise ValueError(f"unknown MinAtar game {game!r}")
        if config.frame_stack != 1:
            raise ValueError(
                f"MinAtar uses frame_stack=1 (its state is Markov), got {config.frame_stack}"
            )
        if num_envs < 1:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        limit = max_episode_frames or config.max_episode_frames
        if limit < 1:
            raise ValueError(f"max_episode_frames must be positive, got {limit}")

        self.game = name
        self.envs = [
            Environment(name, sticky_action_prob=config.sticky_actions, difficulty_ramping=True)
            for _ in range(num_envs)
        ]
        for env in self.envs:
            # Environment.seed builds one RandomState and hands it to the game too, so wrapper
            # (sticky actions) and game draw from the same stream. Do that once here; reset then
            # reseeds that shared generator in place, since building a RandomState costs ~80 us
            # (more than a dozen game steps) against ~1 us for RandomState.seed, and a reset
            # comes every few steps in games like breakout.
            env.seed(0)
        self.channels = int(self.envs[0].state_shape()[2])
        if config.full_action_space:
            self.action_set: list[int] = list(range(NUM_MINATAR_ACTIONS))
        else:
            self.action_set = [int(a) for a in self.envs[0].minimal_action_set()]
        self.max_episode_frames = int(limit)

        self.num_envs = num_envs
        self.num_actions = len(self.action_set)
        self.obs_shape = (MINATAR_CHANNELS, GRID_SIZE, GRID_SIZE)
        self.frame_shape = self.obs_shape

        # Preallocated state, filled in place each step. Channels >= self.channels are never
        # written, so the zero padding costs nothing after construction.
        self._obs = np.zeros((num_envs, *self.obs_shape), dtype=np.uint8)  # (N, 10, 10, 10)
        # (N, 10, 10, C) view of the game's channels: assigning MinAtar's (10, 10, C) state to
        # one row writes it channels-first into _obs with no intermediate array.
        self._game_obs = self._obs[:, : self.channels].transpose(0, 2, 3, 1)
        self._rewards = np.zeros(num_envs, dtype=np.float32)  # (N,)
        self._terminals = np.zeros(num_envs, dtype=bool)  # (N,)
        self._frames = np.zeros(num_envs, dtype=np.int64)  # (N,) steps since each reset

    def reset(self, mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Seed and reset sub-envs where ``mask`` (N,) is True; return all obs (N, 10, 10, 10).

        ``seeds`` (mask.sum(),) are used in order of the masked indices. Unmasked sub-envs keep
        their current observation.
        """
        indices = np.flatnonzero(mask)
        if len(indices) != len(seeds):
            raise ValueError(f"{len(indices)} sub-envs to reset but {len(seeds)} seeds")
        for i, seed in zip(indices.tolist(), np.asarray(seeds).tolist(), strict=True):
            env = self.envs[i]
            # Same stream as env.seed(seed): RandomState.seed re-initialises the generator fully
            # (Mersenne Twister state and the cached Gaussian), and the game shares the object.
            env.random.seed(int(seed))
            env.reset()
            # Environment.reset keeps the action a sticky step repeats; clear it so the episode
            # does not depend on how the previous one ended.
            env.last_action = 0
            self._game_obs[i] = env.state()
            self._frames[i] = 0
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every sub-env with agent actions (N,) in ``[0, num_actions)``.

        Returns (obs (N, 10, 10, 10) uint8, rewards (N,) float32 raw, terminals (N,) bool,
        truncations (N,) bool). Finished sub-envs are not reset (the caller does that); a
        terminated sub-env stepped again stays terminal with zero reward.
        """
        action_list = actions.tolist()
        if len(action_list) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(action_list)}")
        action_set = self.action_set
        num_actions = self.num_actions
        for i, (env, action) in enumerate(zip(self.envs, action_list, strict=True)):
            # A negative index would silently pick an action from the end of the list.
            if not 0 <= action < num_actions:
                raise ValueError(f"action {action} of sub-env {i} not in [0, {num_actions})")
            reward, terminal = env.act(action_set[action])
            self._rewards[i] = reward
            self._terminals[i] = terminal
            self._game_obs[i] = env.state()
        self._frames += 1
        terminals = self._terminals.copy()
        # A terminal on the last allowed step is a true end, not a truncation.
        truncations = (self._frames >= self.max_episode_frames) & ~terminals
        return self._obs.copy(), self._rewards.copy(), terminals, truncations

    def latest_frame(self, obs: np.ndarray) -> np.ndarray:
        """The whole observation (N, 10, 10, 10): MinAtar states are not stacked."""
        return obs
