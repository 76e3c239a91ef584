"""The MLflow side of a run: provenance, batched metrics, artifacts and run status.

Artifact contract of a training run (later entry points read these by ``runs:/<id>/...``)::

    config.json                 the full flattened config (also logged as params)
    environment.json            python, platform, package versions, git commit
    evaluations.json            every evaluation: [{"step": s, "scores": [...raw scores]}]
    checkpoints/init.pt         online weights at step 0 ({"q": state_dict, ...}), for rewinding
    checkpoints/final.pt        online weights at the end
    checkpoints/latest/         the newest complete checkpoint without its replay buffer
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import Param, RunStatus, RunTag

from sparse_ticket.types import Metric
from sparse_ticket_mlflow.contracts import CHECKPOINTS, CONFIG, LATEST_CHECKPOINT, Tag

TRACKED_PACKAGES = (
    "sparse-ticket",
    "torch",
    "numpy",
    "gymnasium",
    "ale-py",
    "minatar",
    "mlflow",
    "scipy",
    "rliable",
)
BATCH_LIMIT = 1000  # MLflow accepts at most 1000 metrics per log_batch call


def git_commit(path: Path) -> tuple[str, bool]:
    """(commit hash, dirty) of the git checkout holding ``path``; ("unknown", False) if none."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a result."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment_record() -> dict[str, Any]:
    """Everything about the software environment that a reproduction needs."""
    import torch

    commit, dirty = git_commit(Path(__file__).resolve().parent)
    if commit == "unknown":  # an image without .git carries its commit (docker/build.sh)
        commit = os.environ.get("SPARSE_TICKET_GIT_COMMIT", "unknown")
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "argv": sys.argv,
    }


def log_provenance(
    config_flat: dict[str, Any], tags: dict[str, str], run_id: str | None = None
) -> None:
    """Log the full config as params, and versions/commit as tags and artifacts.

    Into ``run_id``, else the active run. ``mlflow run`` has already logged the MLproject
    parameters; a config key of the same name (``game``, ``seed``) keeps that value in the
    params (MLflow refuses to change a param), and ``config.json`` holds the canonical one.
    """
    record = environment_record()
    run_id = run_id or mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    existing = client.get_run(run_id).data.params
    params = [Param(k, str(v)) for k, v in config_flat.items() if k not in existing]
    all_tags = {
        **tags,
        Tag.GIT_COMMIT: record["git_commit"],
        Tag.GIT_DIRTY: str(record["git_dirty"]).lower(),
        **{f"{Tag.VERSION}{k}": v for k, v in record["packages"].items()},
    }
    for start in range(0, len(params), 100):  # the store's params-per-batch limit
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
    client.log_dict(run_id, config_flat, CONFIG)
    client.log_dict(run_id, record, "environment.json")


class MlflowSink:
    """The runner's :class:`~sparse_ticket.metric_log.MetricSink` for one MLflow run.

    ``skip_until`` drops metric points at or before a step already logged: after a resume from
    a checkpoint the runner re-walks steps whose metrics were flushed before the interruption.
    """

    def __init__(self, run_id: str, skip_until: int = -1) -> None:
        self.run_id = run_id
        self.client = mlflow.MlflowClient()
        self.skip_until = skip_until

    def write(self, metrics: list[Metric]) -> None:
        now = int(time.time() * 1000)
        # One millisecond apart: the store keys a point by (key, value, step, timestamp), so two
        # episodes ending at the same step with the same score would otherwise collapse into one.
        points = [
            MlflowMetric(key, float(value), now + index, int(step))
            for index, (key, value, step) in enumerate(metrics)
            if step > self.skip_until
        ]
        for start in range(0, len(points), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=points[start : start + BATCH_LIMIT])

    def on_checkpoint(self, path: Path, step: int) -> None:
        for file in sorted(path.iterdir()):
            if file.name != "replay.npz":
                self.client.log_artifact(self.run_id, str(file), LATEST_CHECKPOINT)

    def on_evaluation(self, history: list[dict[str, Any]]) -> None:
        self.client.log_dict(self.run_id, history, "evaluations.json")


def last_logged_step(run_id: str) -> int:
    """The newest step of the run's ``progress/step`` metric (-1 if none was logged)."""
    history = mlflow.MlflowClient().get_metric_history(run_id, "progress/step")
    return max((int(m.step) for m in history), default=-1)


def end_run_if_active(status: str) -> None:
    """End the active run (or the one ``mlflow run`` created for us) with ``status``."""
    run = mlflow.active_run()
    if run is not None:
        mlflow.end_run(status)
        return
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        client = mlflow.MlflowClient()
        try:
            current = client.get_run(run_id).info.status
        except mlflow.exceptions.MlflowException:
            return
        if not RunStatus.is_terminated(RunStatus.from_string(current)):
            client.set_terminated(run_id, status)


def log_weights(
    weights: dict[str, Any], name: str, scratch: Path, run_id: str | None = None
) -> None:
    """Save ``weights`` with torch.save and log them as ``checkpoints/<name>`` of ``run_id``
    (else of the active run)."""
    import torch

    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / name
    torch.save(weights, path)
    run_id = run_id or mlflow.active_run().info.run_id
    mlflow.MlflowClient().log_artifact(run_id, str(path), CHECKPOINTS)
