"""Faults that must lose nothing: a second writer, a full disk, a tampered artifact, no CUDA.

Each test drives the real entry points in subprocesses, as a user (or SLURM) would, and checks
the outcome a researcher relies on: one line on stderr, the exit code, the run's status, and that
whatever was written before the fault is still valid and resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import torch

from sparse_ticket.checkpoint import CheckpointManager, load_checkpoint
from sparse_ticket.locks import LOCK_FILE, FileLock, LockHeld
from sparse_ticket.sparsity.masks import load_mask, save_mask
from sparse_ticket_mlflow.runs import download_checked, file_hash
from tests.conftest import ROOT, only_run, run_cli
from tests.test_train_dense import assert_same_weights, final_weights

pytestmark = pytest.mark.integration

MINATAR = ("--game", "breakout", "--preset", "minatar-smoke")


def start(*args: str) -> subprocess.Popen:
    """``python -m sparse_ticket_mlflow ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "sparse_ticket_mlflow", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"process ended before {what}: {process.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def one_line_error(result: subprocess.CompletedProcess, code: int, needle: str) -> str:
    """The single ``error:`` line of a failed command (no traceback), checked."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], lines
    return errors[0]


# ----------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_and_a_killed_writers_lock_blocks_nothing(tracking, tmp_path):
    first = start("train-dense", *MINATAR, "--total-steps", "1500")
    ckpt = tmp_path / "ckpt"
    wait_for(lambda: any(ckpt.glob("*/step_*/COMPLETE")), first, "a checkpoint")
    first.send_signal(signal.SIGSTOP)  # alive, holding its lock, writing nothing
    try:
        run_id = only_run("RUNNING").info.run_id
        second = run_cli("train-dense", "--resume", run_id, check=False)
        line = one_line_error(second, 2, f"run {run_id} is already being trained")
        assert f"pid {first.pid}" in line
        steps_before = sorted(p.name for p in (ckpt / run_id).glob("step_*"))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The refused process wrote nothing: the checkpoints are the first process's alone.
    assert sorted(p.name for p in (ckpt / run_id).glob("step_*")) == steps_before
    assert (ckpt / run_id / LOCK_FILE).is_file()  # left behind by SIGKILL, but not locked
    run_cli("train-dense", "--resume", run_id)
    assert only_run("FINISHED").info.run_id == run_id


def test_a_second_main_on_one_study_is_refused(tracking, tmp_path):
    studies = tmp_path / "studies"
    first = start("main", "--preset", "tiny", "--output-dir", str(studies))
    lock = studies / "tiny" / LOCK_FILE
    wait_for(lambda: lock.is_file() and lock.read_text().strip(), first, "the study lock")
    first.send_signal(signal.SIGSTOP)
    try:
        second = run_cli("main", "--preset", "tiny", "--output-dir", str(studies), check=False)
        one_line_error(second, 2, "another main process runs this study")
    finally:
        for pid in [*descendants(first.pid), first.pid]:  # its node runs have sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        first.wait()
    # The killed holder's lock is gone with it.
    with FileLock(lock, "study tiny"), pytest.raises(LockHeld, match="study tiny is in use by"):
        FileLock(lock, "study tiny").acquire()


# ----------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs at ``tmp_path/ckpt`` (the checkpoint root) and a function to resize it."""
    mount = tmp_path / "ckpt"
    mount.mkdir()

    def resize(size: str) -> None:
        options = f"size={size}" if not mount.is_mount() else f"remount,size={size}"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")

    yield mount, resize
    if mount.is_mount():
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_run_keeps_the_last_checkpoint_and_resumes(tracking, small_disk):
    mount, resize = small_disk
    args = ("train-dense", *MINATAR, "--total-steps", "1500", "--seed", "5")
    overrides = ("--overrides", "run.checkpoint_every=500 run.replay_capacity=5000")
    roomy = ("--checkpoint-dir", str(mount.parent / "roomy"))
    run_cli(*args, "--overrides", f"{overrides[1]} run.keep_checkpoints=3", *roomy)
    reference = only_run("FINISHED").info.run_id
    first = CheckpointManager(mount.parent / "roomy" / reference).complete()[0]
    assert first.name == "step_000000000500"
    # Room for the step-500 checkpoint but not for the step-1000 one beside it (the previous
    # checkpoint is deleted only after the new one is complete).
    size = sum(f.stat().st_size for f in first.iterdir())
    resize(f"{int(size * 1.6)}")

    failed = run_cli(*args, *overrides, check=False)
    one_line_error(failed, 1, "No space left on device")
    run = next(
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.info.run_id != reference
    )
    assert run.info.status == "FAILED"
    kept = CheckpointManager(mount / run.info.run_id)
    assert [p.name for p in kept.complete()] == ["step_000000000500"]
    assert not list((mount / run.info.run_id).glob("*.tmp"))  # the torn copy gave its space back
    load_checkpoint(kept.latest())  # and the one before it still loads

    resize("256m")
    run_cli("train-dense", "--resume", run.info.run_id)
    resumed = mlflow.MlflowClient().get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert_same_weights(final_weights(reference), final_weights(run.info.run_id))


# ----------------------------------------------------------------------------- tampering
def artifact_file(run_id: str, path: str) -> Path:
    """The local file behind a run's artifact (the test store keeps artifacts on disk)."""
    root = urlparse(mlflow.MlflowClient().get_run(run_id).info.artifact_uri).path
    return Path(root) / path


def test_a_tampered_mask_or_ticket_is_refused(tracking):
    run_cli(
        "find-mask",
        *MINATAR,
        "--method",
        "gmp",
        "--sparsities",
        "0.6",
        "--total-steps",
        "600",
    )
    run_id = next(
        r.info.run_id
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if "mlflow.parentRunId" not in r.data.tags
    )
    mask_uri = f"runs:/{run_id}/sparsity_0.60/mask.pt"
    ticket = artifact_file(run_id, "sparsity_0.60/ticket.pt")
    for uri in (mask_uri, mask_uri.replace("mask.pt", "ticket.pt")):
        path, sidecar = download_checked(uri, "control")  # untouched: accepted
        assert sidecar["content_hash"] == file_hash(path)
    base = ["transfer", "--mask", mask_uri, "--game", "space_invaders", "--preset"]
    base += ["minatar-smoke", "--total-steps", "300"]

    weights = torch.load(ticket, weights_only=True)
    original = ticket.read_bytes()
    layer = next(iter(weights["q"]))
    weights["q"][layer] = weights["q"][layer] + 1.0
    torch.save(weights, ticket)
    refused = run_cli(*base, "--weights", "ticket", check=False)
    one_line_error(refused, 2, "ticket weights")
    assert "does not match its recorded content hash" in refused.stderr
    ticket.write_bytes(original)

    mask_file = artifact_file(run_id, "sparsity_0.60/mask.pt")
    mask = load_mask(mask_file)
    name = next(iter(mask))
    mask[name].view(-1)[0] = ~mask[name].view(-1)[0]  # one weight moved into the subnetwork
    save_mask(mask, mask_file)
    refused = run_cli(*base, check=False)
    one_line_error(refused, 2, "does not match its recorded content hash")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert all(r.data.tags.get("sparse_ticket.entry_point") != "transfer" for r in runs)


# ----------------------------------------------------------------------------- no CUDA
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    ("device", "needle"),
    [("cuda", "has no usable CUDA device"), ("gpu", "run.device must be cpu, cuda or cuda:N")],
)
def test_a_device_this_machine_lacks_is_one_line_and_no_run(tracking, device, needle):
    result = run_cli("train-dense", *MINATAR, "--overrides", f"run.device={device}", check=False)
    one_line_error(result, 2, needle)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_the_lock_file_names_its_holder(tmp_path):
    held = rf"run x is in use by pid {os.getpid()} on "
    with FileLock(tmp_path / "x" / LOCK_FILE, "run x"), pytest.raises(LockHeld, match=held):
        FileLock(tmp_path / "x" / LOCK_FILE, "run x").acquire()
    FileLock(tmp_path / "x" / LOCK_FILE, "run x").acquire().release()  # free again
