"""How many weights each layer keeps: uniform and ERK allocations, magnitude pruning, random masks.

Counting convention everywhere: a layer of ``n`` weights at density ``d`` keeps
``round(d * n)`` weights (Python's ``round``: halves go to the even integer), so realised
sparsities are exact functions of the shapes and can be tested by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sparse_ticket.config import ALLOCATIONS
from sparse_ticket.sparsity.masks import Mask, MaskError, by_role, check_per_layer

__all__ = [
    "DENSITY_METHODS",
    "keep_counts",
    "layer_densities",
    "magnitude_prune",
    "random_like",
    "random_mask",
    "shapes_of",
]

DENSITY_METHODS = tuple(name for name in ALLOCATIONS if name != "global")
"""Per-layer density rules of :func:`layer_densities` (``config.ALLOCATIONS``, one global
ranking aside: :func:`magnitude_prune` takes either)."""


def shapes_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Name -> shape as a plain tuple (of a mask, parameters or scores)."""
    return {name: tuple(int(d) for d in t.shape) for name, t in tensors.items()}


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise MaskError(f"sparsity must be in [0, 1), got {sparsity}")


def layer_densities(
    shapes: Mapping[str, tuple[int, ...]], sparsity: float, method: str
) -> dict[str, float]:
    """Fraction of weights each layer keeps so that the whole set has ``sparsity``.

    Args:
        shapes: Layer name -> weight shape, conv ``(out, in, kh, kw)`` or linear ``(out, in)``.
        sparsity: Target overall sparsity in ``[0, 1)``.
        method: ``"uniform"``: every layer at density ``1 - sparsity``. ``"erk"``:
            Erdős–Rényi-Kernel (Evci et al. 2020, RigL): density_l = eps * sum(shape_l) /
            prod(shape_l), i.e. ``(out + in + kh + kw) / (out * in * kh * kw)`` for a conv and
            ``(out + in) / (out * in)`` for a linear layer, with one ``eps`` chosen so that the
            kept weights total ``(1 - sparsity) * N``. A layer whose density would exceed 1 is made
            dense and ``eps`` is re-solved for the others, repeating until no density exceeds 1
            (the loop of ``get_sparsities`` in google-research/rigl ``sparse_utils.py``, which
            caps the layers of largest raw density one round at a time).

    Returns:
        Layer name -> density in ``(0, 1]``, in the order of ``shapes``.

    Raises:
        MaskError: For an unknown method or a sparsity outside ``[0, 1)``.
    """
    if method not in DENSITY_METHODS:
        raise MaskError(f"unknown allocation {method!r} (one of {', '.join(DENSITY_METHODS)})")
    _check_sparsity(sparsity)
    if method == "uniform" or sparsity == 0.0:
        return {name: 1.0 - sparsity for name in shapes}

    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    eps = 0.0
    while len(dense) < len(shapes):
        # Solve eps * sum_{sparse} raw_l * n_l = (1 - s) * N - sum_{dense} n_l: the dense layers
        # use up their full size of the budget, the others share the rest in proportion to raw_l.
        budget = (1.0 - sparsity) * sum(sizes.values()) - sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        eps = budget / divisor
        largest = max(raw[n] for n in shapes if n not in dense)
        if largest * eps <= 1.0:
            break
        # Only the layers at the largest raw density are capped per round (as in RigL): capping
        # frees budget, so eps shrinks and the next-largest layers may then fit.
        dense.update(n for n in shapes if n not in dense and raw[n] == largest)
    return {name: 1.0 if name in dense else raw[name] * eps for name in shapes}


def keep_counts(
    shapes: Mapping[str, tuple[int, ...]], densities: Mapping[str, float]
) -> dict[str, int]:
    """Integer number of weights each layer keeps: ``round(density * n)``, clamped to ``[0, n]``.

    Rounding is Python's ``round`` (half to even), per layer, so the total may differ from
    ``(1 - s) * N`` by at most half a weight per layer.

    Raises:
        MaskError: If a layer has no density or a density is outside ``[0, 1]``.
    """
    counts: dict[str, int] = {}
    for name, shape in shapes.items():
        if name not in densities:
            raise MaskError(f"layer {name!r} has no density")
        density = densities[name]
        if not 0.0 <= density <= 1.0:
            raise MaskError(f"layer {name!r} has density {density}, expected a value in [0, 1]")
        n = math.prod(shape)
        counts[name] = min(max(round(density * n), 0), n)
    return counts


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the ``count`` smallest entries of 1-d ``scores``; ties go to the lower index.

    A stable ascending sort keeps equal scores in index order, which makes pruning reproducible
    across runs and devices (``topk`` documents no tie order).
    """
    return torch.sort(scores, stable=True).indices[:count]


def magnitude_prune(
    scores: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    sparsity: float,
    allocation: str,
) -> Mask:
    """A new mask at ``sparsity`` that keeps the largest ``|score|`` and only ever removes weights.

    Every network role (``q``, and ``v`` for DQV) is pruned on its own to ``sparsity``: one
    ranking over Q's and V's weights together would let either network end far from the level
    (their weight scales differ), so each role keeps its own share (issue 12).

    Already-pruned weights rank below every active one (their score counts as ``-inf``), so they
    stay pruned: iterative magnitude pruning (Frankle & Carbin 2019) calls this once per round
    with the trained weights as ``scores`` and the previous round's mask.

    Args:
        scores: Layer name -> scores of the layer's shape (usually the weights); every mask layer
            must have one. Moved to each mask layer's device.
        mask: The current mask (not modified).
        sparsity: Target sparsity in ``[0, 1)``, not below the mask's current sparsity.
        allocation: ``"global"``: one ranking across all layers of a network role (the prior
            study), exactly ``round(sparsity * N_role)`` weights pruned per role. ``"uniform"``
            / ``"erk"``: each layer keeps ``keep_counts(shapes, layer_densities(shapes,
            sparsity, allocation))`` weights (ERK solved per role), clamped to its current
            active count (a layer never regains weights).

    Returns:
        The new bool mask, same layers, order and devices as ``mask``. Ties in ``|score|`` prune
        the lower flat index first (the global ranking concatenates layers in mask order).

    Raises:
        MaskError: For an unknown allocation, a sparsity outside ``[0, 1)`` or below the current
            sparsity by more than rounding (half a weight per layer), missing / misshapen / NaN
            scores.
    """
    if allocation not in ALLOCATIONS:
        raise MaskError(f"unknown allocation {allocation!r} (one of {', '.join(ALLOCATIONS)})")
    _check_sparsity(sparsity)
    pruned: Mask = {}
    for group in by_role(mask).values():
        pruned.update(_prune_group(scores, group, sparsity, allocation))
    return {name: pruned[name] for name in mask}


def _prune_group(
    scores: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    sparsity: float,
    allocation: str,
) -> Mask:
    """:func:`magnitude_prune` of the layers of one network role."""
    _check_sparsity(sparsity)
    check_per_layer(scores, "score", mask)

    total = sum(m.numel() for m in mask.values())
    pruned_now = total - sum(int(torch.count_nonzero(m).item()) for m in mask.values())
    if pruned_now - sparsity * total > 0.5 * len(mask) + 1e-9:
        raise MaskError(
            f"cannot prune to sparsity {sparsity}: the mask is already at "
            f"{pruned_now / total:.6g} and pruning never revives weights"
        )

    # Active weights rank by |score|; pruned ones at -inf so they are removed first and stay out.
    ranked: dict[str, torch.Tensor] = {}
    for name, m in mask.items():
        s = scores[name].detach().to(m.device).abs().reshape(-1)
        if torch.isnan(s).any():
            raise MaskError(f"score of {name!r} contains NaN")
        ranked[name] = torch.where(m.reshape(-1).bool(), s, torch.full_like(s, -math.inf))

    new_mask: Mask = {}
    if allocation == "global":
        # A clamp to the current count absorbs per-layer rounding of an earlier non-global prune.
        n_prune = max(round(sparsity * total), pruned_now)
        if not mask:
            return new_mask
        device = next(iter(mask.values())).device
        flat = torch.cat([r.to(device) for r in ranked.values()])
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=device)
        keep[_lowest(flat, n_prune)] = False
        for (name, m), part in zip(
            mask.items(), keep.split([m.numel() for m in mask.values()]), strict=True
        ):
            new_mask[name] = part.reshape(m.shape).to(m.device)
        return new_mask

    shapes = shapes_of(mask)
    counts = keep_counts(shapes, layer_densities(shapes, sparsity, allocation))
    for name, m in mask.items():
        active = int(torch.count_nonzero(m).item())
        keep_n = min(counts[name], active)
        keep = torch.ones(m.numel(), dtype=torch.bool, device=m.device)
        keep[_lowest(ranked[name], m.numel() - keep_n)] = False
        new_mask[name] = keep.reshape(m.shape)
    return new_mask


def random_mask(
    shapes: Mapping[str, tuple[int, ...]],
    densities: Mapping[str, float],
    generator: torch.Generator,
) -> Mask:
    """A mask keeping exactly ``keep_counts(shapes, densities)[l]`` uniformly random positions.

    Layers are drawn in the order of ``shapes`` from ``generator`` (same seed -> same mask); the
    tensors are on the generator's device.
    """
    mask: Mask = {}
    for name, count in keep_counts(shapes, densities).items():
        n = math.prod(shapes[name])
        flat = torch.zeros(n, dtype=torch.bool, device=generator.device)
        flat[torch.randperm(n, generator=generator, device=generator.device)[:count]] = True
        mask[name] = flat.reshape(shapes[name])
    return mask


def random_like(template: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
    """The random-ticket control (Frankle & Carbin 2019): ``template``'s per-layer active counts
    at uniformly random positions.

    Layers are drawn in ``template``'s order from ``generator``; each result is on its template
    layer's device.
    """
    mask: Mask = {}
    for name, m in template.items():
        count = int(torch.count_nonzero(m).item())
        flat = torch.zeros(m.numel(), dtype=torch.bool, device=generator.device)
        flat[torch.randperm(m.numel(), generator=generator, device=generator.device)[:count]] = True
        mask[name] = flat.reshape(m.shape).to(m.device)
    return mask
