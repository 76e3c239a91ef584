"""Dynamic sparse training: prune-and-regrow updates of a mask at constant per-layer density.

Both updates are pure: they read weights (and gradients) and return new masks, leaving the model
untouched. After an update the caller must

1. zero the regrown weights (Evci et al. 2020 and Graesser et al. 2022 start them at zero; they
   already are zero if pruned weights are kept at zero by :func:`~.masks.apply_mask_`), then
   apply the new mask so the dropped weights become zero, and
2. reset the optimiser state (e.g. Adam's moments) of the regrown positions, so that stale
   moments from before they were pruned do not move them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from sparse_ticket.sparsity.masks import Mask, MaskError, check_per_layer

__all__ = ["rigl_update", "set_update"]


def _drop_and_grow(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    drop_fraction: float,
    choose: Callable[[str, torch.Tensor, int], torch.Tensor],
) -> tuple[Mask, Mask]:
    """Shared skeleton: drop the smallest-|w| active weights, regrow as many via ``choose``.

    ``choose(name, candidates, n)`` gets the flat bool tensor of regrowth candidates and returns
    ``n`` flat indices among them.
    """
    if not 0.0 <= drop_fraction <= 1.0:
        raise MaskError(f"drop_fraction must be in [0, 1], got {drop_fraction}")
    check_per_layer(weights, "weight", mask)
    new_mask: Mask = {}
    regrown: Mask = {}
    for name, m in mask.items():
        before = m.reshape(-1).bool()
        active = int(torch.count_nonzero(before).item())
        n = round(drop_fraction * active)
        after = before.clone()
        grown = torch.zeros_like(before)
        if n > 0:
            # Drop: the n active weights of smallest magnitude (Mocanu et al. 2018); inactive ones
            # rank at +inf so they are never picked. A stable sort breaks ties by lower index.
            magnitude = weights[name].detach().to(m.device).abs().reshape(-1)
            magnitude = torch.where(before, magnitude, torch.full_like(magnitude, math.inf))
            after[torch.sort(magnitude, stable=True).indices[:n]] = False
            # Grow among positions inactive BEFORE the update, so a weight just dropped for being
            # small is not revived at once; with fewer than n such positions (a nearly dense
            # layer), any position inactive after the drop will do, so the active count stays
            # exact. That fallback is the candidate set of the original SET and RigL code.
            candidates = ~before
            if int(torch.count_nonzero(candidates).item()) < n:
                candidates = ~after
            index = choose(name, candidates, n)
            after[index] = True
            grown[index] = True
        new_mask[name] = after.reshape(m.shape)
        regrown[name] = grown.reshape(m.shape)
    return new_mask, regrown


def set_update(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    drop_fraction: float,
    generator: torch.Generator,
) -> tuple[Mask, Mask]:
    """One Sparse Evolutionary Training step (Mocanu et al. 2018): magnitude drop, random regrow.

    Per layer, ``n = round(drop_fraction * active_count)``: the ``n`` active weights of smallest
    ``|w|`` are dropped and ``n`` positions are activated uniformly at random among those that
    were inactive before this update (all inactive-after-drop positions if there are fewer than
    ``n``). The active count of every layer is unchanged exactly.

    Args:
        weights: Layer name -> weights of the mask layer's shape (not modified).
        mask: The current mask (not modified).
        drop_fraction: Fraction in ``[0, 1]`` of each layer's active weights to replace
            (0.3 in Graesser et al. 2022, cosine-decayed: :func:`~.schedules.cosine_decay`).
        generator: Source of the random regrowth; layers draw in mask order, so the same seed
            gives the same masks. Its device may differ from the mask's.

    Returns:
        ``(new_mask, regrown)``: bool masks of ``mask``'s layers, shapes and devices; ``regrown``
        marks the positions activated by this update (in the fallback case this can include a
        position dropped in the same update, which the caller then re-initialises too). The
        caller must zero regrown weights and reset their optimiser state (see module docstring).

    Raises:
        MaskError: For a drop fraction outside ``[0, 1]`` or a missing / misshapen weight.
    """

    def choose(name: str, candidates: torch.Tensor, n: int) -> torch.Tensor:
        pool = torch.nonzero(candidates).reshape(-1)
        order = torch.randperm(pool.numel(), generator=generator, device=generator.device)
        return pool[order[:n].to(pool.device)]

    return _drop_and_grow(weights, mask, drop_fraction, choose)


def rigl_update(
    weights: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    drop_fraction: float,
) -> tuple[Mask, Mask]:
    """One Rigged Lottery step (Evci et al. 2020): magnitude drop, gradient-magnitude regrow.

    The drop is that of :func:`set_update`; the ``n`` regrown positions are the candidates (as in
    :func:`set_update`) of largest ``|grad|``, where ``grads`` are the dense gradients of the loss
    w.r.t. the weights (pruned positions included). Ties go to the lower flat index.

    Args:
        weights: Layer name -> weights of the mask layer's shape (not modified).
        grads: Layer name -> dense gradients of the same shape.
        mask: The current mask (not modified).
        drop_fraction: Fraction in ``[0, 1]`` of each layer's active weights to replace.

    Returns:
        ``(new_mask, regrown)`` as for :func:`set_update`; the caller zeroes regrown weights and
        resets their optimiser state.

    Raises:
        MaskError: For a drop fraction outside ``[0, 1]``, a missing / misshapen weight or
            gradient, or a NaN gradient.
    """
    check_per_layer(grads, "gradient", mask)

    def choose(name: str, candidates: torch.Tensor, n: int) -> torch.Tensor:
        score = grads[name].detach().to(candidates.device).abs().reshape(-1)
        if torch.isnan(score).any():
            raise MaskError(f"gradient of {name!r} contains NaN")
        score = torch.where(candidates, score, torch.full_like(score, -math.inf))
        # Descending stable sort: among equal |grad| the lower index comes first.
        return torch.sort(score, descending=True, stable=True).indices[:n]

    return _drop_and_grow(weights, mask, drop_fraction, choose)
