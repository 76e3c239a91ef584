"""The vector-env contract shared by every suite, and the bookkeeping that makes it resumable.

Each suite (ALE, MinAtar) supplies a small :class:`Backend` that can reset chosen sub-envs with
chosen seeds and step all of them. :class:`EpisodicVecEnv` turns it into what the runner needs:

* **Explicit per-episode seeds.** Episode ``k`` of sub-env ``i`` starts from
  ``episode_seed(seed, i, k)``, and a finished sub-env is reset at once with that seed. The
  vector env's own next-step autoreset therefore never fires, so no "reset transition" (the
  ignored action on the step after a terminal) can reach the replay buffer.
* **Raw episode scores.** Returns sum unclipped rewards; clipping is the agent's business.
* **Exact resume.** Because an episode is a pure function of its seed and its actions, the state
  of every sub-env is ``(episode seed, actions since reset)``. :meth:`EpisodicVecEnv.state_dict`
  stores that; :meth:`EpisodicVecEnv.load_state_dict` rebuilds the emulator states by replaying
  the actions, staggering the resets so all sub-envs finish their replay on the same step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    """Seed of one episode: a hash of (run seed, sub-env, episode index) into [0, 2**31)."""
    state = np.random.SeedSequence([seed, env_index, episode]).generate_state(1)[0]
    return int(state % (2**31 - 1))


class EpisodeStats(NamedTuple):
    """One finished episode: raw (unclipped) score and agent steps."""

    env_index: int
    score: float
    length: int


class StepResult(NamedTuple):
    """What one vector step returns. Shapes: N = num_envs, O = obs_shape.

    ``next_obs`` is the true successor state s' (the final observation where an episode ended);
    ``obs`` is what the agent acts on next (the first observation of the new episode there).
    """

    next_obs: np.ndarray  # (N, *O) uint8
    rewards: np.ndarray  # (N,) float32, raw
    terminals: np.ndarray  # (N,) bool: the episode terminated (a true end state)
    truncations: np.ndarray  # (N,) bool: cut by the time limit (bootstrap from s')
    obs: np.ndarray  # (N, *O) uint8
    reset_mask: np.ndarray  # (N,) bool: terminals | truncations
    finished: list[EpisodeStats]


class Backend(ABC):
    """A batch of sub-envs that can be reset selectively with explicit seeds."""

    num_envs: int
    num_actions: int
    obs_shape: tuple[int, ...]
    """Shape of one observation the agent sees, e.g. (4, 84, 84)."""
    frame_shape: tuple[int, ...]
    """Shape of the newest frame of an observation, the unit the replay stores."""

    @abstractmethod
    def reset(self, mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Reset sub-envs where ``mask`` (N,) is True with ``seeds`` (one each); return (N, *O)."""

    @abstractmethod
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step all sub-envs; return (obs (N, *O) uint8, rewards (N,), terminals, truncations)."""

    def send(self, actions: np.ndarray) -> None:
        """Start a step without waiting for it (:meth:`recv` collects it).

        Backends whose emulators run in threads of their own override both, so a population's
        K vector envs step at the same time; the default steps here and now.
        """
        self._sent: tuple[np.ndarray, ...] | None = self.step(actions)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The result of the step :meth:`send` started."""
        result, self._sent = self._sent, None
        return result

    @abstractmethod
    def latest_frame(self, obs: np.ndarray) -> np.ndarray:
        """The newest frame of each observation: (N, *O) -> (N, *frame_shape)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release emulator resources."""


class EpisodicVecEnv:
    """A vector env with explicit episode seeds, raw scores and an exact, replayable state."""

    def __init__(self, backend: Backend, seed: int) -> None:
        self.backend = backend
        self.seed = seed
        n = backend.num_envs
        self.episodes = np.zeros(n, dtype=np.int64)  # index of each sub-env's current episode
        self.scores = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.actions_since_reset: list[list[int]] = [[] for _ in range(n)]
        self.obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None  # of a step started by step_async

    num_envs = property(lambda self: self.backend.num_envs)
    num_actions = property(lambda self: self.backend.num_actions)
    obs_shape = property(lambda self: self.backend.obs_shape)
    frame_shape = property(lambda self: self.backend.frame_shape)

    def latest_frame(self, obs: np.ndarray) -> np.ndarray:
        """(N, *O) -> (N, *frame_shape): the part of an observation the replay stores."""
        return self.backend.latest_frame(obs)

    def _seeds(self, mask: np.ndarray) -> np.ndarray:
        return np.array(
            [episode_seed(self.seed, i, int(self.episodes[i])) for i in np.flatnonzero(mask)],
            dtype=np.int64,
        )

    def reset(self) -> np.ndarray:
        """Start every sub-env's current episode; returns the first observations (N, *O)."""
        mask = np.ones(self.num_envs, dtype=bool)
        self.obs = self.backend.reset(mask, self._seeds(mask))
        self.scores[:] = 0.0
        self.lengths[:] = 0
        self.actions_since_reset = [[] for _ in range(self.num_envs)]
        return self.obs

    def step(self, actions: np.ndarray, reset: np.ndarray | None = None) -> StepResult:
        """Step every sub-env; finished ones are reset at once with their next episode's seed.

        ``reset`` (N,) bool, if given, limits the resets to the sub-envs it marks: a finished
        sub-env outside it keeps its final observation (its episode counter still advances), and
        whatever it returns when stepped again is no episode of ours. For an evaluation's last
        episodes: a seeded Atari reset reloads the ROM (~0.2 s a sub-env).
        """
        self.step_async(actions)
        return self.step_wait(reset)

    def step_async(self, actions: np.ndarray) -> None:
        """Start :meth:`step` (the emulators run while the caller does other work)."""
        self._actions = actions
        self.backend.send(actions)

    def step_wait(self, reset: np.ndarray | None = None) -> StepResult:
        """Finish the step :meth:`step_async` started (``reset`` as in :meth:`step`)."""
        actions, self._actions = self._actions, None
        if actions is None:
            raise RuntimeError("step_wait without a step_async")
        next_obs, rewards, terminals, truncations = self.backend.recv()
        rewards = rewards.astype(np.float32, copy=False)
        self.scores += rewards
        self.lengths += 1
        for i, action in enumerate(actions.tolist()):
            self.actions_since_reset[i].append(action)
        done = terminals | truncations
        finished: list[EpisodeStats] = []
        obs = next_obs
        if done.any():
            for i in np.flatnonzero(done):
                finished.append(EpisodeStats(int(i), float(self.scores[i]), int(self.lengths[i])))
                self.scores[i] = 0.0
                self.lengths[i] = 0
                self.actions_since_reset[i] = []
            self.episodes[done] += 1
            # Copy: the backend may return the reset observations in the same buffer.
            next_obs = next_obs.copy()
            starting = done if reset is None else done & reset
            if starting.any():
                obs = self.backend.reset(starting, self._seeds(starting))
        self.obs = obs
        return StepResult(next_obs, rewards, terminals, truncations, obs, done, finished)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the episode index, score and actions of every sub-env."""
        return {
            "seed": self.seed,
            "episodes": self.episodes.tolist(),
            "scores": self.scores.tolist(),
            "lengths": self.lengths.tolist(),
            "actions_since_reset": [list(a) for a in self.actions_since_reset],
        }

    def load_state_dict(self, state: dict[str, Any]) -> np.ndarray:
        """Rebuild every sub-env's emulator state by replaying its actions; returns the obs.

        Sub-env ``i`` with ``L_i`` actions is reset at replay step ``L_max - L_i`` so that all
        of them end together; before that it takes throw-away no-op steps that its reset (with
        an explicit seed, hence independent of history) erases.
        """
        if len(state["episodes"]) != self.num_envs:
            raise ValueError(
                f"env state has {len(state['episodes'])} sub-envs, this env has {self.num_envs}"
            )
        self.seed = int(state["seed"])
        self.episodes = np.asarray(state["episodes"], dtype=np.int64)
        histories = [np.asarray(a, dtype=np.int64) for a in state["actions_since_reset"]]
        lengths = np.array([len(h) for h in histories])
        starts = lengths.max() - lengths
        # A fresh backend accepts only a full first reset: seeding every sub-env with its own
        # episode seed also starts, exactly, those whose replay begins at step 0.
        everyone = np.ones(self.num_envs, dtype=bool)
        obs = self.backend.reset(everyone, self._seeds(everyone))
        for t in range(int(lengths.max()) + 1):
            starting = starts == t
            if t > 0 and starting.any():
                obs = self.backend.reset(starting, self._seeds(starting))
            if t == lengths.max():
                break
            actions = np.zeros(self.num_envs, dtype=np.int64)
            for i in np.flatnonzero(starts <= t):
                actions[i] = histories[i][t - starts[i]]
            obs = self.backend.step(actions)[0]
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.lengths = np.asarray(state["lengths"], dtype=np.int64)
        self.actions_since_reset = [h.tolist() for h in histories]
        self.obs = obs
        return obs

    def close(self) -> None:
        self.backend.close()
