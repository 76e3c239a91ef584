"""The train-dense entry point on real Atari games with tiny budgets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from sparse_ticket.runner import Runner
from sparse_ticket_mlflow.contracts import Tag
from sparse_ticket_mlflow.runs import fetch_checkpoint, run_config
from tests.conftest import ROOT, only_run, run_cli, tiny_finished_run

pytestmark = pytest.mark.integration

TINY = "learning_starts=200 eval_every=500 eval_max_frames=400 log_every=250 checkpoint_every=500"


def metric_history(run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = mlflow.MlflowClient()
    keys = client.get_run(run_id).data.metrics
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in keys
        if not key.startswith("perf/")
    }


def final_weights(run_id: str) -> dict:
    path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/checkpoints/final.pt")
    return torch.load(path, weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for role in a:
        for name, tensor in a[role].items():
            assert torch.equal(tensor, b[role][name]), f"{role}.{name} differs"


def mlflow_run(entry_point: str, *args: str) -> None:
    """``mlflow run <repo> -e ENTRY_POINT --env-manager local ARGS``, asserting success."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(ROOT),
            "-e",
            entry_point,
            "--env-manager",
            "local",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_mlflow_run_logs_artifacts_and_metrics(tracking):
    """`mlflow run . -e train-dense --env-manager local` on real Pong finds everything."""
    mlflow_run(
        "train-dense",
        "--experiment-name",
        "it",
        "-P",
        "game=pong",
        "-P",
        "preset=smoke",
        "-P",
        "total_steps=1000",
        "-P",
        f"overrides={TINY}",
    )
    run = only_run("FINISHED")
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"checkpoints/init.pt", "checkpoints/final.pt", "checkpoints/latest"} <= artifacts
    assert {"config.json", "environment.json", "evaluations.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    params = run.data.params
    assert params["game"] == "pong" and params["run.total_steps"] == "1000"
    assert params["env.sticky_actions"] == "0.25"
    assert run.data.tags["sparse_ticket.version.torch"].startswith("2.13.0")
    metrics = run.data.metrics
    for key in ("eval/score_mean", "train/td_loss", "train/q_mean", "perf/steps_per_sec"):
        assert key in metrics, key
    eval_steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/score_mean")]
    assert eval_steps == [0, 500, 1000]
    init = torch.load(
        mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/checkpoints/init.pt"),
        weights_only=True,
    )
    assert set(init) == {"q"} and "encoder.conv1.weight" in init["q"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_identical_metrics(tracking, precision):
    args = (
        "train-dense",
        "--game",
        "breakout",
        "--preset",
        "smoke",
        "--total-steps",
        "1000",
        "--seed",
        "7",
        "--overrides",
        f"{TINY} precision={precision}",
    )
    run_cli(*args)
    run_cli(*args)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    for run in runs:  # what the run asked for and what the process ran with, both logged
        assert run.data.params["agent.precision"] == precision
        assert run.data.tags[Tag.MALLOC_TUNED] == "true"
    first, second = (metric_history(r.info.run_id) for r in runs)
    assert first == second
    assert "train/td_loss" in first
    assert_same_weights(final_weights(runs[0].info.run_id), final_weights(runs[1].info.run_id))


def _wait_for_checkpoint(
    directory: Path, process: subprocess.Popen, exclude: str = "", timeout: float = 240
) -> None:
    """Wait until the process has a complete checkpoint (ignoring run ``exclude``'s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.parts[-3] != exclude for p in directory.glob("*/step_*/COMPLETE")):
            return
        if process.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint: {process.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize(("game", "precision"), [("breakout", "fp32"), ("breakout", "bf16")])
def test_sigkill_then_resume_matches_uninterrupted_run(tracking, tmp_path, game, precision):
    args = [
        "train-dense",
        "--game",
        game,
        "--preset",
        "smoke",
        "--total-steps",
        "1500",
        "--seed",
        "3",
        "--overrides",
        f"{TINY} precision={precision}",
    ]
    run_cli(*args)
    reference = only_run("FINISHED").info.run_id

    process = subprocess.Popen(
        [sys.executable, "-m", "sparse_ticket_mlflow", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _wait_for_checkpoint(tmp_path / "ckpt", process, exclude=reference)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = next(
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.info.run_id != reference
    )
    assert killed.info.status == "RUNNING"  # SIGKILL cannot be handled: resume is the remedy

    # Re-running the same run through MLflow Projects continues it from its checkpoint.
    mlflow_run("train-dense", "--run-id", killed.info.run_id)
    resumed = mlflow.MlflowClient().get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert_same_weights(final_weights(reference), final_weights(killed.info.run_id))
    expected, got = metric_history(reference), metric_history(killed.info.run_id)
    assert got == expected  # nothing lost, nothing logged twice


def test_sigterm_checkpoints_and_marks_the_run_killed(tracking, tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sparse_ticket_mlflow",
            "train-dense",
            "--game",
            "pong",
            "--preset",
            "smoke",
            "--total-steps",
            "100000",
            "--overrides",
            TINY,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _wait_for_checkpoint(tmp_path / "ckpt", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    run = only_run("KILLED")
    assert "resume with --resume" in stderr
    steps = sorted(p.name for p in (tmp_path / "ckpt" / run.info.run_id).glob("step_*"))
    assert steps and not steps[-1].endswith(".tmp")

    # Without the local checkpoint (another node), the run's artifact checkpoint still resumes.
    shutil.rmtree(tmp_path / "ckpt" / run.info.run_id)
    path = fetch_checkpoint(run.info.run_id, tmp_path / "ckpt" / run.info.run_id, "train-dense")
    assert path is not None and (path / "COMPLETE").is_file()
    assert not (path / "replay.npz").exists()
    runner = Runner(run_config(run.info.run_id), tmp_path / "elsewhere")
    try:
        assert runner.resume(path) == int(steps[-1].removeprefix("step_"))
        assert len(runner.replay) == 0  # refills from the current episodes
    finally:
        runner.close()


def test_resuming_a_finished_run_does_nothing(tracking):
    run = tiny_finished_run()
    result = run_cli("train-dense", "--resume", run.info.run_id)
    assert "already finished" in result.stderr
    assert only_run("FINISHED").info.end_time == run.info.end_time
