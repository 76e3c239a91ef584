"""The ``main`` study driver end to end: a whole study, its reuse, its interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

TAG = "sparse_ticket."


def mlflow_run_main(*params: str, timeout: float = 500) -> subprocess.CompletedProcess:
    """``mlflow run <repo> -e main --env-manager local -P ...``, asserting success."""
    command = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "main"]
    command += ["--env-manager", "local", *(a for p in params for a in ("-P", p))]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def runs_by_entry_point() -> dict[str, list]:
    out: dict[str, list] = {}
    for run in mlflow.search_runs(search_all_experiments=True, output_format="list"):
        out.setdefault(run.data.tags.get(f"{TAG}entry_point", ""), []).append(run)
    return out


def node_runs() -> list:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in runs if f"{TAG}node" in r.data.tags]


EXPECTED_FILES = [
    "conditions.csv",
    "conditions.md",
    "study.json",
    "grid_ddqn_imp_0.8_ticket_set.png",  # the 80% masks are 0.800003 sparse on MinAtar
    "grid_ddqn_imp_0.8_ticket_set.pdf",
    "curves_breakout.png",
    "curves_asterix.pdf",
    "train_curves_asterix.png",
    "plasticity.png",
    "tickets_ddqn_breakout.png",
]


@pytest.mark.timeout(1200)  # three tiny studies: ~540 s on a quiet 2-core machine
def test_main_runs_a_whole_study_then_reuses_every_run(tracking, tmp_path, monkeypatch):
    out = tmp_path / "studies"
    first = mlflow_run_main("preset=tiny", "workers=2", f"output_dir={out}")
    assert "17 nodes: 17 ran, 0 reused, 0 failed" in first.stdout
    nodes = node_runs()
    assert len(nodes) == 17 and {r.info.status for r in nodes} == {"FINISHED"}
    (parent,) = runs_by_entry_point()["main"]
    assert {r.data.tags["mlflow.parentRunId"] for r in nodes} == {parent.info.run_id}
    key = parent.data.tags[f"{TAG}study_key"]
    assert all(key in r.data.tags[f"{TAG}studies"].split(",") for r in nodes)
    # every table and figure, in the local folder and as artifacts of the evaluate run
    folder = out / "tiny" / "evaluation"
    for name in EXPECTED_FILES:
        assert (folder / name).is_file(), name
    (evaluation,) = runs_by_entry_point()["evaluate"]
    artifacts = mlflow.MlflowClient().list_artifacts(evaluation.info.run_id, "evaluation")
    logged = {a.path for a in artifacts}
    assert {f"evaluation/{name}" for name in EXPECTED_FILES} <= logged
    table = (folder / "conditions.csv").read_text()
    assert table.count("\nddqn,breakout,asterix,imp,0.8,ticket,set,transfer,") == 1
    dag = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/study/dag.json")
    assert {row["action"] for row in dag} == {"run"} and len(dag) == 17

    second = mlflow_run_main("preset=tiny", "workers=2", f"output_dir={out}")
    assert "17 nodes: 0 ran, 17 reused, 0 failed" in second.stdout
    assert len(node_runs()) == 17  # nothing new was run
    parents = runs_by_entry_point()["main"]
    latest = max(parents, key=lambda r: r.info.start_time)
    assert latest.data.metrics["study/reused"] == 17 and latest.data.metrics["study/ran"] == 0
    assert (folder / "conditions.csv").read_text() == table

    # The same study packed two seeds per process, in a fresh store: the same table, bit for
    # bit (loop batching on a CPU trains each member exactly as alone).
    packed_store = f"sqlite:///{tmp_path / 'packed.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", packed_store)
    mlflow.set_tracking_uri(packed_store)
    packed_out = tmp_path / "packed"
    packed = mlflow_run_main(
        "preset=tiny", "workers=1", "members_per_task=2", f"output_dir={packed_out}"
    )
    assert "17 nodes: 17 ran, 0 reused, 0 failed" in packed.stdout
    assert packed.stdout.count("one of 2 in one process") == 16  # dense, masks, transfers
    packed_nodes = node_runs()
    assert len(packed_nodes) == 17 and {r.info.status for r in packed_nodes} == {"FINISHED"}
    assert (packed_out / "tiny" / "evaluation" / "conditions.csv").read_text() == table


INTERRUPTED = """
description = "one long dense run, for the interruption test"

[study]
run_preset = "minatar-smoke"
algos = ["ddqn"]
games = ["breakout"]
seeds = [0]
mask_methods = []
sparsities = [0.8]
baselines = ["dense"]

[study.overrides]
"run.log_every" = 1000
"run.eval_every" = 5000
"run.checkpoint_every" = 1000
"run.plasticity_every" = 0

[study.steps]
dense = 40000
mask = 10
transfer = 300

[study.evaluate]
reps = 200
"""


def wait_for_progress(minimum: int, timeout: float = 120) -> str:
    """The id of a running node run that has logged ``progress/step`` >= minimum."""
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in node_runs():
            history = client.get_metric_history(run.info.run_id, "progress/step")
            progress = max((m.value for m in history), default=0)
            if run.info.status == "RUNNING" and progress >= minimum:
                return run.info.run_id
        time.sleep(0.5)
    raise AssertionError("no node made progress")


def test_sigterm_stops_the_study_and_main_resumes_it(tracking, tmp_path):
    study = tmp_path / "interrupted.toml"
    study.write_text(INTERRUPTED)
    command = [
        sys.executable,
        "-m",
        "sparse_ticket_mlflow",
        "main",
        "--preset",
        str(study),
        "--workers",
        "1",
    ]
    command += ["--output-dir", str(tmp_path / "studies")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    run_id = wait_for_progress(2000)
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 143, output
    assert (
        "stopped by signal" in output
        and "0 ran, 0 reused, 0 failed, 0 skipped, 1 stopped" in output
    )
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"
    (parent,) = runs_by_entry_point()["main"]
    assert parent.info.status == "KILLED"

    again = run_cli(*command[3:], timeout=400)
    assert f"resumed dense/ddqn/breakout/s0  (run {run_id})" in again.stdout
    assert "3 nodes: 3 ran, 0 reused, 0 failed" in again.stdout  # dense, dense baseline, evaluate
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "progress/step"))
    # every interval once, and the step where the signal stopped it
    assert len(steps) == len(set(steps)) and set(range(1000, 40001, 1000)) <= set(steps)
    assert Path(tmp_path / "studies" / "interrupted" / "evaluation" / "conditions.csv").is_file()


def test_dry_run_prints_the_dag_and_its_cost(tracking):
    result = run_cli("main", "--preset", "paper", "--dry-run", "true")
    assert "total        3841   44,400,000,000  177,600,000,000" in result.stdout
    assert "22,182.3 GPU-hours" in result.stdout
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "nosuch"], "unknown study preset 'nosuch'"),
        (["--preset", "smoke"], "unknown study preset 'smoke'"),
        (["--workers", "0"], "workers"),
        (["--dry-run", "maybe"], "dry_run must be true or false"),
    ],
)
def test_main_bad_input_is_one_line(tracking, args, message):
    result = run_cli("main", *args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


FAILING = """
description = "every node fails: CUDA on a machine without it"

[study]
run_preset = "minatar-smoke"
algos = ["ddqn"]
games = ["breakout"]
seeds = [0]
mask_methods = ["imp"]
sparsities = [0.8]
baselines = ["dense"]

[study.overrides]
"run.device" = "cuda"

[study.steps]
dense = 300
mask = 100
transfer = 200
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failed_node_skips_what_depends_on_it(tracking, tmp_path):
    study = tmp_path / "failing.toml"
    study.write_text(FAILING)
    result = run_cli("main", "--preset", str(study), "--workers", "2", check=False)
    assert result.returncode == 1
    assert "FAILED dense/ddqn/breakout/s0" in result.stdout
    assert "FAILED baseline/ddqn/breakout/dense/s0" in result.stdout
    # skipped: the mask, the transfer and the evaluation
    assert "5 nodes: 0 ran, 0 reused, 2 failed, 3 skipped" in result.stdout
    runs = runs_by_entry_point()
    assert {r.info.status for r in node_runs()} == {"FAILED"}
    assert [r.info.status for r in runs["main"]] == ["FAILED"]
