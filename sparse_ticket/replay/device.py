"""A :class:`FrameReplay` with a copy of its frames on the training device, to sample there.

Why: a batch-32 Atari update reads ``obs`` and ``next_obs`` of shape ``(32, 4, 84, 84)`` uint8,
``2 * 32 * 4 * 84 * 84`` bytes = 1.8 MB. Built on the host (:meth:`FrameReplay.sample`), that is a
host gather plus a 1.8 MB host->device copy per update (from pageable memory, so the host also
waits for the device stream), and a batch-32 update is small enough on a modern GPU that this copy
dominates it. :class:`DeviceFrameReplay` keeps a copy of every stored frame on the device and
gathers the window ``p - stack + 1 .. p + 1`` of each sampled transition there (one
``index_select``); only small arrays cross the bus per batch, packed into one asynchronous
transfer: the window indices (``B * (stack + 1)`` int64), the actions (int64), rewards and
terminals (float32) of the ``B`` transitions and the earlier-episode mask (``B * (stack - 1)``
bools), under 2 KB at batch 32 with ``stack = 4``. Each write sends its ``N`` new frames and their
slot indices in one transfer as well (``N * 7`` KB for Atari).

Cost: frames are held twice, on the host (numpy, unchanged: checkpoints, :meth:`state_dict` and
the sampling metadata use it) and on the device (``num_envs * capacity_per_env * prod(frame_shape)``
bytes: ~7.06 GB for a 1M-transition Atari buffer of ``(84, 84)`` frames, ~100 MB for a 100k
MinAtar buffer of ``(10, 10, 10)`` frames). Unlike the lazily mapped host array, the device
mirror is allocated and zeroed up front. :meth:`DeviceFrameReplay.fits` tells a runner whether
the mirrors fit, so it can fall back to :class:`FrameReplay` when they do not.

Equivalence: sampling draws with exactly the host RNG calls of :meth:`FrameReplay.sample`, gathers
the same window and zeroes the same earlier-episode frames, so for the same seed and the same
``add_reset`` / ``add_step`` calls the batch is bit-identical to :class:`FrameReplay`'s and the RNG
stream advances identically. Writes (``add_reset``, ``add_step``, ``load_state_dict``) update the
host arrays first and then the mirror.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sparse_ticket.replay.buffer import FrameReplay, ReplayBatch

__all__ = ["DeviceFrameReplay"]

_ALIGN = 8
"""Byte alignment of each array packed into one host->device transfer (the largest itemsize)."""


class DeviceFrameReplay(FrameReplay):
    """:class:`FrameReplay` that samples on ``device`` from a device mirror of the frames.

    Everything of :class:`FrameReplay` stays on the host (frames, metadata, sampling RNG,
    :meth:`state_dict`); in addition ``_device_frames`` holds the frames in the flat layout of
    ``_frames_flat``, ``(num_envs * capacity_per_env, *frame_shape)`` uint8 on ``device``.

    Unlike :class:`FrameReplay`, the tensors of a sampled batch are freshly allocated on each
    call: they are not overwritten by later samples.

    ``device="cpu"`` works (the tests use it to check equivalence) but gains nothing over
    :class:`FrameReplay` and holds the frames twice: on a CPU run use :class:`FrameReplay`.

    Args:
        capacity: Total slots over all envs (see :class:`FrameReplay`).
        num_envs: Number of parallel envs ``N``.
        frame_shape: ``(H, W)`` (Atari) or ``(C, H, W)`` (MinAtar).
        stack: Frames per observation.
        seed: Seed of the (host) sampling RNG.
        device: Where the frame mirror lives and batches are returned (``"cuda"``, ``"cpu"``...).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, ...],
        stack: int,
        seed: int,
        device: torch.device | str,
    ) -> None:
        super().__init__(capacity, num_envs, frame_shape, stack, seed)
        self._device = torch.device(device)
        self._pin = self._device.type == "cuda"
        self._device_frames = torch.zeros(
            (self._num_envs * self._cap, *self._frame_shape), dtype=torch.uint8, device=self._device
        )

    # ------------------------------------------------------------------ sizing

    @property
    def device(self) -> torch.device:
        """The device of the frame mirror and of sampled batches."""
        return self._device

    @property
    def device_nbytes(self) -> int:
        """Bytes of the device frame mirror (the host storage is counted by ``nbytes``)."""
        return self._device_frames.numel()

    @staticmethod
    def mirror_nbytes(capacity: int, num_envs: int, frame_shape: Sequence[int]) -> int:
        """Bytes of the device mirror for this size: ``N * ceil(capacity / N)`` frames."""
        return num_envs * math.ceil(capacity / num_envs) * math.prod(int(d) for d in frame_shape)

    @classmethod
    def fits(
        cls,
        capacity: int,
        num_envs: int,
        frame_shape: Sequence[int],
        device: torch.device | str,
        members: int = 1,
        headroom: float = 0.5,
    ) -> bool:
        """Whether ``members`` mirrors of this size fit in ``headroom`` of ``device``'s free memory.

        On CUDA the free memory is ``torch.cuda.mem_get_info(device)[0]`` (memory the caching
        allocator already holds but does not use counts as taken). Other devices report no free
        memory, so they are assumed to fit (on CPU the mirror is host memory, like the buffer).

        Args:
            capacity, num_envs, frame_shape: As for the constructor.
            device: The training device.
            members: How many such buffers will coexist on the device (e.g. population members).
            headroom: Fraction of the free memory the mirrors may take, in ``(0, 1]``; the rest is
                left for networks, optimiser state and activations.
        """
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if not 0.0 < headroom <= 1.0:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        device = torch.device(device)
        if device.type != "cuda":
            return True
        free, _total = torch.cuda.mem_get_info(device)
        return members * cls.mirror_nbytes(capacity, num_envs, frame_shape) <= headroom * free

    # ------------------------------------------------------------------ writing

    def _write(self, rows: np.ndarray, frames: np.ndarray, episode_start: bool) -> None:
        """Write on the host (:meth:`FrameReplay._write`), then copy the rows into the mirror."""
        flat = rows * self._cap + self._count[rows] % self._cap  # read before super bumps count
        super()._write(rows, frames, episode_start)
        if flat.size == 0:
            return
        index, values = self._upload([flat.astype(np.int64, copy=False), frames])
        self._device_frames.index_copy_(0, index, values)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of this class or of :class:`FrameReplay`) and re-upload
        the whole frames array to the mirror."""
        super().load_state_dict(state)
        self._device_frames.copy_(torch.from_numpy(self._frames_flat))

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> ReplayBatch:
        """Draw ``batch_size`` transitions exactly as :meth:`FrameReplay.sample`, built on device.

        Returns:
            A :class:`ReplayBatch` on :attr:`device`: ``obs`` and ``next_obs`` ``(B, F, H, W)``
            uint8 (views of one freshly allocated ``(B, stack + 1, *frame_shape)`` window),
            ``actions`` ``(B,)`` int64, ``rewards`` and ``terminals`` ``(B,)`` float32.

        Raises:
            ValueError: if the buffer holds no valid transition or ``batch_size < 1``.
        """
        window_idx = self._draw_windows(batch_size, rng or self._rng)  # as FrameReplay.sample
        start = window_idx[:, self._stack - 1]
        host = [
            window_idx.ravel(),
            self._actions_flat[start].astype(np.int64),
            self._rewards_flat[start],
            self._terminals_flat[start].astype(np.float32),
        ]
        if self._stack > 1:
            host.append(self._earlier_episode_mask(window_idx))
        index, actions, rewards, terminals, *zero = self._upload(host)
        window = self._device_frames.index_select(0, index)
        window = window.view(batch_size, self._stack + 1, *self._frame_shape)
        if zero:
            # masked_fill_ with a broadcast mask, not window[mask] = 0: boolean indexing would
            # synchronise the device to count the selected frames.
            mask = zero[0].view(batch_size, self._stack - 1, *(1 for _ in self._frame_shape))
            window[:, : self._stack - 1].masked_fill_(mask, 0)
        obs_shape = (batch_size, *self.obs_shape)
        return ReplayBatch(
            obs=window[:, : self._stack].view(obs_shape),
            actions=actions,
            rewards=rewards,
            next_obs=window[:, 1:].view(obs_shape),
            terminals=terminals,
        )

    def _earlier_episode_mask(self, window_idx: np.ndarray) -> np.ndarray:
        """``(B, stack - 1)`` bool: which of frames ``p - stack + 1 .. p - 1`` to zero.

        The mask of :meth:`FrameReplay._zero_earlier_episodes` (see there): frame ``i`` is zeroed
        iff an episode starts among frames ``i + 1 .. stack - 1`` of the window.
        """
        starts = self._episode_start_flat[window_idx[:, 1 : self._stack]]
        return np.logical_or.accumulate(starts[:, ::-1], axis=1)[:, ::-1]

    def _upload(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Move ``arrays`` to :attr:`device` in a single copy; returns them with dtypes and shapes.

        The arrays are packed, each at an 8-byte aligned offset, into one uint8 host buffer (a
        pinned one from torch's caching host allocator on CUDA, so the copy is asynchronous and the
        buffer is not reused before the copy has run), copied once, and viewed back on device.
        On CPU the returned tensors are views of the fresh host buffer.
        """
        offsets = []
        total = 0
        for array in arrays:
            total = -(-total // _ALIGN) * _ALIGN
            offsets.append(total)
            total += array.nbytes
        if self._pin:
            staging = torch.empty(total, dtype=torch.uint8, pin_memory=True)
            staging_np = staging.numpy()
        else:
            staging_np = np.empty(total, dtype=np.uint8)
            staging = torch.from_numpy(staging_np)
        for array, offset in zip(arrays, offsets, strict=True):
            part = staging_np[offset : offset + array.nbytes].view(array.dtype)
            part.reshape(array.shape)[...] = array
        moved = staging.to(self._device, non_blocking=self._pin)
        return [
            moved[offset : offset + array.nbytes].view(_torch_dtype(array.dtype)).view(array.shape)
            for array, offset in zip(arrays, offsets, strict=True)
        ]


@functools.cache
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype (e.g. ``int64 -> torch.int64``, ``bool -> torch.bool``)."""
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
