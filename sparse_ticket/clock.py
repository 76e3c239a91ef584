"""The run's clock: pure functions of the agent step (the exploration schedule, and when periodic
work is due), tested against hand-computed values. Sparsity schedules: ``sparsity/schedules.py``.
"""

from __future__ import annotations


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """Linear interpolation from ``start`` at step 0 to ``end`` at ``duration``, then constant.

    The exploration schedule of Mnih et al. (2015) and CleanRL's ``linear_schedule``.
    """
    if duration <= 0 or step >= duration:
        return end
    return start + max(step, 0) / duration * (end - start)


def crossed(previous: int, current: int, every: int) -> bool:
    """True if a multiple of ``every`` lies in (previous, current]; False when every <= 0.

    A vector env advances the step counter by ``num_envs`` at a time, so periodic events
    (target sync, evaluation, logging, checkpoints) fire on crossing a boundary, not on equality.
    """
    return every > 0 and current // every > previous // every
