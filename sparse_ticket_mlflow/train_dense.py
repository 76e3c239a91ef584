"""The ``train-dense`` entry point: a dense DDQN / DQV / DQV-Max agent on one game.

The run lifecycle (validation, opening, checkpoints, resume) is :mod:`sparse_ticket_mlflow.runs`.
"""

from __future__ import annotations

from sparse_ticket_mlflow.contracts import TRAIN_DENSE, Tag
from sparse_ticket_mlflow.runs import (
    TrainRequest,
    build_config,
    new_training_run,
    resumable_run,
    resume,
)

ENTRY_POINT = TRAIN_DENSE


def train_dense(request: TrainRequest) -> int:
    """Run the entry point; returns the process exit code."""
    run_id = resumable_run(request)
    if run_id:
        return resume(request, run_id)
    config = build_config(request)
    return new_training_run(request, config, {Tag.ENTRY_POINT: ENTRY_POINT})
