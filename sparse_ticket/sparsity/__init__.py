"""Sparsity: masks as data, per-layer allocation, pruning schedules and dynamic sparse training.

See ``docs/protocol.md`` for the protocol (IMP, GMP, SET, allocation). Everything here is a
library layer: pure functions of tensors, no experiment tracking.
"""

from sparse_ticket.sparsity.allocation import (
    DENSITY_METHODS,
    keep_counts,
    layer_densities,
    magnitude_prune,
    random_like,
    random_mask,
    shapes_of,
)
from sparse_ticket.sparsity.dynamic import rigl_update, set_update
from sparse_ticket.sparsity.masks import (
    Mask,
    MaskError,
    apply_mask_,
    architecture_fingerprint,
    check_compatible,
    content_hash,
    dense_mask,
    load_mask,
    mask_multipliers,
    overlap,
    prunable_names,
    role_sparsity,
    save_mask,
    sparsity_report,
)
from sparse_ticket.sparsity.schedules import cosine_decay, gmp_sparsity, imp_levels, resolve_step

__all__ = [
    "DENSITY_METHODS",
    "Mask",
    "MaskError",
    "apply_mask_",
    "architecture_fingerprint",
    "check_compatible",
    "content_hash",
    "cosine_decay",
    "dense_mask",
    "gmp_sparsity",
    "imp_levels",
    "keep_counts",
    "layer_densities",
    "load_mask",
    "magnitude_prune",
    "mask_multipliers",
    "overlap",
    "prunable_names",
    "random_like",
    "random_mask",
    "resolve_step",
    "rigl_update",
    "role_sparsity",
    "save_mask",
    "set_update",
    "shapes_of",
    "sparsity_report",
]
