"""``train-members``: K pre-created runs trained in one process are the runs trained alone.

Real MLflow (sqlite), real MinAtar, the real CLI in a subprocess: each member run ends with the
same params, metric histories, evaluations and final weights as the same seed run through
``train-dense`` alone (``loop`` batching is bit-identical).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import mlflow
import torch

from sparse_ticket_mlflow.train_members import create_member_run
from tests.conftest import run_cli
from tests.test_train_dense import mlflow_run

OVERRIDES = "learning_starts=200 eval_every=300 log_every=100 checkpoint_every=300"
PARAMS = {  # every train-dense parameter, as `mlflow run` logs them
    "game": "breakout",
    "algo": "ddqn",
    "total_steps": "600",
    "preset": "minatar-smoke",
    "overrides": OVERRIDES,
    "resume": "",
}
TIMED = {"perf/steps_per_sec"}


def histories(run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
        if key not in TIMED
    }


def final_weights(run_id: str) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/final.pt")
    return torch.load(path, weights_only=True)


def experiment() -> str:
    return mlflow.MlflowClient().get_experiment_by_name("Default").experiment_id


def alone(seed: str) -> str:
    """``mlflow run . -e train-dense`` of one seed; its run id."""
    before = {
        r.info.run_id for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    }
    mlflow_run("train-dense", *(f"-P{k}={v}" for k, v in {**PARAMS, "seed": seed}.items()))
    after = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (run,) = [r for r in after if r.info.run_id not in before]
    return run.info.run_id


def config_json(run_id: str) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json")


def test_members_equal_runs_trained_alone(tracking):
    ids = [
        create_member_run(experiment(), "train-dense", {**PARAMS, "seed": seed})
        for seed in ("0", "1")
    ]
    result = run_cli("train-members", "--runs", ",".join(ids), "--batching", "loop")
    assert result.returncode == 0
    client = mlflow.MlflowClient()
    for seed, run_id in zip(("0", "1"), ids, strict=True):
        member = client.get_run(run_id)
        assert member.info.status == "FINISHED"
        assert member.data.tags["sparse_ticket.entry_point"] == "train-dense"
        solo_id = alone(seed)
        solo = client.get_run(solo_id)
        assert solo.data.params == member.data.params
        assert config_json(solo_id) == config_json(run_id)
        for tag in ("sparse_ticket.entry_point", "mlflow.project.entryPoint"):
            assert member.data.tags[tag] == solo.data.tags[tag]
        assert histories(run_id) == histories(solo_id)
        ours, theirs = final_weights(run_id), final_weights(solo_id)
        for role in theirs:
            for name in theirs[role]:
                assert torch.equal(ours[role][name], theirs[role][name]), name
        artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
        assert {"checkpoints/init.pt", "checkpoints/final.pt"} <= artifacts
    # Seeds differ, so do their runs.
    assert histories(ids[0])["train/td_loss"] != histories(ids[1])["train/td_loss"]
    again = run_cli("train-members", "--runs", ",".join(ids))
    assert "already finished" in again.stderr


def test_sigterm_checkpoints_every_member_and_the_same_command_resumes(tracking, tmp_path):
    params = {**PARAMS, "total_steps": "4000", "overrides": OVERRIDES.replace("300", "200")}
    ids = [create_member_run(experiment(), "train-dense", {**params, "seed": s}) for s in "01"]
    command = [
        sys.executable,
        "-m",
        "sparse_ticket_mlflow",
        "train-members",
        "--runs",
        ",".join(ids),
    ]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        steps = client.get_metric_history(ids[1], "progress/step")
        if any(m.step >= 400 for m in steps):
            break
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert [client.get_run(i).info.status for i in ids] == ["KILLED", "KILLED"]
    resumed = run_cli("train-members", "--runs", ",".join(ids))
    assert resumed.stderr.count("resuming run") == 2
    for run_id in ids:
        assert client.get_run(run_id).info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "progress/step")]
        assert steps == sorted(set(steps)) and steps[-1] == 4000  # each interval once


def test_bad_input_is_one_line(tracking):
    missing = run_cli("train-members", "--runs", "nope", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: no MLflow run with id 'nope'")
    ids = [
        create_member_run(experiment(), "train-dense", {**PARAMS, "seed": "0"}),
        create_member_run(experiment(), "train-dense", {**PARAMS, "seed": "1", "algo": "dqv"}),
    ]
    mixed = run_cli("train-members", "--runs", ",".join(ids), check=False)
    assert mixed.returncode == 2
    assert "cannot train together" in mixed.stderr and "agent.algo" in mixed.stderr
    assert len(mixed.stderr.strip().splitlines()) == 1
    batching = run_cli("train-members", "--runs", ids[0], "--batching", "threads", check=False)
    assert batching.returncode == 2 and "unknown batching" in batching.stderr


FIND = {  # every find-mask parameter, as `mlflow run` logs them: a 2-round IMP chain
    "method": "imp",
    "game": "breakout",
    "algo": "ddqn",
    "sparsities": "0.6,0.8",
    "scope": "encoder",
    "allocation": "global",
    "total_steps": "400",
    "preset": "minatar-smoke",
    "overrides": "learning_starts=200 eval_every=200 imp_prune_fraction=0.6",
    "dense_run": "",
    "template": "",
    "random_weights": "ticket",
    "resume": "",
}


def children(run_id: str) -> list:
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
        output_format="list",
    )
    return sorted(runs, key=lambda r: int(r.data.tags["sparse_ticket.round"]))


def test_find_mask_members_equal_chains_found_alone(tracking):
    """Two IMP chains in lock-step: each round a population; the same masks and tickets."""
    ids = [create_member_run(experiment(), "find-mask", {**FIND, "seed": seed}) for seed in "01"]
    run_cli("train-members", "--runs", ",".join(ids))
    client = mlflow.MlflowClient()
    for seed, run_id in zip("01", ids, strict=True):
        assert client.get_run(run_id).info.status == "FINISHED"
        solo_id = alone_find(seed)
        assert client.get_run(run_id).data.params == client.get_run(solo_id).data.params
        ours, theirs = children(run_id), children(solo_id)
        assert [r.info.run_name for r in ours] == [r.info.run_name for r in theirs]
        assert len(ours) == 3  # the dense round, then 60% and 80%
        for a, b in zip(ours, theirs, strict=True):
            assert a.info.status == "FINISHED"
            assert histories(a.info.run_id) == histories(b.info.run_id)
        for level in ("0.60", "0.80"):
            for name in ("mask.pt", "ticket.pt", "trained.pt"):
                path = f"sparsity_{level}/{name}"
                mine = torch.load(download(run_id, path), weights_only=True)
                solo = torch.load(download(solo_id, path), weights_only=True)
                assert_equal_nested(mine, solo, path)
    assert not torch.equal(
        torch.load(download(ids[0], "sparsity_0.80/mask.pt"), weights_only=True)[
            "q.encoder.conv1.weight"
        ],
        torch.load(download(ids[1], "sparsity_0.80/mask.pt"), weights_only=True)[
            "q.encoder.conv1.weight"
        ],
    )


def alone_find(seed: str) -> str:
    before = {
        r.info.run_id for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    }
    mlflow_run("find-mask", *(f"-P{k}={v}" for k, v in {**FIND, "seed": seed}.items()))
    after = mlflow.search_runs(search_all_experiments=True, output_format="list")
    new = [
        r for r in after if r.info.run_id not in before and "mlflow.parentRunId" not in r.data.tags
    ]
    (run,) = new
    return run.info.run_id


def download(run_id: str, path: str) -> str:
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)


def assert_equal_nested(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal_nested(a[key], b[key], f"{where}/{key}")
