"""The local DAG scheduler: runs a study's nodes as processes, at most ``workers`` at a time.

A node starts once every upstream node has its finished run; a node whose upstream failed is
skipped. Each node runs as ``mlflow run . -e <entry point> --env-manager local --run-id <id>`` in
its pre-created run (:func:`node_command`); with ``members_per_task`` K > 1, ready nodes of one
shape (:func:`pack_key`) train as one population in one ``train-members`` process. A stop request
(SIGTERM, Ctrl-C) preempts the running nodes as SLURM does: they write a checkpoint and end KILLED.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus

from sparse_ticket_mlflow.contracts import NODE_LOGS, TRAIN_MEMBERS
from sparse_ticket_mlflow.dag import Node
from sparse_ticket_mlflow.node_runs import Decision, Tracker, absolute_tracking_uri, resolve
from sparse_ticket_mlflow.train_members import PACKABLE, describe_run

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 300  # how long stopped nodes may take to write their checkpoints


def node_command(node: Node, params: dict[str, str], run_id: str, experiment_id: str) -> list[str]:
    """``mlflow run`` of one node in its pre-created run (what a SLURM task runs too)."""
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "-e", node.entry_point]
    command += ["--env-manager", "local", "--experiment-id", experiment_id, "--run-id", run_id]
    for name, value in params.items():
        command += ["-P", f"{name}={value}"]
    return command


def members_command(run_ids: list[str]) -> list[str]:
    """``train-members`` of a pack of pre-created runs (one population in one process)."""
    return [
        sys.executable,
        "-m",
        "sparse_ticket_mlflow",
        TRAIN_MEMBERS,
        "--runs",
        ",".join(run_ids),
    ]


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
                self.tracker.client.log_artifact(run_id, str(item.log), NODE_LOGS)

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
