"""Transfer of a sparse encoder to a target game (Sabatelli & Geurts 2021).

The encoder (its weights and its mask) comes from the source; the value head is re-initialised
for the target's action set, whose size differs between games. The pieces here are pure
functions on masks and ``{role: state_dict}`` weights; the runner does the rest through its
``initial_weights`` (partial: encoder tensors only) and ``initial_mask`` arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from sparse_ticket.config import SparsityConfig
from sparse_ticket.sparsity.allocation import random_like
from sparse_ticket.sparsity.masks import Mask, sparsity_report

if TYPE_CHECKING:
    from sparse_ticket.agents import Agent

ADAPT_REGIMES = {"none": "static", "gmp": "gmp", "set": "set", "rigl": "rigl"}
WEIGHT_MODES = ("ticket", "trained", "reinit")


def is_encoder(name: str) -> bool:
    """``"q.encoder.conv1.weight"`` -> True; heads (``"q.head.weight"``) -> False."""
    parts = name.split(".")
    return len(parts) > 2 and parts[1] == "encoder"


def encoder_mask(mask: Mapping[str, torch.Tensor]) -> Mask:
    """The encoder entries of a mask: a head mask cannot follow a head that is re-initialised."""
    return {name: keep for name, keep in mask.items() if is_encoder(name)}


def encoder_weights(weights: Mapping[str, Mapping[str, torch.Tensor]]) -> dict:
    """``{role: {encoder.*: tensor}}``: what a transfer carries over from the source."""
    return {
        role: {name: t for name, t in sd.items() if name.startswith("encoder.")}
        for role, sd in weights.items()
    }


def merge_weights(agent: Agent, partial: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The agent's own weights with every tensor ``partial`` names replaced.

    A transfer passes only encoder tensors: the value head keeps the target's fresh init
    (Sabatelli & Geurts 2021 re-initialise it for the target's action set).
    """
    merged = agent.weights_state_dict()
    for role, tensors in partial.items():
        if role not in merged:
            raise ValueError(f"weights for role {role!r}, the agent has {sorted(merged)}")
        merged[role].update(tensors)
    return merged


def adapt_config(sparsity: SparsityConfig, adapt: str, mask: Mask, final: float | None) -> None:
    """Set the target run's sparsity regime for ``adapt`` (in place).

    ``none`` keeps the transferred mask fixed; ``gmp`` prunes further from the mask's sparsity
    to ``final`` (Zhu & Gupta 2017); ``set``/``rigl`` rewire at the mask's sparsity.
    """
    if adapt not in ADAPT_REGIMES:
        raise ValueError(f"unknown adapt regime {adapt!r} ({', '.join(ADAPT_REGIMES)})")
    level = sparsity_report(mask)["overall"]
    sparsity.regime = ADAPT_REGIMES[adapt]
    if adapt == "gmp":
        if final is None or final < level - 1e-9:
            raise ValueError(
                f"final_sparsity {final} is below the transferred mask's sparsity {level:.4f}"
            )
        sparsity.sparsity = final
    else:
        sparsity.sparsity = level


def final_sparsity(sparsity: SparsityConfig, mask: Mask) -> float:
    """The sparsity a transfer run ends at: GMP's final level, else the transferred mask's
    (static, SET and RigL keep it). Baselines are matched at this level."""
    return sparsity.sparsity if sparsity.regime == "gmp" else sparsity_report(mask)["overall"]


# Baselines on the target alone, against which a transfer is compared (docs/protocol.md).
BASELINES = ("dense", "gmp", "set", "rigl", "random")


def baseline_config(
    sparsity: SparsityConfig, baseline: str, level: float | None, mask: Mask | None, seed: int
) -> Mask | None:
    """Set a baseline's sparsity regime (in place); returns the mask it starts from, if any.

    ``dense``: no sparsity. ``gmp``, ``set``, ``rigl``: that regime at ``level`` (the
    transfer's sparsity), from a fresh init. ``random``: a static random mask with ``mask``'s
    per-layer densities, drawn from ``torch.Generator().manual_seed(seed)`` (Frankle & Carbin
    2019's random-pruning control, on the target); without a mask, the configured allocation
    draws one at ``level``.
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r} ({', '.join(BASELINES)})")
    if baseline == "dense":
        sparsity.regime = "dense"
        return None
    if level is None:
        raise ValueError(f"baseline {baseline} needs a mask or a final sparsity")
    sparsity.regime, sparsity.sparsity = ("static" if baseline == "random" else baseline), level
    if baseline == "random" and mask is not None:
        return random_like(mask, torch.Generator().manual_seed(seed))
    return None
