"""Experience replay: :class:`FrameReplay` stores each frame once, rebuilds stacks on sampling;
:class:`DeviceFrameReplay` also mirrors the frames on the training device and samples there."""

from sparse_ticket.replay.buffer import FrameReplay, ReplayBatch
from sparse_ticket.replay.device import DeviceFrameReplay

__all__ = ["DeviceFrameReplay", "FrameReplay", "ReplayBatch"]
