"""A preempted find-mask chain continues from its last finished round (issue 14, item 4).

An IMP chain at the paper's budget is up to 9 rounds of 10M steps; a preemption must not throw
away the finished rounds. Each test stops a real MinAtar IMP chain (dense round, then rounds at
50% and 75%) inside its last round, runs it again, and checks against a chain never
interrupted: the same masks, tickets, trained and rewind weights bit for bit, the same metric
points in every round run (nothing lost, nothing logged twice), one run per round, and the
rounds finished before the stop left alone (not trained again).
"""

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

from sparse_ticket_mlflow.errors import EXIT_PREEMPTED
from sparse_ticket_mlflow.train_members import create_member_run
from tests import slurm_cluster
from tests.conftest import ROOT, run_cli, use_store
from tests.test_faults import start, wait_for
from tests.test_slurm import needs_slurm, submit_study
from tests.test_train_dense import TINY, metric_history, mlflow_run

pytestmark = pytest.mark.integration

LEVELS = "0.5,0.75"
FOLDERS = ("sparsity_0.50", "sparsity_0.75")
KINDS = ("mask", "ticket", "trained", "rewind")
# keep_checkpoints: every checkpoint stays, so a test can see that none written before the stop
# is written again (the round went on from its checkpoint, it did not start over).
OVERRIDES = f"{TINY} imp_prune_fraction=0.5 checkpoint_every=300 keep_checkpoints=100"
PARAMS = {  # every find-mask parameter, as `mlflow run` logs them
    "method": "imp",
    "game": "breakout",
    "algo": "ddqn",
    "sparsities": LEVELS,
    "scope": "encoder",
    "allocation": "global",
    "seed": "2",
    "total_steps": "900",
    "preset": "minatar-smoke",
    "overrides": OVERRIDES,
    "dense_run": "",
    "template": "",
    "random_weights": "ticket",
    "resume": "",
}
FIND = ("find-mask", *(f"--{k.replace('_', '-')}={v}" for k, v in PARAMS.items()))


def find_runs() -> list:
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`sparse_ticket.entry_point` = 'find-mask'",
        output_format="list",
    )


def rounds(parent_id: str) -> dict[int, object]:
    """The round runs of a find-mask run, by round index (asserting one run per round)."""
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
    )
    by_index = {int(r.data.tags["sparse_ticket.round"]): r for r in runs}
    assert len(by_index) == len(runs), "a round has two runs"
    return by_index


def tickets(run_id: str) -> dict[str, object]:
    """Every level's mask, ticket, trained and rewind file, loaded."""
    out = {}
    for folder in FOLDERS:
        for kind in KINDS:
            path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{folder}/{kind}.pt")
            out[f"{folder}/{kind}"] = torch.load(path, weights_only=True)
    return out


def assert_same_tensors(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}/{key}")
    else:
        assert torch.equal(a, b), f"{where} differs"


def checkpoints(directory: Path) -> dict[Path, int]:
    """Every complete checkpoint under a chain's directory, with its marker's inode."""
    return {p: p.stat().st_ino for p in directory.glob("round_*/step_*/COMPLETE")}


def assert_continued_like(
    reference: str,
    resumed: str,
    untouched: dict[int, int],
    written: dict[Path, int],
    terminated: bool = False,
) -> None:
    """``resumed`` ended as the uninterrupted ``reference``; rounds in ``untouched`` (index ->
    end time before the stop) were not trained again, and no checkpoint in ``written`` (those
    on disk at the stop) was written again: the stopped round went on from its checkpoint."""
    assert any("round_2" in str(p) for p in written)
    assert {p: p.stat().st_ino for p in written} == written
    client = mlflow.MlflowClient()
    assert client.get_run(resumed).info.status == "FINISHED"
    assert_same_tensors(tickets(reference), tickets(resumed))
    mine, theirs = rounds(resumed), rounds(reference)
    assert sorted(mine) == sorted(theirs) == [0, 1, 2]
    for index, run in mine.items():
        assert run.info.status == "FINISHED", index
        expected = metric_history(theirs[index].info.run_id)
        got = metric_history(run.info.run_id)
        if terminated and index == 2:
            stopped_at = max(
                int(p.parent.name.split("_")[1]) for p in written if "round_2" in str(p)
            )
            assert_points_around_a_stop(got, expected, stopped_at)
        else:
            assert got == expected, f"round {index}"
    for index, end_time in untouched.items():
        assert mine[index].info.end_time == end_time, f"round {index} was trained again"
    ticket_metrics = metric_history(resumed)
    assert ticket_metrics == metric_history(reference)  # ticket/* logged once per level


def assert_points_around_a_stop(got: dict, expected: dict, stopped_at: int) -> None:
    """SIGTERM flushes the metric interval it stopped in before the checkpoint (as train-dense
    does): every point of the uninterrupted round is there, one more at the stop's step, and
    the next interval's means start from it; evaluations are the same."""
    assert set(got) == set(expected)
    for key, points in expected.items():
        steps = {s for s, _ in points}
        assert steps <= {s for s, _ in got[key]} <= steps | {stopped_at}, key
        if key.startswith("eval/"):
            assert got[key] == points, key


def in_last_round(directory: Path, run_id: str) -> bool:
    return any((directory / run_id / "round_2").glob("step_*/COMPLETE"))


def finished_rounds(parent_id: str) -> dict[int, int]:
    return {i: r.info.end_time for i, r in rounds(parent_id).items() if r.info.status == "FINISHED"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the tests that compare with the uninterrupted chain."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("chains")
        use_store(folder, patch)
        yield folder
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def reference(store):
    """An uninterrupted chain (its run id), computed once for the module."""
    run_cli(*FIND)
    (run,) = find_runs()
    return run.info.run_id


def new_find_run(known: set[str]) -> str:
    """The id of the find-mask run not in ``known`` ("" until it exists)."""
    return next((r.info.run_id for r in find_runs() if r.info.run_id not in known), "")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_stopped_chain_continues_from_its_last_finished_round(reference, store, stop):
    known = {r.info.run_id for r in find_runs()}
    process = start(*FIND)
    ckpt = store / "ckpt"
    run_id = ""

    def stopped_in_last_round() -> bool:
        nonlocal run_id
        run_id = new_find_run(known)
        return bool(run_id) and in_last_round(ckpt, run_id)

    wait_for(stopped_in_last_round, process, "a checkpoint in round 2")
    process.send_signal(stop)
    code = process.wait()
    before, written = finished_rounds(run_id), checkpoints(ckpt / run_id)
    assert sorted(before) == [0, 1]
    status = mlflow.MlflowClient().get_run(run_id).info.status
    if stop == signal.SIGKILL:
        assert status == "RUNNING"  # nothing can run at SIGKILL: running it again is the remedy
        result = run_cli("find-mask", "--resume", run_id)
    else:
        assert (code, status) == (EXIT_PREEMPTED, "KILLED")
        assert rounds(run_id)[2].info.status == "KILLED"
        # A requeued SLURM task and the study driver run the same `mlflow run --run-id` again.
        mlflow_run("find-mask", "--run-id", run_id, *(f"-P{k}={v}" for k, v in PARAMS.items()))
        result = None
    if result is not None:
        assert "continuing run" in result.stderr
    assert_continued_like(reference, run_id, before, written, stop == signal.SIGTERM)


def test_a_packed_chain_continues_from_its_last_finished_round(reference, store):
    experiment = mlflow.get_experiment_by_name("Default").experiment_id
    ids = [create_member_run(experiment, "find-mask", {**PARAMS, "seed": s}) for s in "23"]
    members = ("train-members", "--runs", ",".join(ids), "--batching", "loop")
    process = subprocess.Popen(
        [sys.executable, "-m", "sparse_ticket_mlflow", *members],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ckpt = store / "ckpt"
    wait_for(lambda: all(in_last_round(ckpt, i) for i in ids), process, "round 2 checkpoints")
    process.send_signal(signal.SIGKILL)
    process.wait()
    before, written = finished_rounds(ids[0]), checkpoints(ckpt / ids[0])
    assert sorted(before) == [0, 1]
    run_cli(*members)
    assert_continued_like(reference, ids[0], before, written)  # seed 2 alone, bit for bit
    assert mlflow.MlflowClient().get_run(ids[1]).info.status == "FINISHED"


def test_a_second_writer_of_a_chain_is_refused(store):
    known = {r.info.run_id for r in find_runs()}
    process = start(*FIND)
    ckpt = store / "ckpt"
    run_id = ""

    def started() -> bool:
        nonlocal run_id
        run_id = new_find_run(known)
        return bool(run_id) and any((ckpt / run_id).glob("round_0/step_*/COMPLETE"))

    try:
        wait_for(started, process, "a checkpoint in round 0")
        second = run_cli("find-mask", "--resume", run_id, check=False)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().count("\n") == 0
        assert "already being trained" in second.stderr
        assert mlflow.MlflowClient().get_run(run_id).info.status == "RUNNING"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


CHAIN_STUDY = """
description = "one IMP chain of three pruned rounds, for the driver's resume test"

[study]
run_preset = "minatar-smoke"
algos = ["ddqn"]
games = ["breakout"]
seeds = [0]
mask_methods = ["imp"]
sparsities = [0.875]
baselines = []

[study.overrides]
"imp_prune_fraction" = 0.5
"run.log_every" = 300
"run.eval_every" = 0
"run.checkpoint_every" = 300
"run.plasticity_every" = 0
"run.keep_checkpoints" = 100

[study.steps]
dense = 600
mask = 900
transfer = 300

[study.evaluate]
reps = 200
"""


def test_the_study_driver_continues_a_stopped_chain_in_its_run(tracking, tmp_path):
    study = tmp_path / "chain.toml"
    study.write_text(CHAIN_STUDY)
    command = ["main", "--preset", str(study), "--workers", "1"]
    command += ["--output-dir", str(tmp_path / "studies")]
    driver = start(*command)
    ckpt = tmp_path / "ckpt"
    run_id = ""

    def in_round_2() -> bool:
        nonlocal run_id
        run_id = new_find_run(set())
        return bool(run_id) and any((ckpt / run_id).glob("round_2/step_*/COMPLETE"))

    wait_for(in_round_2, driver, "a checkpoint in round 2", timeout=400)
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=300) == EXIT_PREEMPTED, driver.stderr.read()
    before, written = finished_rounds(run_id), checkpoints(ckpt / run_id)
    assert sorted(before) == [1]  # from the study's dense run: no round 0

    again = run_cli(*command, timeout=600)
    assert f"resumed mask/ddqn/breakout/imp/s0  (run {run_id})" in again.stdout, again.stdout
    (run,) = find_runs()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    mine = rounds(run_id)
    assert sorted(mine) == [1, 2, 3] and {r.info.status for r in mine.values()} == {"FINISHED"}
    assert mine[1].info.end_time == before[1]  # not trained again
    assert {p: p.stat().st_ino for p in written} == written  # round 2 went on from its checkpoint


@needs_slurm
def test_a_requeued_slurm_task_continues_its_chain(tracking, tmp_path):
    study = tmp_path / "chain.toml"
    study.write_text(CHAIN_STUDY)
    jobs = submit_study(str(study), tmp_path)
    ckpt = tmp_path / "ckpt"
    deadline = time.monotonic() + 600
    run_id = ""
    while not (run_id and any((ckpt / run_id).glob("round_2/step_*/COMPLETE"))):
        assert time.monotonic() < deadline, "no checkpoint in round 2"
        run_id = new_find_run(set())
        time.sleep(0.05)
    before = finished_rounds(run_id)
    task = f"{jobs['mask']}_0"
    slurm_cluster.signal_job(task, "TERM", batch_only=True)  # what --signal=B:TERM sends
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=900)
    assert set(states.values()) == {"COMPLETED"}, states
    assert slurm_cluster.job_records(task)[task]["Restarts"] == "1"
    (run,) = find_runs()
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    mine = rounds(run_id)
    assert sorted(mine) == [1, 2, 3] and {r.info.status for r in mine.values()} == {"FINISHED"}
    assert sorted(before) == [1] and mine[1].info.end_time == before[1]  # not trained again
    log = next((tmp_path / "jobs").glob("*/logs/mask_*_0.out")).read_text()
    assert "requeueing" in log and f"continuing run {run_id}" in log
