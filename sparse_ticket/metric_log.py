"""Where a run's metrics wait between two flushes, and the sink they are handed to.

A run produces metric points in three ways: as they happen (episode scores, evaluations,
sparsity and plasticity figures), as device-side update statistics (one dict of 0-d tensors per
update, reduced only at a flush: reading a tensor is a host synchronisation), and as the figures
of a logging interval (steps/s, the mean update statistics). :class:`MetricLog` holds all three
until :meth:`MetricLog.flush` hands them to a :class:`MetricSink` in one batch (an sqlite
tracking store costs ~20 ms per call). Tracking itself is not the library's business: the MLflow
layer implements the sink (``sparse_ticket_mlflow/tracking.py``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from sparse_ticket.types import Metric

__all__ = ["MetricLog", "MetricSink", "NullSink"]


class MetricSink(Protocol):
    """Where the runner's metrics and checkpoints go (the MLflow layer implements it)."""

    def write(self, metrics: list[Metric]) -> None:
        """Record one logging interval's metrics (one call per interval)."""

    def on_checkpoint(self, path: Path, step: int) -> None:
        """A complete checkpoint for ``step`` now exists at ``path``."""

    def on_evaluation(self, history: list[dict[str, Any]]) -> None:
        """The evaluation history so far: ``[{"step": s, "scores": [...]}, ...]``."""


class NullSink:
    """Discards everything (library use and benchmarks)."""

    def write(self, metrics: list[Metric]) -> None:
        pass

    def on_checkpoint(self, path: Path, step: int) -> None:
        pass

    def on_evaluation(self, history: list[dict[str, Any]]) -> None:
        pass


class MetricLog:
    """The metrics of one run since the last flush.

    Args:
        sink: Where :meth:`flush` hands them.
    """

    def __init__(self, sink: MetricSink) -> None:
        self.sink = sink
        self.pending: list[Metric] = []
        """Points waiting for the next flush, in the order they happened."""
        self.update_stats: list[dict[str, torch.Tensor]] = []
        """The device-side metrics of each update of the interval (reduced at the flush)."""
        self.interval_start = (0, time.perf_counter())
        """``(agent step, perf_counter time)`` of the interval's start (for steps/s)."""

    def add(self, key: str, value: float, step: int) -> None:
        """One metric point at agent step ``step``."""
        self.pending.append((key, value, step))

    def extend(self, points: list[Metric]) -> None:
        """Points computed elsewhere (a sparsity controller's, say)."""
        self.pending.extend(points)

    def start_interval(self, step: int) -> None:
        """Start a logging interval at ``step`` now (its steps/s is measured from here)."""
        self.interval_start = (step, time.perf_counter())

    def flush(self, step: int, updates: int, epsilon: float | None) -> None:
        """Reduce the interval's update stats (one host sync) and hand all points to the sink.

        The per-interval figures are written once per step: a second flush at the same step
        (a log and a checkpoint interval that coincide, or the final evaluation) only hands on
        what is pending, so no point is logged twice.

        Args:
            step: The current agent step.
            updates: Gradient updates so far (``train/updates``).
            epsilon: The exploration epsilon of the last collected step, None before any.
        """
        start_step, start_time = self.interval_start
        now = time.perf_counter()
        if step > start_step:
            self.add("perf/steps_per_sec", (step - start_step) / max(now - start_time, 1e-9), step)
            self._reduce_update_stats(step)
            if epsilon is not None:
                self.add("train/epsilon", epsilon, step)
            self.add("train/updates", float(updates), step)
            self.add("progress/step", float(step), step)
            self.interval_start = (step, now)
        if self.pending:
            self.sink.write(self.pending)
            self.pending = []

    def _reduce_update_stats(self, step: int) -> None:
        """``train/<key>``: the interval's mean of each update metric (non-finite means dropped)."""
        if not self.update_stats:
            return
        for key in self.update_stats[0]:
            mean = torch.stack([s[key] for s in self.update_stats]).float().mean().item()
            if math.isfinite(mean):
                self.add(f"train/{key}", mean, step)
        self.update_stats = []
