"""Helpers for integration tests that submit jobs to a real SLURM cluster.

This is a helper module, not a test file. The cluster is the single-node, loopback cluster that
``slurm/cluster/start-local-cluster.sh`` starts (see ``slurm/cluster/README.md``); any cluster
whose ``sinfo``/``sbatch``/``scontrol`` work from this machine will do.

There is no accounting (no ``sacct``): job states come from ``scontrol show job -o``, which knows a
finished job for ``MinJobAge`` seconds (3600 in the local cluster's ``slurm.conf``).

Job ids are strings. An array job is keyed per task as ``"<array job id>_<task id>"`` (Slurm's own
notation); a pending, not yet split remainder of an array appears as e.g. ``"12_[2-3]"`` or
``"12_2-3"`` until its tasks start.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO_ROOT / "slurm" / "cluster" / "start-local-cluster.sh"

#: Job states after which a job will not run again (unless someone requeues it).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
        "UNKNOWN",  # not (or no longer) known to slurmctld
    }
)
_NODE_UP_STATES = ("idle", "mixed", "allocated", "completing")
_KEY = re.compile(r"^[A-Za-z][\w:/]*=")


def _run(args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def _check(args: Sequence[str], timeout: float = 30.0) -> str:
    """Run a Slurm client command; return stdout, raise ``RuntimeError`` on failure."""
    proc = _run(args, timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc.stdout


def slurm_available() -> bool:
    """Whether the Slurm clients work here and at least one node is up (idle, mixed, ...)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        proc = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10.0)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if proc.returncode != 0:
        return False
    # A trailing "*" (e.g. "idle*") means the node does not respond.
    return any(state in _NODE_UP_STATES for state in proc.stdout.split())


def start_cluster(timeout: float = 600.0) -> str | None:
    """Start the local cluster with ``start-local-cluster.sh`` (needs root and apt).

    Returns the node name, or ``None`` when the cluster cannot be started here (not root, script
    failed). Idempotent: a running cluster is left as it is.
    """
    if slurm_available():
        return _node_name()
    if os.geteuid() != 0 or not START_SCRIPT.is_file():
        return None
    try:
        proc = subprocess.run(
            ["bash", str(START_SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        return None
    return lines[-1]


def _node_name() -> str | None:
    proc = _run(["sinfo", "-h", "-N", "-o", "%N"], timeout=10.0)
    names = proc.stdout.split()
    return names[0] if proc.returncode == 0 and names else None


def submit(
    script_path: str | os.PathLike[str],
    *args: str,
    options: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Submit ``script_path`` with ``sbatch --parsable`` and return the job id.

    ``args`` are passed to the script; ``options`` are sbatch options placed before the script
    (e.g. ``["--array=0-3", "--output=out_%A_%a.txt", "--requeue"]``). ``cwd`` is where sbatch
    runs, i.e. the job's default working directory. For an array job this returns the array job
    id (e.g. ``"12"``); its tasks are ``"12_0"``, ``"12_1"``, ...
    """
    cmd = ["sbatch", "--parsable", *options, str(script_path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30.0, check=False, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch failed (exit {proc.returncode}): {proc.stderr.strip()}")
    # --parsable prints "<job id>" or "<job id>;<cluster>".
    job_id = proc.stdout.strip().splitlines()[-1].split(";")[0].strip()
    if not job_id:
        raise RuntimeError(f"sbatch printed no job id: {proc.stdout!r}")
    return job_id


def _parse_record(line: str) -> dict[str, str]:
    """Parse one ``scontrol show job -o`` line into its ``Key=Value`` fields.

    Values may contain spaces (paths, reasons): a token that does not start with ``Key=`` is
    appended to the previous value.
    """
    record: dict[str, str] = {}
    last: str | None = None
    for token in line.split(" "):
        if _KEY.match(token):
            key, _, value = token.partition("=")
            record[key] = value
            last = key
        elif last is not None and token:
            record[last] += " " + token
    return record


def _task_key(record: dict[str, str]) -> str:
    array_id = record.get("ArrayJobId")
    task_id = record.get("ArrayTaskId")
    if array_id and task_id:
        return f"{array_id}_{task_id}"
    return record.get("JobId", "?")


def job_records(job_id: str) -> dict[str, dict[str, str]]:
    """All ``scontrol show job -o`` fields of a job (every task of an array job), by task key.

    Empty when slurmctld does not know the job (never submitted, or purged after MinJobAge).
    Useful fields: ``JobState``, ``Reason``, ``ExitCode`` (``"143:0"``), ``Restarts``,
    ``StdOut``, ``StartTime``, ``EndTime``, ``EligibleTime``.
    """
    proc = _run(["scontrol", "show", "job", "-o", str(job_id)])
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return {}
        raise RuntimeError(f"scontrol show job {job_id} failed: {proc.stderr.strip()}")
    records: dict[str, dict[str, str]] = {}
    for line in proc.stdout.splitlines():
        if line.strip():
            record = _parse_record(line.strip())
            records[_task_key(record)] = record
    return records


def job_states(job_id: str) -> dict[str, str]:
    """``JobState`` of a job (of every task of an array job), by task key; empty if unknown."""
    return {key: rec.get("JobState", "UNKNOWN") for key, rec in job_records(job_id).items()}


def job_state(job_id: str) -> str:
    """The state of one job, e.g. ``"PENDING"``, ``"RUNNING"``, ``"COMPLETED"``, ``"FAILED"``.

    ``"UNKNOWN"`` if slurmctld does not know the job. For an array job id this summarises its
    tasks: a non-terminal state if any task has one, else ``"COMPLETED"`` if all completed, else
    the first other terminal state (e.g. ``"FAILED"``). Use :func:`job_states` for per-task states.
    """
    states = list(job_states(job_id).values())
    if not states:
        return "UNKNOWN"
    for state in states:
        if state not in TERMINAL_STATES:
            return state
    for state in states:
        if state != "COMPLETED":
            return state
    return "COMPLETED"


def wait_for_jobs(
    job_ids: Iterable[str], timeout: float = 300.0, poll: float = 0.5
) -> dict[str, str]:
    """Wait until every given job (every task of array jobs) is in a terminal state.

    Returns the final states by task key (``"7"``, ``"12_0"``, ...). A job that slurmctld does
    not know is reported as ``"UNKNOWN"``. Raises ``TimeoutError`` (with the current states)
    when the jobs are not all finished after ``timeout`` seconds.
    """
    ids = [str(j) for j in job_ids]
    deadline = time.monotonic() + timeout
    while True:
        states: dict[str, str] = {}
        for job_id in ids:
            states.update(job_states(job_id) or {job_id: "UNKNOWN"})
        if all(state in TERMINAL_STATES for state in states.values()):
            return states
        if time.monotonic() >= deadline:
            raise TimeoutError(f"jobs not finished after {timeout:.0f}s: {states}")
        time.sleep(poll)


def wait_for_state(
    job_id: str, states: Iterable[str], timeout: float = 120.0, poll: float = 0.25
) -> str:
    """Wait until :func:`job_state` of ``job_id`` is one of ``states``; return it.

    Raises ``TimeoutError`` otherwise (e.g. wait for ``{"RUNNING"}`` before signalling a job).
    """
    wanted = set(states)
    deadline = time.monotonic() + timeout
    while True:
        state = job_state(job_id)
        if state in wanted:
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} is {state}, not in {sorted(wanted)}")
        time.sleep(poll)


def signal_job(job_id: str, signal: str = "TERM", *, batch_only: bool = True) -> None:
    """Send ``signal`` to a running job without cancelling it.

    ``batch_only=True`` (``scancel --batch``) signals only the batch shell, not its children: the
    script must trap the signal and forward it (as ``sbatch --signal=B:TERM@...`` does).
    ``batch_only=False`` (``scancel --full``) signals every process of the job. Note that a plain
    ``scancel -s TERM`` signals only job steps (``srun``) and so reaches nothing in a job without
    steps.
    """
    scope = "--batch" if batch_only else "--full"
    _check(["scancel", f"--signal={signal}", scope, str(job_id)])


def cancel(job_id: str) -> None:
    """Cancel a job: SIGCONT+SIGTERM to all its processes, SIGKILL after ``KillWait``."""
    _check(["scancel", str(job_id)])


def requeue(job_id: str, *, start_now: bool = True, timeout: float = 60.0) -> None:
    """Requeue a job with ``scontrol requeue`` (its processes get SIGTERM, then SIGKILL).

    Slurm holds a requeued job back (``Reason=BeginTime``) for ``cred_expire`` seconds (30 in the
    local cluster, 120 by default). With ``start_now`` this waits until the job is PENDING again
    and sets ``StartTime=now`` so that it is eligible at once. On its next run the job sees
    ``SLURM_RESTART_COUNT`` incremented.
    """
    _check(["scontrol", "requeue", str(job_id)])
    if start_now:
        wait_for_state(job_id, {"PENDING"}, timeout=timeout)
        _check(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
