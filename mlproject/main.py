"""The ``main`` entry point: run a whole study as a DAG of MLflow runs, nested under one parent.

Every node of :func:`mlproject.study.build_dag` becomes one ``mlflow run . -e <entry point>
--env-manager local --run-id <id>`` process, at most ``workers`` at a time, each in a run created
beforehand under the study's parent run. Before a node runs, its *key* is computed from its entry
point, its parameters with the upstream run ids filled in, and the code version
(:func:`mlproject.study.code_version`). Then, in the parent's experiment:

* a FINISHED run with that key is **reused** (nothing runs); a study that was interrupted, or
  run again, continues where it stopped;
* an unfinished ``train-dense`` / ``transfer`` run with that key and a complete checkpoint is
  **resumed** in the same run (``--run-id``: the entry point restores the checkpoint);
* otherwise a new run is created and the node **runs**.

Every node run of the study (reused ones too) is tagged with the study key
(``sparse_ticket.studies``), which is how the final ``evaluate`` node finds exactly this study's
runs. SIGTERM or Ctrl-C stops the running nodes the way SLURM preemption does (they write a
checkpoint and end KILLED), marks the parent KILLED and exits 143; run ``main`` again to go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus

from mlproject.contracts import (
    DAG,
    EVALUATION,
    LATEST_CHECKPOINT,
    MAIN,
    PLAN,
    RESUMABLE,
    STUDY,
    TRAIN_MEMBERS,
    Tag,
)
from mlproject.errors import EXIT_PREEMPTED, InputError, parse_int
from mlproject.runs import TrainRequest, build_config
from mlproject.study import (
    Node,
    StudySpec,
    build_dag,
    code_version,
    dag_size,
    load_study,
)
from mlproject.tracking import end_run_if_active, log_provenance
from mlproject.train_members import PACKABLE, describe_run
from sparse_ticket.checkpoint import CheckpointManager
from sparse_ticket.config import ConfigError
from sparse_ticket.sparsity.schedules import imp_levels

ENTRY_POINT = MAIN
NODE_TAGS = ("node", "node_key", "code_version", "studies")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 300  # how long stopped nodes may take to write their checkpoints


@dataclass
class StudyRequest:
    """The entry point's parameters as the user gave them (strings, validated here)."""

    preset: str = "demo"
    workers: str = "2"  # as MLproject's (tests/test_mlproject_file.py)
    dry_run: str = "false"
    output_dir: str = "studies"
    steps_per_sec: str = ""
    members_per_task: str = ""  # empty: the preset's (StudySpec.members_per_task)


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


def node_key(node: Node, params: dict[str, str], code: str, upstream: list[str]) -> str:
    """What makes a node's result: entry point, resolved params, upstream runs, code version."""
    payload = json.dumps(
        {"entry": node.entry_point, "params": params, "upstream": upstream, "code": code},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def study_key(preset_text: bytes, code: str) -> str:
    """One study: its preset file and the code version."""
    return hashlib.sha256(preset_text + code.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- tracking
@dataclass
class Decision:
    """What to do with a node: ``reuse`` a finished run, ``resume`` one, or ``run`` anew."""

    action: str
    run_id: str = ""


class Tracker:
    """The study's view of the tracking store: node runs by key, under one parent run."""

    def __init__(self, experiment_id: str, parent_id: str, key: str, code: str) -> None:
        self.client = mlflow.MlflowClient()
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.key = key
        self.code = code

    def runs_with_key(self, key: str) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{Tag.NODE_KEY}` = '{key}'",
            order_by=["attributes.start_time DESC"],
        )

    def decide(self, node: Node, key: str) -> Decision:
        runs = self.runs_with_key(key)
        for run in runs:
            if run.info.status == "FINISHED":
                self.join(run)
                return Decision("reuse", run.info.run_id)
        for run in runs:
            if node.entry_point in RESUMABLE and has_checkpoint(run):
                self.join(run)
                return Decision("resume", run.info.run_id)
        for run in runs:
            if run.info.status == "SCHEDULED":  # created for a launch that never started
                self.join(run)
                return Decision("run", run.info.run_id)
        return Decision("run")

    def join(self, run: Any) -> None:
        """Tag a run as part of this study too (a run may serve several studies)."""
        studies = [s for s in run.data.tags.get(Tag.STUDIES, "").split(",") if s]
        if self.key not in studies:
            self.client.set_tag(run.info.run_id, Tag.STUDIES, ",".join([*studies, self.key]))

    def create(self, node: Node, key: str) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=node.id,
            tags={
                "mlflow.parentRunId": self.parent_id,
                Tag.NODE: node.id,
                Tag.NODE_KEY: key,
                Tag.CODE_VERSION: self.code,
                Tag.STUDIES: self.key,
            },
        )
        return run.info.run_id

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status


def has_checkpoint(run: Any) -> bool:
    """Whether an unfinished training run can be resumed (local or artifact checkpoint)."""
    if run.data.tags.get(Tag.ENTRY_POINT) not in RESUMABLE:
        return False
    directory = run.data.tags.get(Tag.CHECKPOINT_DIR)
    if directory and CheckpointManager(Path(directory)).latest() is not None:
        return True
    artifacts = mlflow.MlflowClient().list_artifacts(run.info.run_id, LATEST_CHECKPOINT)
    return any(a.path.endswith("COMPLETE") for a in artifacts)


def node_params(node: Node, run_ids: dict[str, str], key: str) -> dict[str, str]:
    """A node's parameters once its upstream runs exist (evaluate: this study's runs)."""
    params = node.resolved(run_ids)
    if node.stage == "evaluate":
        params["study"] = evaluation_filter(key)
    return params


def resolve(node: Node, run_ids: dict[str, str], tracker: Tracker) -> tuple[dict[str, str], str]:
    """A node's parameters and key, once its upstream runs are known."""
    params = node_params(node, run_ids, tracker.key)
    upstream = [run_ids[u] for u in node.upstream]
    return params, node_key(node, params, tracker.code, upstream)


def reusable(nodes: list[Node], tracker: Tracker) -> dict[str, str]:
    """The nodes that would be reused now (node id -> finished run id); changes nothing."""
    run_ids: dict[str, str] = {}
    for node in nodes:
        if not all(u in run_ids for u in node.upstream):
            continue
        _, key = resolve(node, run_ids, tracker)
        finished = [r for r in tracker.runs_with_key(key) if r.info.status == "FINISHED"]
        if finished:
            run_ids[node.id] = finished[0].info.run_id
    return run_ids


def evaluation_filter(key: str) -> str:
    """The ``search_runs`` filter of every run of study ``key``."""
    return f"tags.`{Tag.STUDIES}` LIKE '%{key}%'"


# ----------------------------------------------------------------------------- launching
def node_command(node: Node, params: dict[str, str], run_id: str, experiment_id: str) -> list[str]:
    """``mlflow run`` of one node in its pre-created run (what a SLURM task runs too)."""
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "-e", node.entry_point]
    command += ["--env-manager", "local", "--experiment-id", experiment_id, "--run-id", run_id]
    for name, value in params.items():
        command += ["-P", f"{name}={value}"]
    return command


def members_command(run_ids: list[str]) -> list[str]:
    """``train-members`` of a pack of pre-created runs (one population in one process)."""
    return [sys.executable, "-m", "mlproject", TRAIN_MEMBERS, "--runs", ",".join(run_ids)]


def pack_key(node: Node, params: dict[str, str]) -> str:
    """Nodes with equal keys can train as one population: the same entry point and
    parameters but for the seed and the seed's own upstream runs."""
    shape = {k: v for k, v in sorted(params.items()) if k != "seed" and k not in node.refs}
    return json.dumps([node.entry_point, node.stage, shape])


def node_environment(workers: int) -> dict[str, str]:
    """The children's environment: our tracking store, no parent run, a share of the cores."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID",)}
    env["MLFLOW_TRACKING_URI"] = absolute_tracking_uri()
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    return env


def absolute_tracking_uri() -> str:
    """The tracking URI with a relative sqlite path made absolute (children run elsewhere)."""
    uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


@dataclass
class Running:
    """A process in flight: one node, or a pack of nodes trained as one population."""

    nodes: list[Node]
    run_ids: list[str]
    process: subprocess.Popen
    log: Path


@dataclass
class Outcome:
    """What happened to every node."""

    run_ids: dict[str, str] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: bool = False

    def count(self, action: str) -> int:
        """Nodes that ended with ``action`` (a node stopped half-way is not counted)."""
        return sum(1 for n, a in self.actions.items() if a == action and n in self.run_ids)

    @property
    def interrupted(self) -> int:
        return sum(1 for n in self.actions if n not in self.run_ids and n not in self.failed)


class Scheduler:
    """Runs a DAG's nodes in order of readiness, at most ``workers`` processes at a time."""

    def __init__(
        self,
        nodes: list[Node],
        tracker: Tracker,
        workers: int,
        log_dir: Path,
        members_per_task: int = 1,
    ) -> None:
        self.nodes = nodes
        self.tracker = tracker
        self.workers = workers
        self.members_per_task = members_per_task
        self.log_dir = log_dir
        self.outcome = Outcome()
        self.running: dict[str, Running] = {}
        self.stop_requested = False
        self.blocked: set[str] = set()
        self.decisions: dict[str, tuple[dict[str, str], str, Decision]] = {}

    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    def run(self) -> Outcome:
        pending = deque(self.nodes)
        while pending or self.running:
            if self.stop_requested:
                self._stop()
                break
            pending = self._start_ready(pending)
            self._collect()
            if self.running:
                time.sleep(POLL_SECONDS)
        return self.outcome

    def _start_ready(self, pending: deque[Node]) -> deque[Node]:
        waiting: deque[Node] = deque()
        ready: list[Node] = []
        for node in pending:
            upstream = node.upstream
            if any(u in self.blocked for u in upstream):
                self.blocked.add(node.id)
                self.outcome.skipped.append(node.id)
                continue
            if not all(u in self.outcome.run_ids for u in upstream) or self.stop_requested:
                waiting.append(node)
                continue
            ready.append(node)
        left = {node.id for unit in self._units(ready) if not self._start(unit) for node in unit}
        waiting.extend(node for node in ready if node.id in left)
        return waiting

    def _decide(self, node: Node) -> tuple[dict[str, str], str, Decision]:
        if node.id not in self.decisions:  # once: a node may wait long for a worker
            params, key = resolve(node, self.outcome.run_ids, self.tracker)
            self.decisions[node.id] = (params, key, self.tracker.decide(node, key))
        return self.decisions[node.id]

    def _units(self, ready: list[Node]) -> list[list[Node]]:
        """The ready nodes to launch, alone or packed; reused nodes are done at once."""
        units: list[list[Node]] = []
        packs: dict[str, list[Node]] = {}
        for node in ready:
            params, _, decision = self._decide(node)
            if decision.action == "reuse":
                self._done(node, decision.run_id, "reuse")
            elif self.members_per_task > 1 and node.entry_point in PACKABLE:
                packs.setdefault(pack_key(node, params), []).append(node)
            else:
                units.append([node])
        size = self.members_per_task
        for group in packs.values():
            units += [group[i : i + size] for i in range(0, len(group), size)]
        return units

    def _start(self, unit: list[Node]) -> bool:
        """Launch a node or a pack of nodes; False when every worker is busy."""
        if len(self.running) >= self.workers:
            return False
        run_ids = []
        for node in unit:
            params, key, decision = self._decide(node)
            run_id = decision.run_id or self.tracker.create(node, key)
            if len(unit) > 1:
                describe_run(run_id, node.entry_point, params)
            run_ids.append(run_id)
            self.outcome.actions[node.id] = decision.action
        if len(unit) == 1:
            params, _, _ = self._decide(unit[0])
            command = node_command(unit[0], params, run_ids[0], self.tracker.experiment_id)
        else:
            command = members_command(run_ids)
        self._launch(unit, run_ids, command)
        return True

    def _launch(self, unit: list[Node], run_ids: list[str], command: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{unit[0].id.replace('/', '_').replace('>', '')}.log"
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=node_environment(self.workers),
                cwd=PROJECT_ROOT,
                start_new_session=True,  # our SIGTERM reaches mlflow run and the entry point
            )
        self.running[unit[0].id] = Running(unit, run_ids, process, log)
        for node, run_id in zip(unit, run_ids, strict=True):
            verb = "resume" if self.outcome.actions[node.id] == "resume" else "start "
            packed = f", one of {len(unit)} in one process" if len(unit) > 1 else ""
            say(f"{verb} {node.id}  (run {run_id}{packed})")

    def _collect(self) -> None:
        for unit_id, item in list(self.running.items()):
            code = item.process.poll()
            if code is None:
                continue
            del self.running[unit_id]
            self._log_node_output(item)
            for node, run_id in zip(item.nodes, item.run_ids, strict=True):
                if code == 0 and self.tracker.status(run_id) == "FINISHED":
                    self._done(node, run_id, self.outcome.actions[node.id])
                elif not self.stop_requested:
                    self._end_unterminated(run_id, "FAILED")  # e.g. killed for memory
                    self.blocked.add(node.id)
                    self.outcome.failed.append(node.id)
                    say(f"FAILED {node.id} (exit {code}); log: {item.log}")
            if code != 0 and not self.stop_requested:
                say("  " + "\n  ".join(tail(item.log, 5)))

    def _done(self, node: Node, run_id: str, action: str) -> None:
        self.outcome.run_ids[node.id] = run_id
        self.outcome.actions[node.id] = action
        verb = {"reuse": "reused", "resume": "resumed", "run": "done"}[action]
        say(f"{verb:6} {node.id}  (run {run_id})")

    def _log_node_output(self, item: Running) -> None:
        # The log stays on disk; failing to copy it must not fail the study.
        for run_id in item.run_ids:
            with contextlib.suppress(mlflow.exceptions.MlflowException, OSError):
                self.tracker.client.log_artifact(run_id, str(item.log), "logs")

    def _stop(self) -> None:
        """Preempt the running nodes: SIGTERM makes them checkpoint and end KILLED."""
        self.outcome.stopped = True
        for item in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(item.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for item in self.running.values():
            try:
                item.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(item.process.pid, signal.SIGKILL)
            self._log_node_output(item)
            for run_id in item.run_ids:
                self._end_unterminated(run_id, "KILLED")
        self.running.clear()

    def _end_unterminated(self, run_id: str, status: str) -> None:
        """End a node's run that its process left RUNNING (it died before it could)."""
        if not RunStatus.is_terminated(RunStatus.from_string(self.tracker.status(run_id))):
            self.tracker.client.set_terminated(run_id, status)


def tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def say(text: str) -> None:
    print(f"main: {text}", flush=True)


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


def experiment_id() -> str:
    """The experiment a run started now would go to (``mlflow run``'s, or the active one)."""
    from mlflow.tracking.fluent import _get_experiment_id

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        return mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return _get_experiment_id()


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
    with mlflow.start_run(run_name=f"study {spec.name}") as parent:
        log_study(spec, nodes, key, code, workers)
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
        return finish(spec, nodes, outcome, Path(request.output_dir).resolve())


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


def finish(spec: StudySpec, nodes: list[Node], outcome: Outcome, output_root: Path) -> int:
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
    fetch_evaluation(spec, outcome.run_ids["evaluate"], output_root / spec.name)
    return 0


def fetch_evaluation(spec: StudySpec, run_id: str, folder: Path) -> None:
    """Copy the evaluate run's tables and figures into ``folder`` and say where they are."""
    if folder.exists():
        shutil.rmtree(folder / EVALUATION, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=EVALUATION, dst_path=str(folder)
    )
    say(f"tables and figures: {folder / 'evaluation'} (artifacts of evaluate run {run_id})")
    say(f"browse the study: mlflow ui --backend-store-uri {absolute_tracking_uri()}")


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
    done = reusable(nodes, Tracker(experiment_id(), "", key, code))
    text += f"\n{len(done)} of {len(nodes)} nodes already finished in this experiment (reused)"
    print(text)
    if os.environ.get("MLFLOW_RUN_ID"):
        with mlflow.start_run():
            mlflow.set_tags({Tag.ENTRY_POINT: ENTRY_POINT, Tag.DRY_RUN: "true"})
            mlflow.log_text(text, PLAN)
    return 0
