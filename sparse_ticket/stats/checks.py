"""Input checks shared by the statistics: matrices, bootstrap settings, the single-run warning.

Shapes follow rliable: a *score matrix* is ``(num_runs, num_tasks)``, a *curve matrix*
``(num_runs, num_steps)``. Every public function of :mod:`.scores` and :mod:`.area_ratios`
checks its inputs here first, so a malformed array fails with the same message everywhere.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["as_matrix", "check_bootstrap", "warn_single_run"]


def as_matrix(x: Any, name: str, what: str = "(num_runs, num_tasks)") -> np.ndarray:
    """``x`` as a finite float 2-D array with at least one row and column, else ``ValueError``.

    Args:
        x: array-like, expected of shape ``what``.
        name: how the error messages call ``x``.
        what: the expected shape, as the messages state it.

    Returns:
        ``x`` as a ``float64`` array of shape ``(rows >= 1, columns >= 1)``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        hint = " (for one task or one run, reshape to 2-D, e.g. x[:, None] or x[None])"
        raise ValueError(f"{name} must have shape {what}, got shape {arr.shape}{hint}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty with shape {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def check_bootstrap(reps: int, confidence: float) -> None:
    """``ValueError`` unless ``reps`` is a positive integer and ``confidence`` lies in (0, 1)."""
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def warn_single_run(name: str, num_runs: int, stacklevel: int = 3) -> None:
    """``RuntimeWarning`` when ``num_runs < 2``: the bootstrap CI then has zero width.

    ``stacklevel`` counts from this function: the default 3 points the warning at the caller
    of the public function that calls this one directly.
    """
    if num_runs < 2:
        warnings.warn(
            f"{name} has a single run: every bootstrap resample equals the data, so the "
            "confidence interval has zero width; use several seeds",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
