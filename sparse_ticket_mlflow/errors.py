"""User-facing errors: one line on stderr, never a traceback; exit code 2 for bad input, 1 for
a run that failed for a reason outside it (a full disk) and can be resumed."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (an argument, a preset, a run id, a checkpoint)."""


class RunFailed(Exception):
    """A run that could not go on (its disk filled up); it ends FAILED and can be resumed."""


EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run checkpointed and can be requeued and resumed


def parse_int(text: str, name: str, minimum: int | None = None) -> int:
    """``text`` as an int, or InputError naming the parameter."""
    try:
        value = int(str(text).strip().replace("_", ""))
    except ValueError:
        raise InputError(f"{name} must be an integer, got {text!r}") from None
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return value
