"""A study's node runs in the tracking store: found by key, reused, resumed or created.

Every node run of a study is a run of the study's experiment, nested under its parent run and
tagged with the node's key (:func:`sparse_ticket_mlflow.node_keys.node_key`) and with the key of
every study it serves. :class:`Tracker` decides what to do with a node: reuse a FINISHED run with
its key, resume an unfinished ``train-dense`` / ``transfer`` run that has a complete checkpoint
or a ``find-mask`` chain that has started (it continues from its last finished round), or run it
in a new (or a SCHEDULED, never started) run. Every node run also carries its node's condition
as tags (``contracts.CONDITION_TAGS``), the columns the runs table groups and compares by.

A study's experiment is found by one rule, for ``main`` and ``slurm submit`` alike
(:func:`study_experiment`): the one the user chose, unless that is ``Default``, else the one named
after the study; either way it is marked as model training (``mlflow.experimentKind``) and holds
the study's saved runs-table view (:func:`save_study_view`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow

from sparse_ticket.checkpoint import CheckpointManager
from sparse_ticket_mlflow.contracts import (
    CONDITION_TAGS,
    DEFAULT_EXPERIMENT_ID,
    EXPERIMENT_KIND,
    LATEST_CHECKPOINT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
    MODEL_TRAINING,
    MODEL_TRAINING_WORKFLOW,
    RESUMABLE,
    RESUMABLE_CHAINS,
    SHARED_VIEW,
    SHARED_VIEW_PARAM,
    WORKFLOW_PARAM,
    Tag,
)
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
                self.join(run, node)
                return Decision("reuse", run.info.run_id)
        for run in runs:
            if has_checkpoint(run) or has_started_chain(run):
                self.join(run, node)
                return Decision("resume", run.info.run_id)
        for run in runs:
            if run.info.status == "SCHEDULED":  # created for a launch that never started
                self.join(run, node)
                return Decision("run", run.info.run_id)
        return Decision("run")

    def join(self, run: Any, node: Node) -> None:
        """Tag a run as part of this study too (a run may serve several studies), and with the
        condition tags it lacks (a run made before they existed)."""
        tags = {k: v for k, v in condition_tags(node).items() if k not in run.data.tags}
        studies = [s for s in run.data.tags.get(Tag.STUDIES, "").split(",") if s]
        if self.key not in studies:
            tags[Tag.STUDIES] = ",".join([*studies, self.key])
        for name, value in tags.items():
            self.client.set_tag(run.info.run_id, name, value)

    def create(self, node: Node, key: str) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=node.id,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id,
                Tag.NODE: node.id,
                Tag.NODE_KEY: key,
                Tag.CODE_VERSION: self.code,
                Tag.STUDIES: self.key,
                **condition_tags(node),
            },
        )
        return run.info.run_id

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status


def condition_tags(node: Node) -> dict[str, str]:
    """The tags of a node's condition (``contracts.CONDITION_TAGS``)."""
    return {CONDITION_TAGS[name]: value for name, value in node.condition.items()}


def has_checkpoint(run: Any) -> bool:
    """Whether an unfinished training run can be resumed (local or artifact checkpoint)."""
    if run.data.tags.get(Tag.ENTRY_POINT) not in RESUMABLE:
        return False
    directory = run.data.tags.get(Tag.CHECKPOINT_DIR)
    if directory and CheckpointManager(Path(directory)).latest() is not None:
        return True
    artifacts = mlflow.MlflowClient().list_artifacts(run.info.run_id, LATEST_CHECKPOINT)
    return any(a.path.endswith("COMPLETE") for a in artifacts)


def has_started_chain(run: Any) -> bool:
    """Whether an unfinished find-mask run has started (it continues from its last finished
    round, and inside that round from its checkpoint)."""
    return run.data.tags.get(Tag.ENTRY_POINT) in RESUMABLE_CHAINS


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


# ----------------------------------------------------------------------------- the experiment
def study_experiment(client: mlflow.MlflowClient, study: str, chosen: str = "") -> str:
    """The id of a study's experiment: ``chosen`` (a name) if the user chose one and it is not
    ``Default``, else the experiment named ``study``; created if missing, marked model training.

    ``Default`` (id 0) is where ``mlflow run`` puts a run when nobody chose an experiment, so it
    counts as no choice: a study never lands among the unsorted runs of ``Default``.
    """
    if chosen and not is_default(client.get_experiment_by_name(chosen)):
        return ensure_experiment(client, chosen)
    return ensure_experiment(client, study)


def find_study_experiment(client: mlflow.MlflowClient, study: str, chosen: str = "") -> str:
    """The id of the experiment :func:`study_experiment` would pick, without creating or tagging
    it; ``""`` while it does not exist (a dry run)."""
    name = chosen if chosen and not is_default(client.get_experiment_by_name(chosen)) else study
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else ""


def is_default(experiment: Any) -> bool:
    return experiment is not None and experiment.experiment_id == DEFAULT_EXPERIMENT_ID


def ensure_experiment(client: mlflow.MlflowClient, name: str) -> str:
    """The experiment ``name``, created if missing (a deleted one is restored: the name is the
    study's), marked as model training: the UI opens it on its runs table."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        tags = {EXPERIMENT_KIND: MODEL_TRAINING}
        return client.create_experiment(name, artifact_location(client, name), tags)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return experiment.experiment_id


def artifact_location(client: mlflow.MlflowClient, name: str) -> str | None:
    """Where a new experiment of a local store keeps its artifacts: beside ``Default``'s
    (``<store folder>/mlruns/<name>``), not under this process's working directory (``mlflow
    run`` runs ``main`` in the project's folder). None for a server: the server decides."""
    if absolute_tracking_uri().startswith(("http://", "https://")):
        return None
    default = client.get_experiment(DEFAULT_EXPERIMENT_ID)
    if default is None or "/" not in default.artifact_location:
        return None
    root = default.artifact_location.rstrip("/").rsplit("/", 1)[0]
    folder = re.sub(r"[^\w.-]", "_", name)
    return f"{root}/{folder}"


# ----------------------------------------------------------------------------- the study's view
VIEW_COLUMNS = tuple(f"tags.`{tag}`" for tag in CONDITION_TAGS.values())
"""The study view's columns (the UI's column keys): the condition of every node run."""


def study_view(key: str) -> dict[str, Any]:
    """Study ``key``'s runs table, as the UI saves a shared view: the study's node runs only,
    flat (a search filter: not nested under the parent's one collapsed row), sorted by node id,
    with the condition columns."""
    return {
        "searchFilter": evaluation_filter(key),
        "orderByKey": f"tags.`{MLFLOW_RUN_NAME}`",
        "orderByAsc": True,
        "selectedColumns": list(VIEW_COLUMNS),
    }


def save_study_view(client: mlflow.MlflowClient, experiment_id: str, key: str) -> str:
    """Save study ``key``'s view on its experiment; the UI route that opens it."""
    client.set_experiment_tag(experiment_id, SHARED_VIEW + key, json.dumps(study_view(key)))
    return study_view_route(experiment_id, key)


def study_view_route(experiment_id: str, key: str) -> str:
    """``#/experiments/<id>/runs?viewStateShareKey=<key>&workflowType=machine_learning``: to
    append to the UI's address (the Model training side of its switch, whatever the browser
    chose last)."""
    query = f"{SHARED_VIEW_PARAM}={quote(key)}&{WORKFLOW_PARAM}={MODEL_TRAINING_WORKFLOW}"
    return f"#/experiments/{experiment_id}/runs?{query}"
