"""The ``main`` entry point: run a whole study as a DAG of MLflow runs, nested under one parent.

Every node of :func:`sparse_ticket_mlflow.dag.build_dag` becomes one ``mlflow run . -e <entry point>
--env-manager local --run-id <id>`` process, at most ``workers`` at a time, each in a run created
beforehand under the study's parent run. Before a node runs, its *key* is computed from its entry
point, its parameters with the upstream run ids filled in, and the code version
(:func:`sparse_ticket_mlflow.node_keys.code_version`). Then, in the study's experiment:

* a FINISHED run with that key is **reused** (nothing runs); a study that was interrupted, or
  run again, continues where it stopped;
* an unfinished ``train-dense`` / ``transfer`` run with that key and a complete checkpoint is
  **resumed** in the same run (``--run-id``: the entry point restores the checkpoint);
* otherwise a new run is created and the node **runs**.

Every node run of the study (reused ones too) is tagged with the study key
(``sparse_ticket.studies``), which is how the final ``evaluate`` node finds exactly this study's
runs. SIGTERM or Ctrl-C stops the running nodes the way SLURM preemption does (they write a
checkpoint and end KILLED), marks the parent KILLED and exits 143; run ``main`` again to go on.
One ``main`` runs a study at a time: a second on the same study folder (``<output dir>/<name>``)
exits 2 while the first lives (:mod:`sparse_ticket.locks`).

The study's experiment is the one the user chose (``mlflow run --experiment-name`` /
``--experiment-id``, ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``), else, and when that
is ``Default``, the one named after the study
(:func:`sparse_ticket_mlflow.node_runs.study_experiment`).
When ``mlflow run`` started this process in ``Default``, its run stays there as a pointer
(``sparse_ticket.study_experiment``, ``sparse_ticket.study_run``, a note) and the parent run is
created in the study's experiment.

This module is the entry point (parameters, the parent run, the dry run, the result); the
decisions per node are :mod:`sparse_ticket_mlflow.node_runs`'s, the processes
:mod:`sparse_ticket_mlflow.scheduler`'s.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import mlflow

from sparse_ticket.config import ConfigError
from sparse_ticket.locks import LOCK_FILE, FileLock, LockHeld
from sparse_ticket.sparsity.schedules import imp_levels
from sparse_ticket_mlflow.contracts import (
    DAG,
    EVALUATION,
    MAIN,
    MLFLOW_NOTE,
    MLFLOW_RUN_NAME,
    PLAN,
    STUDY,
    Tag,
    request_type,
)
from sparse_ticket_mlflow.dag import Node, build_dag, dag_size
from sparse_ticket_mlflow.errors import EXIT_PREEMPTED, InputError, parse_int
from sparse_ticket_mlflow.node_keys import code_version, study_key
from sparse_ticket_mlflow.node_runs import (
    Tracker,
    absolute_tracking_uri,
    evaluation_filter,
    find_study_experiment,
    reusable,
    save_study_view,
    study_experiment,
)
from sparse_ticket_mlflow.runs import TrainRequest, build_config
from sparse_ticket_mlflow.scheduler import Outcome, Scheduler, say
from sparse_ticket_mlflow.study import StudySpec, load_study
from sparse_ticket_mlflow.tracking import end_run_if_active, log_provenance

ENTRY_POINT = MAIN
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default


StudyRequest = request_type("StudyRequest", MAIN)
"""The ``main`` parameters as the user gave them (strings, validated here); an empty
``members_per_task`` is the preset's (``StudySpec.members_per_task``)."""


# ----------------------------------------------------------------------------- planning
def plan(spec: StudySpec) -> list[Node]:
    """The study's DAG; every training config is built (and validated) once here."""
    request = TrainRequest(
        game=spec.sources[0],
        algo=spec.algos[0],
        total_steps=str(spec.steps.mask),
        preset=spec.run_preset,
        overrides=spec.overrides_text,
    )
    config = build_config(request)
    for algo in spec.algos:
        for game in sorted(set(spec.sources) | set(spec.targets)):
            build_config(TrainRequest(**{**asdict(request), "game": game, "algo": algo}))
    rounds = len(imp_levels(spec.sparsities, config.sparsity.imp_prune_fraction))
    frames = config.env.frame_skip if config.env.suite == "atari" else 1
    return build_dag(spec, rounds, frames)


# ----------------------------------------------------------------------------- the entry point
def parse_bool(text: str, name: str) -> bool:
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InputError(f"{name} must be true or false, got {text!r}")


def load(request: StudyRequest) -> tuple[StudySpec, list[Node]]:
    """The study and its DAG, or InputError naming what is wrong."""
    try:
        spec = load_study(request.preset.strip())
        return spec, plan(spec)
    except ConfigError as error:
        raise InputError(str(error)) from None


def chosen_experiment() -> str:
    """The name of the experiment the user chose: that of the run ``mlflow run`` started for
    this process (``--experiment-name``, ``--experiment-id``), else the active one
    (``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``); ``Default`` when none was chosen."""
    client = mlflow.MlflowClient()
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        return client.get_experiment(client.get_run(run_id).info.experiment_id).name
    if os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip():
        return os.environ["MLFLOW_EXPERIMENT_NAME"].strip()  # created if it does not exist yet
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID", "").strip()
    return client.get_experiment(chosen).name if chosen else ""


def members_per_task(text: str, spec: StudySpec) -> int:
    """``--members-per-task``, or the preset's when it is empty."""
    if not text.strip():
        return spec.members_per_task
    return parse_int(text, "members_per_task", minimum=1)


def main_study(request: StudyRequest) -> int:
    """Run the entry point; returns the process exit code."""
    workers = parse_int(request.workers, "workers", minimum=1)
    planning_only = parse_bool(request.dry_run, "dry_run")
    spec, nodes = load(request)
    members = members_per_task(request.members_per_task, spec)
    rate = spec.agent_steps_per_sec
    if request.steps_per_sec.strip():
        rate = float(parse_int(request.steps_per_sec, "steps_per_sec", minimum=1))
    code = code_version()
    key = study_key(spec.file.read_bytes(), code)
    if planning_only:
        return dry_run(spec, nodes, rate, key, code)
    with study_lock(Path(request.output_dir).resolve() / spec.name, spec.name):
        return run_study(request, spec, nodes, key, code, workers, members)


@contextmanager
def study_lock(folder: Path, name: str) -> Iterator[None]:
    """One ``main`` per study folder (``<output dir>/<name>/LOCK``; sparse_ticket.locks)."""
    lock = FileLock(folder / LOCK_FILE, f"study {name}")
    try:
        lock.acquire()
    except LockHeld as error:
        raise InputError(f"{error}: another main process runs this study") from None
    try:
        yield
    finally:
        lock.release()


def run_study(
    request: StudyRequest,
    spec: StudySpec,
    nodes: list[Node],
    key: str,
    code: str,
    workers: int,
    members: int,
) -> int:
    """The study's parent run: schedule every node, then evaluate (``finish``)."""
    client = mlflow.MlflowClient()
    experiment = study_experiment(client, spec.name, chosen_experiment())
    launcher = os.environ.get("MLFLOW_RUN_ID", "")
    if launcher and client.get_run(launcher).info.experiment_id != experiment:
        del os.environ["MLFLOW_RUN_ID"]  # `mlflow run`'s run in Default: a pointer, not the parent
    else:
        launcher = ""
    with mlflow.start_run(experiment_id=experiment, run_name=f"study {spec.name}") as parent:
        log_study(spec, nodes, key, code, workers)
        view = save_study_view(client, experiment, key)
        if launcher:
            point_to_study(client, launcher, spec.name, experiment, parent.info.run_id, view)
        tracker = Tracker(parent.info.experiment_id, parent.info.run_id, key, code)
        log_dir = Path(request.output_dir).resolve() / spec.name / "logs"
        scheduler = Scheduler(nodes, tracker, workers, log_dir, members)
        previous = {
            s: signal.signal(s, scheduler.request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            outcome = scheduler.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return finish(spec, nodes, outcome, Path(request.output_dir).resolve(), view)


def point_to_study(
    client: mlflow.MlflowClient,
    run_id: str,
    name: str,
    experiment_id: str,
    parent_id: str,
    view: str,
) -> None:
    """Tag ``mlflow run``'s run in ``Default`` with where the study went."""
    experiment = client.get_experiment(experiment_id).name
    note = (
        f"Study **{name}** runs in experiment **{experiment}** (id {experiment_id}): its parent "
        f"run [study {name}](#/experiments/{experiment_id}/runs/{parent_id}), its runs "
        f"[as a table]({view})."
    )
    tags = {
        Tag.STUDY_EXPERIMENT: experiment_id,
        Tag.STUDY_RUN: parent_id,
        MLFLOW_RUN_NAME: f"study {name} -> experiment {experiment}",
        MLFLOW_NOTE: note,
    }
    for tag, value in tags.items():
        client.set_tag(run_id, tag, value)


def log_study(spec: StudySpec, nodes: list[Node], key: str, code: str, workers: int) -> None:
    """The parent run: the preset, the grid's size, and how to find the study's runs."""
    sizes = dag_size(nodes)
    log_provenance(
        {"preset": spec.name, "workers": workers, "nodes": len(nodes)},
        {
            Tag.ENTRY_POINT: ENTRY_POINT,
            Tag.STUDY_KEY: key,
            Tag.CODE_VERSION: code,
            Tag.STUDY_FILTER: evaluation_filter(key),
        },
    )
    mlflow.log_text(spec.file.read_text(), f"{STUDY}/{spec.name}.toml")
    mlflow.log_metrics(
        {
            "study/runs": sizes["total"].runs,
            "study/agent_steps": sizes["total"].agent_steps,
            "study/frames": sizes["total"].frames,
        }
    )


def finish(
    spec: StudySpec, nodes: list[Node], outcome: Outcome, output_root: Path, view: str = ""
) -> int:
    """Log the DAG with its run ids, fetch the evaluation, close the parent run."""
    record = [
        {
            "id": node.id,
            "entry_point": node.entry_point,
            "params": node.params,
            "upstream": node.upstream,
            "run_id": outcome.run_ids.get(node.id, ""),
            "action": outcome.actions.get(node.id, "skipped"),
        }
        for node in nodes
    ]
    mlflow.log_dict(record, DAG)
    mlflow.log_metrics(
        {
            "study/reused": outcome.count("reuse"),
            "study/ran": outcome.count("run"),
            "study/resumed": outcome.count("resume"),
            "study/failed": len(outcome.failed),
        }
    )
    ran = outcome.count("run") + outcome.count("resume")
    say(
        f"{len(nodes)} nodes: {ran} ran, {outcome.count('reuse')} reused, "
        f"{len(outcome.failed)} failed, {len(outcome.skipped)} skipped"
        + (f", {outcome.interrupted} stopped" if outcome.interrupted else "")
    )
    if outcome.stopped:
        say("stopped by signal; running nodes checkpointed. Run main again to continue.")
        end_run_if_active("KILLED")
        return EXIT_PREEMPTED
    if outcome.failed:
        say(f"failed: {', '.join(outcome.failed)}")
        end_run_if_active("FAILED")
        return 1
    fetch_evaluation(spec, outcome.run_ids["evaluate"], output_root / spec.name, view)
    return 0


def fetch_evaluation(spec: StudySpec, run_id: str, folder: Path, view: str = "") -> None:
    """Copy the evaluate run's tables and figures into ``folder`` and say where they are."""
    if folder.exists():
        shutil.rmtree(folder / EVALUATION, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=EVALUATION, dst_path=str(folder)
    )
    say(f"tables and figures: {folder / EVALUATION} (artifacts of evaluate run {run_id})")
    say(f"browse the study: mlflow ui --backend-store-uri {absolute_tracking_uri()}")
    if view:
        uri = absolute_tracking_uri()
        address = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
        say(f"  its runs: {address}/{view}")


# ----------------------------------------------------------------------------- dry run
def plan_text(spec: StudySpec, nodes: list[Node], rate: float, key: str, code: str) -> str:
    """The DAG, its size, and what it costs at ``rate`` agent steps per second."""
    lines = [f"study {spec.name}: {spec.description}", f"study key {key}, code version {code}"]
    if len(nodes) <= 80:
        for node in nodes:
            after = node.upstream if node.stage != "evaluate" else ["every node above"]
            lines.append(f"  {node.id}" + (f"  <- {', '.join(after)}" if after else ""))
    else:
        stages: dict[str, list[str]] = {}
        for node in nodes:
            stages.setdefault(node.stage, []).append(node.id)
        lines += [f"  {stage}: {ids[0]}, ... ({len(ids)} nodes)" for stage, ids in stages.items()]
    sizes = dag_size(nodes)
    lines.append(f"{'stage':10} {'runs':>6} {'agent steps':>16} {'frames':>16}")
    for stage, size in sizes.items():
        lines.append(f"{stage:10} {size.runs:>6} {size.agent_steps:>16,} {size.frames:>16,}")
    hours = sizes["total"].agent_steps / rate / 3600
    source = f" ({spec.steps_per_sec_source})" if spec.steps_per_sec_source else ""
    device = spec.steps_per_sec_device
    lines.append(f"at {rate:g} agent steps/s per run{source}: {hours:,.1f} {device}-hours")
    return "\n".join(lines)


def dry_run(spec: StudySpec, nodes: list[Node], rate: float, key: str, code: str) -> int:
    """Print the plan; inside ``mlflow run`` also log it to the run it created."""
    text = plan_text(spec, nodes, rate, key, code)
    client = mlflow.MlflowClient()
    experiment = find_study_experiment(client, spec.name, chosen_experiment())
    done = reusable(nodes, Tracker(experiment, "", key, code)) if experiment else {}
    name = client.get_experiment(experiment).name if experiment else spec.name
    text += f"\n{len(done)} of {len(nodes)} nodes already finished in experiment {name!r} (reused)"
    print(text)
    if os.environ.get("MLFLOW_RUN_ID"):
        with mlflow.start_run():
            mlflow.set_tags({Tag.ENTRY_POINT: ENTRY_POINT, Tag.DRY_RUN: "true"})
            mlflow.log_text(text, PLAN)
    return 0
