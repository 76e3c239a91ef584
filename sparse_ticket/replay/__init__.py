"""Experience replay: :class:`FrameReplay` stores each frame once, rebuilds stacks on sampling."""

from sparse_ticket.replay.buffer import FrameReplay, ReplayBatch

__all__ = ["FrameReplay", "ReplayBatch"]
