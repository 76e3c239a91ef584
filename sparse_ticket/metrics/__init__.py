"""Metrics of trained agents: plasticity (dormant units, feature rank, norms, Q statistics).

A library layer: functions of plain tensors returning Python numbers; the runner logs them.
The package is its one module, :mod:`sparse_ticket.metrics.plasticity`, whose ``__all__`` it
re-exports (the names are listed once, there).
"""

from sparse_ticket.metrics import plasticity
from sparse_ticket.metrics.plasticity import *  # noqa: F403

__all__ = plasticity.__all__
