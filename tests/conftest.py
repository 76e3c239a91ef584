"""Shared fixtures: an isolated MLflow tracking store and helpers to run the entry points."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]


def use_store(folder: Path, patch: pytest.MonkeyPatch) -> str:
    """Point this process and its children at a fresh sqlite store in ``folder``; its URI."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv("SPARSE_TICKET_CHECKPOINT_DIR", str(folder / "ckpt"))
    patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for leftover in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        patch.delenv(leftover, raising=False)
    patch.chdir(folder)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh sqlite tracking store in tmp_path, for this process and its children."""
    yield use_store(tmp_path, monkeypatch)
    mlflow.set_tracking_uri(None)


def run_cli(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m sparse_ticket_mlflow ARGS`` in a subprocess, with the caller's environment."""
    result = subprocess.run(
        [sys.executable, "-m", "sparse_ticket_mlflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def only_run(status: str | None = None):
    """The single run of the store (asserting there is one), optionally checking its status."""
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    if status is not None:
        assert runs[0].info.status == status
    return runs[0]


def tiny_finished_run():
    """Train 200 steps of Pong (no periodic evaluation) and return the finished run."""
    run_cli(
        "train-dense",
        "--game",
        "pong",
        "--preset",
        "smoke",
        "--total-steps",
        "200",
        "--overrides",
        "learning_starts=100 eval_every=0 eval_max_frames=200",
    )
    return only_run("FINISHED")


def load_benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
