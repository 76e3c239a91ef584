"""Sparsity schedules as small pure functions (tested against hand-computed values)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cosine_decay", "gmp_sparsity", "imp_levels", "resolve_step"]

# A chain value within this distance of a target counts as having reached it, so that float error
# in 1 - (1 - f)^k (e.g. 1 - 0.5^2 landing a hair below 0.75) does not add a spurious round.
_LANDING_TOL = 1e-9


def gmp_sparsity(
    step: int, final: float, initial: float = 0.0, *, start_step: int, end_step: int
) -> float:
    """Gradual magnitude pruning target (Zhu & Gupta 2017) at ``step``.

    ``s(t) = s_T + (s_0 - s_T) * (1 - (t - t0) / (t1 - t0))^3`` for ``t0 <= t <= t1``; ``s_0``
    (``initial``) before ``t0`` and ``s_T`` (``final``) after ``t1``. The cubic prunes fast while
    there are many redundant weights and slowly near the end; Obando-Ceron et al. (2024) use
    ``t0 = 20%`` and ``t1 = 80%`` of training for DQN-family agents.

    Raises:
        ValueError: If ``end_step < start_step``.
    """
    if end_step < start_step:
        raise ValueError(f"end_step ({end_step}) must not precede start_step ({start_step})")
    if step < start_step:
        return initial
    if step >= end_step:
        return final
    remaining = 1.0 - (step - start_step) / (end_step - start_step)
    return final + (initial - final) * remaining**3


def resolve_step(value: float, total_steps: int) -> int:
    """An absolute step from a schedule boundary given as a fraction or as a step.

    Convention: ``0 <= value <= 1`` is a fraction of training, ``round(value * total_steps)``
    (so ``1`` or ``1.0`` means the end of training, never step 1); ``value > 1`` is an absolute
    agent step and must be a whole number (``200000`` or ``2e5``).

    Raises:
        ValueError: For a negative or non-finite value, or a non-integral absolute step.
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a schedule step must be a fraction in [0, 1] or a step > 1, got {value}")
    if value <= 1:
        return round(value * total_steps)
    if value != int(value):
        raise ValueError(f"an absolute schedule step must be a whole number, got {value}")
    return int(value)


def imp_levels(targets: Sequence[float], prune_fraction: float) -> list[float]:
    """Sparsity after each round of iterative magnitude pruning, landing on every target.

    Each round prunes ``prune_fraction`` of the REMAINING weights (Frankle & Carbin 2019), so
    from sparsity ``s`` the next level is ``1 - (1 - s)(1 - f)``; a level that would overshoot the
    next target is clamped to it, and the chain continues from there. E.g. targets
    ``[0.6, 0.7, 0.8]`` at ``f = 0.2`` give ``[0.2, 0.36, 0.488, 0.5904, 0.6, 0.68, 0.7, 0.76,
    0.8]``; reaching 0.6 takes 9 rounds at ``f = 0.1`` and 5 at ``f = 0.2``.

    Args:
        targets: Sparsities in ``(0, 1)`` at which tickets are wanted (sorted and de-duplicated).
        prune_fraction: Fraction in ``(0, 1)`` of the remaining weights pruned per round.

    Returns:
        Strictly increasing sparsities, one per round, the last being ``max(targets)``.

    Raises:
        ValueError: For a target or fraction outside ``(0, 1)``.
    """
    if not 0.0 < prune_fraction < 1.0:
        raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"IMP target sparsities must be in (0, 1), got {target}")
    levels: list[float] = []
    sparsity = 0.0
    for target in sorted(set(targets)):
        while sparsity < target:
            sparsity = 1.0 - (1.0 - sparsity) * (1.0 - prune_fraction)
            if sparsity >= target - _LANDING_TOL:
                sparsity = target
            levels.append(sparsity)
    return levels


def cosine_decay(step: int, initial: float, end_step: int) -> float:
    """``initial * 0.5 * (1 + cos(pi * step / end_step))`` before ``end_step``, 0 from then on.

    Graesser et al. (2022) decay SET's / RigL's drop fraction this way (as Evci et al. 2020), so
    the topology settles by the end of training. Steps before 0 count as 0.
    """
    if step >= end_step:
        return 0.0
    return initial * 0.5 * (1.0 + math.cos(math.pi * max(step, 0) / end_step))
