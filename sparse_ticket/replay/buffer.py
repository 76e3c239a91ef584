"""Experience replay that stores every frame once, as uint8, and rebuilds frame stacks on sampling.

An observation of a stacked-frame environment is the last ``stack`` frames; consecutive
observations share ``stack - 1`` of them, and ``s'`` of one transition is ``s`` of the next. Storing
stacked ``obs`` and ``next_obs`` would hold every frame ``2 * stack`` times (8x for Atari), so
:class:`FrameReplay` keeps only the newest frame of each observation and reconstructs stacks at
sampling time. At an episode start the environment's observation is the first frame with the
``stack - 1`` earlier frames all zero (ale-py's vector env resets its stack to ``[0, 0, 0, f0]``),
so frames that belong to an earlier episode are zeroed on reconstruction.

Layout: each of the ``N`` parallel envs has its own circular strip of ``capacity_per_env`` slots and
its own write pointer, because envs drift out of lockstep (an env that ends an episode writes both
its final ``s'`` frame and the next episode's first frame). Positions are *absolute* write counts
per env; position ``p`` lives in slot ``p % capacity_per_env``.

Per slot ``p`` of an env:

- ``frames[p]``: the newest frame of the observation written at ``p``;
- ``is_transition[p]``: an action was taken from the observation at ``p`` and its ``s'`` frame is
  at ``p + 1`` (false for the final frame of an episode, which is followed by a reset frame);
- ``actions[p]``, ``rewards[p]``, ``terminals[p]``: that transition's data;
- ``episode_start[p]``: ``p`` is the first frame of an episode (written by :meth:`add_reset`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sparse_ticket.replay.scratch import SampleScratch, allocate_scratch
from sparse_ticket.replay.state import Geometry, load_replay_state, replay_state
from sparse_ticket.types import ReplayBatch

__all__ = ["FrameReplay", "ReplayBatch"]

_ACTION_DTYPE = np.int16
"""Largest action id is 32767: ALE has 18 actions, and two bytes keep metadata far below a frame."""


class FrameReplay:
    """Uniform experience replay over ``num_envs`` parallel envs, storing each frame once.

    Protocol (the runner's calls, per env): :meth:`add_reset` with an episode's first frame, then
    :meth:`add_step` for every env step; when an episode ends (terminated *or* truncated) the
    runner calls :meth:`add_reset` with the next episode's first frame, so the final ``s'`` slot is
    never itself the start of a transition.

    Args:
        capacity: Total slots over all envs; each env gets ``ceil(capacity / num_envs)``. A slot
            holds one frame, so the number of sampleable transitions is slightly lower (final
            frames of episodes and the ``stack`` oldest frames of each env's history are not
            transition starts).
        num_envs: Number of parallel envs ``N``.
        frame_shape: Shape of one frame: ``(H, W)`` (Atari) or ``(C, H, W)`` (MinAtar).
        stack: Frames per observation (Atari 4, MinAtar 1).
        seed: Seed of the sampling RNG (``np.random.PCG64``).
    """

    def __init__(
        self, capacity: int, num_envs: int, frame_shape: tuple[int, ...], stack: int, seed: int
    ) -> None:
        frame_shape = tuple(int(d) for d in frame_shape)
        _check_config(capacity, num_envs, frame_shape, stack)
        self._capacity = int(capacity)
        self._num_envs = int(num_envs)
        self._frame_shape = frame_shape
        self._stack = int(stack)
        self._cap = math.ceil(capacity / num_envs)
        if self._cap < self._stack + 1:
            # A transition needs stack + 1 live slots: its history, itself and its s'.
            raise ValueError(
                f"capacity {capacity} gives {self._cap} slots per env for {num_envs} envs; "
                f"need at least stack + 1 = {self._stack + 1}"
            )
        slots = (self._num_envs, self._cap)
        # np.zeros maps untouched pages lazily: a 1M-slot Atari buffer (~7 GB) costs nothing until
        # it is written, so creating the buffer never stalls or over-commits the host.
        self._frames = np.zeros((*slots, *frame_shape), dtype=np.uint8)
        self._actions = np.zeros(slots, dtype=_ACTION_DTYPE)
        self._rewards = np.zeros(slots, dtype=np.float32)
        self._terminals = np.zeros(slots, dtype=np.bool_)
        self._is_transition = np.zeros(slots, dtype=np.bool_)
        self._episode_start = np.zeros(slots, dtype=np.bool_)
        self._count = np.zeros(self._num_envs, dtype=np.int64)
        self._num_valid = np.zeros(self._num_envs, dtype=np.int64)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._rows = np.arange(self._num_envs)
        # Offsets of the window p - stack + 1 .. p + 1 around a transition start p.
        self._offsets = np.arange(-self._stack + 1, 2, dtype=np.int64)
        self._scratch: dict[int, SampleScratch] = {}
        self._make_flat_views()

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """Total slots requested at construction."""
        return self._capacity

    @property
    def capacity_per_env(self) -> int:
        """Slots in each env's circular strip, ``ceil(capacity / num_envs)``."""
        return self._cap

    @property
    def num_envs(self) -> int:
        """Number of parallel envs ``N``."""
        return self._num_envs

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one stored frame."""
        return self._frame_shape

    @property
    def stack(self) -> int:
        """Frames per observation."""
        return self._stack

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one sampled observation, ``(stack * C, H, W)`` (``C = 1`` for 2-d frames)."""
        if len(self._frame_shape) == 2:
            return (self._stack, *self._frame_shape)
        channels, *spatial = self._frame_shape
        return (self._stack * channels, *spatial)

    @property
    def nbytes(self) -> int:
        """Bytes of all storage arrays (frames and metadata; the sampling scratch is excluded)."""
        return sum(a.nbytes for a in self._storage().values())

    @property
    def bytes_per_transition(self) -> float:
        """``nbytes / capacity``: about one frame plus 9 bytes of metadata."""
        return self.nbytes / self._capacity

    def __len__(self) -> int:
        """Number of transitions :meth:`sample` can currently return."""
        return int(self._num_valid.sum())

    # ------------------------------------------------------------------ writing

    def add_reset(self, env_mask: np.ndarray, frames: np.ndarray) -> None:
        """Write the first frame of a new episode for every env where ``env_mask`` is true.

        Args:
            env_mask: ``(N,)`` bool, the envs that start an episode.
            frames: ``(N, *frame_shape)`` uint8; rows where ``env_mask`` is false are ignored.
        """
        env_mask = np.asarray(env_mask, dtype=np.bool_)
        if env_mask.shape != (self._num_envs,):
            raise ValueError(f"env_mask must have shape ({self._num_envs},), got {env_mask.shape}")
        self._check_frames(frames)
        rows = self._rows[env_mask]
        self._write(rows, frames[env_mask], episode_start=True)

    def add_step(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        next_frames: np.ndarray,
    ) -> None:
        """Record one step of all ``N`` envs.

        The transition starts at each env's latest written slot (its current observation); that
        slot becomes sampleable and ``next_frames`` is written as the env's new latest slot.

        Args:
            actions: ``(N,)`` integer actions taken from the current observations.
            rewards: ``(N,)`` raw rewards.
            terminals: ``(N,)`` bool, true where the episode *terminated* (not truncated).
            next_frames: ``(N, *frame_shape)`` uint8, the newest frame of each ``s'``.
        """
        n = self._num_envs
        for name, arr in (("actions", actions), ("rewards", rewards), ("terminals", terminals)):
            if np.shape(arr) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(arr)}")
        self._check_frames(next_frames)
        self._check_can_step()
        slot = (self._count - 1) % self._cap
        self._actions[self._rows, slot] = actions
        self._rewards[self._rows, slot] = rewards
        self._terminals[self._rows, slot] = terminals
        self._is_transition[self._rows, slot] = True
        # With capacity_per_env >= stack + 1 the new transition (p = count - 1, s' at count) is
        # valid as soon as its s' is written below.
        self._num_valid += 1
        self._write(self._rows, next_frames, episode_start=False)

    def _write(self, rows: np.ndarray, frames: np.ndarray, episode_start: bool) -> None:
        """Write ``frames`` (``(len(rows), *frame_shape)``) at the next position of ``rows``."""
        count = self._count[rows]
        # After this write the oldest valid start is count - cap + stack, so the transition at
        # count - cap + stack - 1 loses its oldest history frame: retire it from the valid count.
        # It must be read before the write, since with stack == 1 it is the slot overwritten.
        retired = count - self._cap + self._stack - 1
        live = retired >= 0
        retired_slot = retired % self._cap
        self._num_valid[rows] -= live & self._is_transition[rows, retired_slot]
        slot = count % self._cap
        self._frames[rows, slot] = frames
        self._episode_start[rows, slot] = episode_start
        self._is_transition[rows, slot] = False
        self._terminals[rows, slot] = False
        self._actions[rows, slot] = 0
        self._rewards[rows, slot] = 0.0
        self._count[rows] = count + 1

    def _check_frames(self, frames: np.ndarray) -> None:
        """Reject frames of the wrong shape or dtype (a silent float->uint8 cast would corrupt)."""
        expected = (self._num_envs, *self._frame_shape)
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise TypeError(
                f"frames must be a uint8 numpy array, got {type(frames).__name__}"
                f" of {getattr(frames, 'dtype', None)}"
            )
        if frames.shape != expected:
            raise ValueError(f"frames must have shape {expected}, got {frames.shape}")

    def _check_can_step(self) -> None:
        """Catch runner bugs: stepping an env with no episode, or from a terminated final frame."""
        if (self._count == 0).any():
            raise RuntimeError("add_step before add_reset: every env needs a first frame")
        # The latest slot is a final frame when it was written by add_step with terminal=True;
        # stepping from it would splice two episodes into one transition history.
        prev = (self._count - 2) % self._cap
        after_terminal = (
            (self._count >= 2)
            & self._is_transition[self._rows, prev]
            & self._terminals[self._rows, prev]
        )
        if after_terminal.any():
            envs = np.flatnonzero(after_terminal).tolist()
            raise RuntimeError(f"add_step after a terminal step without add_reset (envs {envs})")

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> ReplayBatch:
        """Draw ``batch_size`` transitions uniformly (with replacement) from the valid ones.

        ``rng`` draws instead of the buffer's own generator, so a measurement (a plasticity
        probe) can sample without moving the training stream.

        Returns:
            A :class:`ReplayBatch`; its ``obs`` and ``next_obs`` are views of a scratch buffer
            that the next ``sample(batch_size)`` call overwrites.

        Raises:
            ValueError: if the buffer holds no valid transition or ``batch_size < 1``.
        """
        window_idx = self._draw_windows(batch_size, rng or self._rng)
        scratch = self._get_scratch(batch_size)
        # mode="clip" because mode="raise" (the default) buffers `out`; indices are in range.
        np.take(self._frames_flat, window_idx.ravel(), axis=0, out=scratch.window_rows, mode="clip")
        self._zero_earlier_episodes(scratch.window, window_idx)
        start = window_idx[:, self._stack - 1]
        return ReplayBatch(
            obs=scratch.obs,
            actions=torch.from_numpy(self._actions_flat[start].astype(np.int64)),
            rewards=torch.from_numpy(self._rewards_flat[start]),
            next_obs=scratch.next_obs,
            terminals=torch.from_numpy(self._terminals_flat[start].astype(np.float32)),
        )

    def _draw_windows(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """``(B, stack + 1)`` flat slots of frames ``p - stack + 1 .. p + 1`` of ``B`` drawn
        transitions ``p`` (column ``stack - 1`` is ``p`` itself); checks the request first."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(self) < 1:
            raise ValueError("cannot sample: the replay buffer holds no complete transition yet")
        envs, positions = self._draw(batch_size, rng)
        return envs[:, None] * self._cap + (positions[:, None] + self._offsets) % self._cap

    def _draw(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(envs, positions)``, each ``(batch_size,)`` int64, uniformly over valid starts.

        Draws uniformly over the rectangle ``N x [lo, hi]`` that covers every env's valid range and
        redraws only the rejected entries, so the result is exactly uniform over valid transitions
        even when envs are out of lockstep.
        """
        lo = int(np.maximum(self._count - self._cap + self._stack - 1, 0).min())
        span = int(self._count.max()) - 1 - lo  # positions lo .. max(count) - 2
        envs = np.empty(batch_size, dtype=np.int64)
        positions = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        while todo.size:
            # One RNG call for both coordinates: the flat cell index of the rectangle.
            env, offset = np.divmod(rng.integers(0, self._num_envs * span, size=todo.size), span)
            pos = offset + lo
            ok = self._is_valid(env, pos)
            envs[todo[ok]] = env[ok]
            positions[todo[ok]] = pos[ok]
            todo = todo[~ok]
        return envs, positions

    def _is_valid(self, envs: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: whether each ``(env, position)`` starts a sampleable transition.

        Valid iff the slot is a transition, its oldest history frame ``p - stack + 1`` has not been
        overwritten and its ``s'`` at ``p + 1`` has been written.
        """
        count = self._count[envs]
        in_range = (positions >= count - self._cap + self._stack - 1) & (positions <= count - 2)
        flat = envs * self._cap + positions % self._cap
        return in_range & self._is_transition_flat[flat]

    def _zero_earlier_episodes(self, window: np.ndarray, window_idx: np.ndarray) -> None:
        """Zero, in place, frames of ``window`` (``(B, stack + 1, ...)``) from earlier episodes.

        Frame ``p - k`` (``k = 1 .. stack - 1``) belongs to an earlier episode iff an episode start
        lies in ``(p - k, p]``. The same mask serves ``next_obs = window[:, 1:]`` because ``p + 1``
        is never an episode start for a valid transition: add_step writes ``p + 1`` as a
        non-start, and validity (``p + 1 < count``, history not overwritten) guarantees the slot
        has not been rewritten since. Positions before an env's first write (``p - k < 0``) are
        zeroed by the same rule, because position 0 is always an episode start (add_step refuses
        to run before add_reset) and lies in ``(p - k, p]``.
        """
        if self._stack == 1:
            return
        # starts[:, i] is the start flag of window frame i + 1 (positions p - stack + 2 .. p).
        starts = self._episode_start_flat[window_idx[:, 1 : self._stack]]
        # Frame i (i < stack - 1) is zeroed iff any start among frames i + 1 .. stack - 1, i.e.
        # a reversed cumulative OR of `starts`.
        zero = np.logical_or.accumulate(starts[:, ::-1], axis=1)[:, ::-1]
        window[:, : self._stack - 1][zero] = 0

    def _get_scratch(self, batch_size: int) -> SampleScratch:
        """Return (creating once) the preallocated output buffers for ``batch_size``."""
        scratch = self._scratch.get(batch_size)
        if scratch is None:
            scratch = allocate_scratch(batch_size, self._stack, self._frame_shape, self.obs_shape)
            self._scratch[batch_size] = scratch
        return scratch

    # ------------------------------------------------------------------ (de)serialisation

    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Everything needed to resume, as numpy arrays and ints (``np.savez``-able, no pickle).

        The arrays are the live storage, not copies (a 1M Atari buffer is ~7 GB): save them before
        the next write. The RNG state is a JSON string in a 0-d unicode array.
        """
        return replay_state(self._storage(), self._geometry(), self._rng)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (e.g. from ``np.load(path, allow_pickle=False)``) exactly.

        The arrays are copied into this buffer's storage, so the buffer must have been built with
        the same ``capacity``, ``num_envs``, ``frame_shape`` and ``stack``.
        """
        load_replay_state(self._storage(), self._geometry(), self._rng, state)

    def _geometry(self) -> Geometry:
        """``(capacity, num_envs, frame_shape, stack)``: what a state must have been saved with."""
        return (self._capacity, self._num_envs, self._frame_shape, self._stack)

    def _storage(self) -> dict[str, np.ndarray]:
        """The arrays that make up the buffer's state, by ``state_dict`` key."""
        return {
            "frames": self._frames,
            "actions": self._actions,
            "rewards": self._rewards,
            "terminals": self._terminals,
            "is_transition": self._is_transition,
            "episode_start": self._episode_start,
            "count": self._count,
            "num_valid": self._num_valid,
        }

    def _make_flat_views(self) -> None:
        """``(N * capacity_per_env, ...)`` views that flat ``env * cap + slot`` indices address."""
        n_slots = self._num_envs * self._cap
        self._frames_flat = self._frames.reshape(n_slots, *self._frame_shape)
        self._actions_flat = self._actions.reshape(n_slots)
        self._rewards_flat = self._rewards.reshape(n_slots)
        self._terminals_flat = self._terminals.reshape(n_slots)
        self._is_transition_flat = self._is_transition.reshape(n_slots)
        self._episode_start_flat = self._episode_start.reshape(n_slots)


def _check_config(capacity: int, num_envs: int, frame_shape: tuple[int, ...], stack: int) -> None:
    """Raise ``ValueError`` for sizes the buffer cannot represent."""
    if capacity < 1 or num_envs < 1 or stack < 1:
        raise ValueError(
            f"capacity, num_envs and stack must be >= 1, got {capacity}, {num_envs}, {stack}"
        )
    if len(frame_shape) not in (2, 3) or min(frame_shape) < 1:
        raise ValueError(
            f"frame_shape must be (H, W) or (C, H, W) of positive sizes, got {frame_shape}"
        )
