"""Metrics of trained agents: plasticity (dormant units, feature rank, norms, Q statistics).

A library layer: functions of plain tensors returning Python numbers; the runner logs them.
"""

from sparse_ticket.metrics.plasticity import (
    DEFAULT_TAUS,
    SRANK_DELTA,
    PlasticityProbe,
    dormant_ratio,
    dormant_ratios,
    encoder_activations,
    gradient_norm,
    parameter_norm,
    srank,
    unit_scores,
)

__all__ = [
    "DEFAULT_TAUS",
    "SRANK_DELTA",
    "PlasticityProbe",
    "dormant_ratio",
    "dormant_ratios",
    "encoder_activations",
    "gradient_norm",
    "parameter_norm",
    "srank",
    "unit_scores",
]
