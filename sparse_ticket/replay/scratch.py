"""Preallocated output of :meth:`FrameReplay.sample`, one set per batch size.

A sampled batch's ``obs`` and ``next_obs`` are views of one uint8 window per batch size, filled
in place by every sample of that size, so the hot path of training allocates nothing large.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class SampleScratch(NamedTuple):
    """Preallocated per-batch-size output, so sampling does no large allocation (glibc mmaps
    anything above ~128 KiB afresh and that costs ~1 ms, ten times the rest of a sample)."""

    window: np.ndarray
    """``(B, stack + 1, *frame_shape)`` uint8: frames ``p - stack + 1 .. p + 1`` per transition."""
    window_rows: np.ndarray
    """``(B * (stack + 1), *frame_shape)`` view of ``window``, the ``out=`` of ``np.take``."""
    obs: torch.Tensor
    """``(B, F, H, W)`` view of ``window[:, :stack]``."""
    next_obs: torch.Tensor
    """``(B, F, H, W)`` view of ``window[:, 1:]``."""


def allocate_scratch(
    batch_size: int, stack: int, frame_shape: tuple[int, ...], obs_shape: tuple[int, ...]
) -> SampleScratch:
    """The zeroed window of ``batch_size`` transitions and its views (``obs_shape``: one obs)."""
    window = np.zeros((batch_size, stack + 1, *frame_shape), dtype=np.uint8)
    batch_obs_shape = (batch_size, *obs_shape)
    window_t = torch.from_numpy(window)
    return SampleScratch(
        window=window,
        window_rows=window.reshape(-1, *frame_shape),
        # .view (not .reshape) so that a layout needing a copy raises instead of
        # returning tensors that later refills of `window` would not reach.
        obs=window_t[:, :stack].view(batch_obs_shape),
        next_obs=window_t[:, 1:].view(batch_obs_shape),
    )
