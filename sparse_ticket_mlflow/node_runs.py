"""A study's node runs in the tracking store: found by key, reused, resumed or created.

Every node run of a study is a run of the study's experiment, nested under its parent run and
tagged with the node's key (:func:`sparse_ticket_mlflow.node_keys.node_key`) and with the key of
every study it serves. :class:`Tracker` decides what to do with a node: reuse a FINISHED run with
its key, resume an unfinished ``train-dense`` / ``transfer`` run that has a complete checkpoint, or
run it in a new (or a SCHEDULED, never started) run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from sparse_ticket.checkpoint import CheckpointManager
from sparse_ticket_mlflow.contracts import LATEST_CHECKPOINT, RESUMABLE, Tag
from sparse_ticket_mlflow.dag import Node
from sparse_ticket_mlflow.node_keys import node_key


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


def absolute_tracking_uri() -> str:
    """The tracking URI with a relative sqlite path made absolute (children run elsewhere)."""
    uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri
