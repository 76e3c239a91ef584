"""The SLURM launcher: scripts and checks by hand; a real single-node cluster end to end.

The integration tests need a running cluster (``slurm/cluster/start-local-cluster.sh``, which
``.ci/run`` starts); without one they are skipped, saying why.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from sparse_ticket_mlflow.errors import InputError
from sparse_ticket_mlflow.slurm import Resources, check_tracking, container_prefix
from tests import slurm_cluster
from tests.conftest import run_cli
from tests.test_main import INTERRUPTED, wait_for_progress

TAG = "sparse_ticket."


@pytest.mark.parametrize("fstype", ["nfs", "nfs4", "lustre", "gpfs", "beegfs"])
def test_sqlite_on_a_shared_filesystem_is_refused(fstype):
    with pytest.raises(InputError, match="start a tracking server"):
        check_tracking("sqlite:////shared/mlflow.db", fstype)


@pytest.mark.parametrize(
    ("uri", "fstype"),
    [
        ("sqlite:////tmp/mlflow.db", "ext2/ext3"),
        ("sqlite:////tmp/mlflow.db", "tmpfs"),
        ("http://tracking:5000", "nfs"),
        ("postgresql://u@db/mlflow", "nfs"),
    ],
)
def test_local_sqlite_and_servers_are_accepted(uri, fstype):
    check_tracking(uri, fstype)


def test_sbatch_directives_and_container():
    resources = Resources("gpu", "proj", 1, 8, "64G", "48:00:00", 300, 16, ["#SBATCH --qos=long"])
    assert resources.directives() == [
        "--time=48:00:00",
        "--cpus-per-task=8",
        "--mem=64G",
        "--gpus=1",
        "--partition=gpu",
        "--account=proj",
        "--signal=B:TERM@300",
        "--qos=long",
    ]
    prefix = container_prefix("singularity", "/img/st.sif", [Path("/b"), Path("/a"), Path("/a")])
    assert prefix[:5] == ["singularity", "exec", "--nv", "--bind", "/a,/b"]
    assert prefix[-1] == "/img/st.sif" and container_prefix("none", "", []) == []


def test_bad_launcher_input_is_one_line(tracking):
    result = run_cli("slurm", "submit", "--preset", "tiny", "--image", "nope.sif", check=False)
    assert result.returncode == 2 and "--image must be a .sif file" in result.stderr
    result = run_cli("slurm", "submit", "--container", "docker", check=False)
    assert result.returncode == 2 and "container must be" in result.stderr


needs_slurm = pytest.mark.skipif(
    not slurm_cluster.slurm_available(),
    reason="no SLURM cluster here (slurm/cluster/start-local-cluster.sh starts one, as root)",
)


def submit_study(preset: str, tmp_path: Path, *extra: str) -> dict[str, str]:
    result = run_cli(
        "slurm",
        "submit",
        "--preset",
        preset,
        "--container",
        "none",
        "--gpus",
        "0",
        "--cpus-per-task",
        "1",
        "--mem",
        "",
        "--time",
        "30:00",
        "--jobs-dir",
        str(tmp_path / "jobs"),
        *extra,
    )
    jobs = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if "tasks  job" in line:
            jobs[words[0]] = words[-1]
    return jobs


def study_runs() -> list:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in runs if f"{TAG}node" in r.data.tags]


@pytest.mark.integration
@needs_slurm
def test_a_study_runs_as_slurm_array_jobs(tracking, tmp_path):
    """Two seeds per task where runs have one shape: each such task trains a population."""
    jobs = submit_study("tiny", tmp_path, "--members-per-task", "2")
    assert list(jobs) == ["dense", "mask", "train", "evaluate"]
    (jobs_dir,) = (tmp_path / "jobs").iterdir()
    lines = {g: (jobs_dir / f"{g}.tasks").read_text().splitlines() for g in jobs}
    assert [len(lines[g]) for g in jobs] == [2, 2, 4, 1]  # 4 dense, 4 masks, 8 transfers
    packed = [line for g in ("dense", "mask", "train") for line in lines[g]]
    assert all(" train-members --runs " in line and line.count(",") == 1 for line in packed)
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    runs = study_runs()
    assert len(runs) == 17 and {r.info.status for r in runs} == {"FINISHED"}
    (evaluation,) = [r for r in runs if r.data.tags.get(f"{TAG}entry_point") == "evaluate"]
    artifacts = mlflow.MlflowClient().list_artifacts(evaluation.info.run_id, "evaluation")
    assert {"evaluation/conditions.csv", "evaluation/conditions.md"} <= {a.path for a in artifacts}
    (parent,) = [
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.data.tags.get(f"{TAG}launcher") == "slurm"
    ]
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "slurm")}
    assert {"slurm/dense.sbatch", "slurm/train.sbatch", "slurm/train.tasks"} <= logged
    # A second submission finds every node finished: nothing to submit.
    again = run_cli("slurm", "submit", "--preset", "tiny", "--container", "none", "--gpus", "0")
    assert "0 runs to submit, 17 reused" in again.stdout


@pytest.mark.integration
@needs_slurm
def test_a_preempted_task_requeues_and_resumes_its_run(tracking, tmp_path):
    study = tmp_path / "interrupted.toml"
    study.write_text(INTERRUPTED)
    jobs = submit_study(str(study), tmp_path)
    run_id = wait_for_progress(2000, timeout=300)
    task = f"{jobs['dense']}_0"
    slurm_cluster.signal_job(task, "TERM", batch_only=True)  # what --signal=B:TERM sends
    # run-task.sh requeues the task. Slurm holds it back for cred_expire seconds (30 on the
    # local cluster): starting it earlier (StartTime=now) gets it killed, "credential revoked".
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=600)
    assert set(states.values()) == {"COMPLETED"}, states
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert slurm_cluster.job_records(task)[task]["Restarts"] == "1"
    steps = sorted(m.step for m in client.get_metric_history(run_id, "progress/step"))
    assert len(steps) == len(set(steps)) and set(range(1000, 40001, 1000)) <= set(steps)
    log = next((tmp_path / "jobs").glob("*/logs/dense_*_0.out")).read_text()
    assert "requeueing" in log and f"resuming run {run_id} at step" in log
