"""``python -m sparse_ticket_mlflow slurm submit``: a study's DAG as SLURM array jobs, one per
stage.

The launcher does on the login node what :mod:`sparse_ticket_mlflow.main` does locally, ahead of
time: it creates the experiment (``--experiment``, else the study's name: one rule with ``main``,
:func:`sparse_ticket_mlflow.node_runs.study_experiment`) and the study's parent run once, and
walks the DAG in order. A node
whose finished run exists (same key: entry point, parameters with upstream run ids, code version)
is reused; every other node gets its run created now (status SCHEDULED, or an unfinished run with
a checkpoint, which resumes), so that all run ids, and therefore every downstream parameter
(``mask=runs:/<id>/...``), are known before anything runs. Each stage (dense, mask, transfer and
baseline, evaluate) with work to do becomes one array job, one task per node, started
``--dependency=afterok`` on the stage before it. A task runs its node through
``mlflow run . -e <entry point> --env-manager local --run-id <id>``, inside
``singularity exec --nv IMAGE`` or directly (``--container none``), via ``slurm/run-task.sh``,
which turns SIGTERM (``--signal``) into a checkpoint and a requeue, and the requeued task resumes.

The generated scripts and task lists are written to ``--jobs-dir`` and logged with the study.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from sparse_ticket_mlflow.contracts import (
    CONTAINERS,
    SLURM_SUBMIT,
    TRAIN_MEMBERS,
    Tag,
    request_type,
)
from sparse_ticket_mlflow.dag import Node
from sparse_ticket_mlflow.errors import InputError, parse_int
from sparse_ticket_mlflow.main import ENTRY_POINT, StudyRequest, load, members_per_task, parse_bool
from sparse_ticket_mlflow.node_keys import code_version, study_key
from sparse_ticket_mlflow.node_runs import (
    Tracker,
    absolute_tracking_uri,
    evaluation_filter,
    resolve,
    save_study_view,
    study_experiment,
)
from sparse_ticket_mlflow.runs import CHECKPOINT_ENV, TrainRequest, checkpoint_root
from sparse_ticket_mlflow.scheduler import PROJECT_ROOT, pack_key
from sparse_ticket_mlflow.study import StudySpec
from sparse_ticket_mlflow.train_members import PACKABLE, describe_run

SHARED_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb2", "cephfs", "fuse")
RUN_TASK = PROJECT_ROOT / "slurm" / "run-task.sh"
STAGE_GROUPS = {"dense": "dense", "mask": "mask", "transfer": "train", "baseline": "train"}


SubmitRequest = request_type("SubmitRequest", SLURM_SUBMIT)
"""The launcher's options as the user gave them (strings, validated here)."""


# ----------------------------------------------------------------------------- tracking
def filesystem_type(path: Path) -> str:
    """The filesystem type of ``path`` (its nearest existing parent), as ``stat -f`` names it."""
    while not path.exists():
        path = path.parent
    result = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip().lower()


def check_tracking(uri: str, fstype: str) -> None:
    """Refuse a sqlite (or file) store on a shared filesystem: parallel jobs on several nodes
    would corrupt it, and sqlite locking over NFS is unreliable."""
    local_store = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
    if local_store and any(fstype.startswith(name) for name in SHARED_FILESYSTEMS):
        raise InputError(
            f"the tracking store {uri} is on a shared filesystem ({fstype}); parallel SLURM jobs "
            "must not share one sqlite file: start a tracking server (mlflow server "
            "--backend-store-uri postgresql://... --artifacts-destination <shared dir>, see the "
            "README) and export MLFLOW_TRACKING_URI=http://<host>:5000"
        )


def store_path(uri: str) -> Path | None:
    """The file behind a sqlite URI (None for a server)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


# ----------------------------------------------------------------------------- planning
@dataclass
class Task:
    """One array task: a node and the run it runs in, or a pack of them (one population)."""

    nodes: list[Node]
    run_ids: list[str]
    command: str


@dataclass
class Plan:
    """What the launcher submits: per stage group, its tasks; and what it reuses."""

    groups: dict[str, list[Task]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        """Runs to train (a packed task trains several)."""
        return sum(len(task.run_ids) for tasks in self.groups.values() for task in tasks)


def plan_tasks(
    nodes: list[Node],
    tracker: Tracker,
    experiment_id: str,
    mlflow_cmd: list[str],
    members_per_task: int = 1,
) -> Plan:
    """Reuse finished nodes, create (or find) a run for every other one, in DAG order.

    With ``members_per_task`` K > 1, nodes of one stage and one shape (``pack_key``: the
    same parameters but for the seed and its upstream runs) are packed K to a task, which
    trains them as one population (``train-members``).
    """
    plan = Plan()
    run_ids: dict[str, str] = {}
    packs: dict[str, list[tuple[Node, str, dict[str, str]]]] = {}
    for node in nodes:
        params, key = resolve(node, run_ids, tracker)
        decision = tracker.decide(node, key)
        if decision.action == "reuse":
            run_ids[node.id] = decision.run_id
            plan.reused.append(node.id)
            continue
        run_id = decision.run_id or tracker.create(node, key)
        if not decision.run_id:
            tracker.client.update_run(run_id, status="SCHEDULED")
        run_ids[node.id] = run_id
        group = STAGE_GROUPS.get(node.stage, node.stage)
        if members_per_task > 1 and node.entry_point in PACKABLE:
            packs.setdefault(group + pack_key(node, params), []).append((node, run_id, params))
            continue
        command = task_command(node, params, run_id, experiment_id, mlflow_cmd)
        plan.groups.setdefault(group, []).append(Task([node], [run_id], command))
    for members in packs.values():
        for start in range(0, len(members), members_per_task):
            chunk = members[start : start + members_per_task]
            for node, run_id, params in chunk:
                describe_run(run_id, node.entry_point, params)
            group = STAGE_GROUPS.get(chunk[0][0].stage, chunk[0][0].stage)
            ids = [run_id for _, run_id, _ in chunk]
            command = shlex.join(
                [*python_cmd(mlflow_cmd), "-m", "sparse_ticket_mlflow", TRAIN_MEMBERS]
            )
            task = Task([n for n, _, _ in chunk], ids, f"{command} --runs {','.join(ids)}")
            plan.groups.setdefault(group, []).append(task)
    return plan


def python_cmd(mlflow_cmd: list[str]) -> list[str]:
    """The interpreter of ``mlflow_cmd`` (``[python, -m, mlflow]`` or the ``mlflow`` script)."""
    return mlflow_cmd[:1] if len(mlflow_cmd) > 1 else ["python"]


def task_command(
    node: Node, params: dict[str, str], run_id: str, experiment_id: str, mlflow_cmd: list[str]
) -> str:
    """The shell command of one node, run in the project directory."""
    words = [*mlflow_cmd, "run", ".", "-e", node.entry_point, "--env-manager", "local"]
    words += ["--experiment-id", experiment_id, "--run-id", run_id]
    for name, value in params.items():
        words += ["-P", f"{name}={value}"]
    return shlex.join(words)


# ----------------------------------------------------------------------------- scripts
@dataclass
class Resources:
    """``#SBATCH`` resources of every task."""

    partition: str
    account: str
    gpus: int
    cpus_per_task: int
    mem: str
    time: str
    signal_seconds: int
    max_running: int
    extra: list[str]

    def directives(self) -> list[str]:
        lines = [f"--time={self.time}", f"--cpus-per-task={self.cpus_per_task}"]
        lines += [f"--mem={self.mem}"] if self.mem else []
        lines += [f"--gpus={self.gpus}"] if self.gpus else []
        lines += [f"--partition={self.partition}"] if self.partition else []
        lines += [f"--account={self.account}"] if self.account else []
        if self.signal_seconds:
            # B: signals the batch shell (run-task.sh), which passes it on to the node.
            lines += [f"--signal=B:TERM@{self.signal_seconds}"]
        lines += [e.removeprefix("#SBATCH").strip() for e in self.extra]
        return lines


def container_prefix(
    container: str, image: str, binds: list[Path], environment: dict[str, str] | None = None
) -> list[str]:
    """What each task's command runs inside.

    The project checkout is bound and is the working directory, so the launcher's code runs
    with the image's packages. ``--env`` because the image's own variables (its sqlite store
    under /data) take precedence over the host's.
    """
    if container == "none":
        return []
    mounts = ",".join(sorted({str(b) for b in binds}))
    prefix = [container, "exec", "--nv", "--bind", mounts, "--pwd", str(PROJECT_ROOT)]
    if environment:
        prefix += ["--env", ",".join(f"{k}={v}" for k, v in environment.items())]
    return [*prefix, image]


def sbatch_script(
    spec: StudySpec,
    group: str,
    tasks: list[Task],
    resources: Resources,
    jobs_dir: Path,
    environment: dict[str, str],
    prefix: list[str],
) -> str:
    """A readable sbatch script running ``tasks`` as one array."""
    throttle = f"%{resources.max_running}" if resources.max_running else ""
    tasks_file = jobs_dir / f"{group}.tasks"
    lines = [
        "#!/bin/bash",
        f"# sparse-ticket study {spec.name!r}, stage {group!r}: {len(tasks)} DAG nodes, one array",
        f"# task each; task i runs line i+1 of {tasks_file.name}.",
        "# Generated by `python -m sparse_ticket_mlflow slurm submit`.",
        f"#SBATCH --job-name=st-{spec.name}-{group}",
        f"#SBATCH --array=0-{len(tasks) - 1}{throttle}",
        f"#SBATCH --output={jobs_dir / 'logs' / f'{group}_%A_%a.out'}",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        *(f"#SBATCH {line}" for line in resources.directives()),
        "",
        *(f"export {k}={shlex.quote(v)}" for k, v in environment.items()),
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        f"cd {shlex.quote(str(PROJECT_ROOT))}",
        f"exec bash {shlex.quote(str(RUN_TASK))} {shlex.quote(str(tasks_file))}"
        + "".join(f" {shlex.quote(word)}" for word in prefix),
        "",
    ]
    return "\n".join(lines)


def submit_script(path: Path, after: list[str]) -> str:
    """``sbatch`` a script, after the given jobs succeeded; returns the job id."""
    command = ["sbatch", "--parsable"]
    if after:
        command.append(f"--dependency=afterok:{':'.join(after)}")
    result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InputError(f"sbatch {path.name} failed: {result.stderr.strip() or result.stdout}")
    return result.stdout.strip().split(";")[0]


# ----------------------------------------------------------------------------- the command
def parse_resources(request: SubmitRequest) -> Resources:
    return Resources(
        partition=request.partition.strip(),
        account=request.account.strip(),
        gpus=parse_int(request.gpus, "gpus", minimum=0),
        cpus_per_task=parse_int(request.cpus_per_task, "cpus_per_task", minimum=1),
        mem=request.mem.strip(),
        time=request.time.strip(),
        signal_seconds=parse_int(request.signal_seconds, "signal_seconds", minimum=0),
        max_running=parse_int(request.max_running or "0", "max_running", minimum=0),
        extra=list(request.sbatch),
    )


def check_container(request: SubmitRequest) -> None:
    if request.container not in CONTAINERS:
        raise InputError(
            f"container must be one of {', '.join(CONTAINERS)}, not {request.container!r}"
        )
    if request.container != "none" and not Path(request.image).is_file():
        raise InputError(f"--image must be a .sif file for --container {request.container}")


def submit(request: SubmitRequest) -> int:
    """Plan, write and (unless a dry run) submit the study's array jobs."""
    check_container(request)
    resources = parse_resources(request)
    dry = parse_bool(request.dry_run, "dry_run")
    spec, nodes = load(StudyRequest(preset=request.preset))
    members = members_per_task(request.members_per_task, spec)
    uri = absolute_tracking_uri()
    path = store_path(uri)
    if path is not None:
        check_tracking(uri, filesystem_type(path.parent))
    code = code_version()
    key = study_key(spec.file.read_bytes(), code)
    client = mlflow.MlflowClient()
    experiment_id = study_experiment(client, spec.name, request.experiment.strip())
    parent = client.create_run(
        experiment_id,
        run_name=f"study {spec.name} (slurm)",
        tags={
            Tag.ENTRY_POINT: ENTRY_POINT,
            Tag.LAUNCHER: "slurm",
            Tag.STUDY_KEY: key,
            Tag.CODE_VERSION: code,
            Tag.STUDY_FILTER: evaluation_filter(key),
        },
    )
    parent_id = parent.info.run_id
    view = save_study_view(client, experiment_id, key)
    tracker = Tracker(experiment_id, parent_id, key, code)
    # --container none: this very environment (the cluster's nodes must see its path)
    mlflow_cmd = [sys.executable, "-m", "mlflow"] if request.container == "none" else ["mlflow"]
    plan = plan_tasks(nodes, tracker, experiment_id, mlflow_cmd, members)
    jobs_dir = (Path(request.jobs_dir) / f"{spec.name}-{parent_id[:8]}").resolve()
    (jobs_dir / "logs").mkdir(parents=True, exist_ok=True)
    checkpoints = checkpoint_root(TrainRequest(checkpoint_dir=request.checkpoint_dir))
    environment = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        CHECKPOINT_ENV: str(checkpoints),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    binds = [PROJECT_ROOT, checkpoints, jobs_dir] + ([path.parent] if path else [])
    image = str(Path(request.image).resolve())
    prefix = container_prefix(request.container, image, binds, environment)
    jobs = write_and_submit(spec, plan, resources, jobs_dir, environment, prefix, dry)
    client.log_artifacts(parent_id, str(jobs_dir), "slurm")
    client.set_tag(parent_id, Tag.SLURM_JOBS, ",".join(f"{g}:{j}" for g, j in jobs.items()))
    client.set_terminated(parent_id, "FINISHED")
    report(spec, plan, jobs, jobs_dir, dry)
    print(f"its runs in the MLflow UI: <UI address>/{view}")
    return 0


def write_and_submit(
    spec: StudySpec,
    plan: Plan,
    resources: Resources,
    jobs_dir: Path,
    environment: dict[str, str],
    prefix: list[str],
    dry: bool,
) -> dict[str, str]:
    """One script per stage group with work; each after the groups before it."""
    jobs: dict[str, str] = {}
    for group in ("dense", "mask", "train", "evaluate"):
        tasks = plan.groups.get(group, [])
        if not tasks:
            continue
        (jobs_dir / f"{group}.tasks").write_text("".join(t.command + "\n" for t in tasks))
        script = jobs_dir / f"{group}.sbatch"
        script.write_text(
            sbatch_script(spec, group, tasks, resources, jobs_dir, environment, prefix)
        )
        after = [] if dry else list(jobs.values())
        jobs[group] = "(dry run)" if dry else submit_script(script, after)
    return jobs


def report(spec: StudySpec, plan: Plan, jobs: dict[str, str], jobs_dir: Path, dry: bool) -> None:
    print(f"study {spec.name}: {plan.runs} runs to submit, {len(plan.reused)} reused")
    for group, job in jobs.items():
        print(f"  {group:9} {len(plan.groups[group]):5} tasks  job {job}")
    print(f"scripts, task lists and logs: {jobs_dir}")
    if not dry:
        print("watch them with: squeue --me")
    sys.stdout.flush()
