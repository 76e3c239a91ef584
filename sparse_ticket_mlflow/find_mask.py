"""The ``find-mask`` entry point: IMP (lottery tickets), GMP or random masks on a source game.

One parent run per call; every training round (IMP's dense round and pruned rounds, one GMP run
per level, one random-control run per level) is a nested run with its own learning curves.
Artifact contract of the parent run, per requested level (``sparsity_0.60/`` ...)::

    mask.pt, mask.json          {"q.encoder.conv1.weight": bool tensor, ...} and its sidecar
    ticket.pt, ticket.json      {role: state_dict}: the rewound weights under the mask
    trained.pt, trained.json    {role: state_dict}: the weights after training under the mask
    rewind.pt, rewind.json      {role: state_dict}: the unmasked rewind point (init, or step k)
    tickets.json                one row per level: realised sparsity, round run id, final eval

The random-ticket control (``--method random --template <mask> --random-weights ticket``) puts
the template's ``rewind.pt`` under its random mask, so its active weights start at their original
initial values (Frankle & Carbin 2019), not at the template ticket's zeros; ``--random-weights
reinit`` draws a fresh init from the ``reinit`` stream instead (``TrainConfig.init_stream``).

Sidecars hold the method, the target and realised sparsity (overall and per layer), source game,
algo, seed, the architecture fingerprint, and content hashes. A mask is loaded back by its
``runs:/<run_id>/sparsity_0.60/mask.pt`` URI with :func:`sparse_ticket_mlflow.runs.load_mask_uri`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking.context.registry import resolve_tags

from sparse_ticket.building import probe_parameters
from sparse_ticket.checkpoint import CheckpointError, load_weights
from sparse_ticket.config import ConfigError, TrainConfig, apply_overrides, flatten, validate
from sparse_ticket.locks import LOCK_FILE, FileLock, LockHeld
from sparse_ticket.lottery import (
    RANDOM_WEIGHTS,
    TICKET_METHODS,
    Chain,
    DenseStart,
    Ticket,
    flat_weights,
    gmp_chain,
    imp_chain,
    random_chain,
    run_chain,
)
from sparse_ticket.metric_log import MetricSink, NullSink
from sparse_ticket.sparsity.masks import (
    MaskError,
    architecture_fingerprint,
    check_compatible,
    content_hash,
    overlap,
    role_sparsity,
    save_mask,
    sparsity_report,
)
from sparse_ticket.stats.bootstrap import interquartile_mean
from sparse_ticket_mlflow.contracts import (
    FINAL_WEIGHTS,
    FIND_MASK,
    FIND_MASK_ROUND,
    FIND_REQUEST,
    MASK,
    REWIND,
    TICKET,
    TICKETS,
    TRAINED,
    Tag,
    checkpoint_weights,
    request_type,
    rewind_file,
    run_uri,
    sparsity_folder,
)
from sparse_ticket_mlflow.errors import EXIT_PREEMPTED, InputError
from sparse_ticket_mlflow.runs import (
    TrainRequest,
    build_config,
    check_device,
    checkpoint_root,
    download,
    download_checked,
    file_hash,
    load_mask_uri,
    run_checkpoint_dir,
    run_config,
    run_id_of,
)
from sparse_ticket_mlflow.tracking import (
    MlflowSink,
    end_run_if_active,
    last_logged_step,
    log_provenance,
)

ENTRY_POINT = FIND_MASK

FindMaskRequest = request_type("FindMaskRequest", FIND_MASK, base=TrainRequest)
"""``train-dense``'s parameters plus the mask-finding ones (strings, validated here)."""


def parse_levels(text: str) -> list[float]:
    """``"0.6,0.7,0.8"`` -> sorted unique levels in (0, 1)."""
    try:
        levels = sorted({round(float(part), 6) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(f"sparsities must be comma-separated numbers, got {text!r}") from None
    if not levels or any(not 0.0 < level < 1.0 for level in levels):
        raise InputError(f"sparsities must be in (0, 1), got {text!r}")
    return levels


# ----------------------------------------------------------------------------- configuration
def build_find_config(request: FindMaskRequest) -> tuple[TrainConfig, list[float]]:
    """The training config of every round, and the requested levels."""
    if request.method not in TICKET_METHODS:
        raise InputError(f"unknown method {request.method!r} ({', '.join(TICKET_METHODS)})")
    config = build_config(request)
    try:
        apply_overrides(
            config, {"sparsity.scope": request.scope, "sparsity.allocation": request.allocation}
        )
        apply_overrides(config, request.overrides)  # explicit overrides still win
        validate(config)
    except ConfigError as error:
        raise InputError(str(error)) from None
    if request.random_weights not in RANDOM_WEIGHTS:
        raise InputError(f"random_weights must be ticket or reinit, got {request.random_weights!r}")
    if request.method == "random" and request.random_weights == "reinit":
        # Its own stream: the "init" stream would give the template ticket's init again.
        config.init_stream = "reinit"
    return config, parse_levels(request.sparsities)


def dense_start(uri: str, config: TrainConfig) -> DenseStart:
    """Round 0 from a ``train-dense`` run: its init (or step-k) and final weights."""
    run_id = run_id_of(uri, "dense_run")
    dense_config = run_config(run_id)
    for key in ("game", "agent.algo", "agent.encoder", "env.frame_stack", "env.suite"):
        mine, theirs = flatten(config)[key], flatten(dense_config)[key]
        if mine != theirs:
            raise InputError(f"dense_run {run_id} has {key}={theirs}, this run {key}={mine}")
    rewind_path = checkpoint_weights(rewind_file(config.sparsity.imp_rewind_step))
    final_path = checkpoint_weights(FINAL_WEIGHTS)
    try:
        rewind = load_weights(download(run_uri(run_id, rewind_path), "dense_run"))
        trained = load_weights(download(run_uri(run_id, final_path), "dense_run"))
    except CheckpointError as error:
        raise InputError(str(error)) from None
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/episode_score")
    scores = [m.value for m in sorted(history, key=lambda m: m.step)]
    return DenseStart(rewind, trained, scores)


# ----------------------------------------------------------------------------- artifacts
class MlflowRounds:
    """:class:`~sparse_ticket.lottery.RoundHooks` that nest a run per round and log tickets.

    Driven again on a run that has started before (a resumed chain), a round whose nested run
    exists is continued in it: a FINISHED one logs nothing more (its runner resumes its final
    checkpoint), an interrupted one is reopened and logs only steps after its last logged one;
    ticket metrics already logged are not logged twice.
    """

    def __init__(self, parent_id: str, config: TrainConfig, method: str, scratch: Path) -> None:
        self.parent_id = parent_id
        self.config = config
        self.method = method
        self.scratch = scratch
        self.rounds: dict[int, str] = {}
        self.summary: list[dict[str, Any]] = []
        self.previous_mask: dict[str, torch.Tensor] | None = None
        self.earlier = earlier_rounds(parent_id)

    @contextmanager
    def round(self, index: int, sparsity: float) -> Iterator[MetricSink]:
        """A run nested under the parent for one round; KILLED if a signal stopped it, FAILED
        if it raised."""
        client = mlflow.MlflowClient()
        child, status = self.earlier.get(index, ("", ""))
        self.rounds[index] = child = child or self._create(index, sparsity)
        if status == "FINISHED":
            yield NullSink()
            return
        if status:
            client.update_run(child, "RUNNING")
        try:
            yield MlflowSink(child, skip_until=last_logged_step(child) if status else -1)
        except InterruptedError:
            client.set_terminated(child, "KILLED")
            raise
        except BaseException:
            client.set_terminated(child, "FAILED")
            raise
        client.set_terminated(child, "FINISHED")

    def _create(self, index: int, sparsity: float) -> str:
        name = (
            f"{self.method}-round-{index}"
            if self.method == "imp"
            else f"{self.method}-{sparsity:.2f}"
        )
        client = mlflow.MlflowClient()
        parent = client.get_run(self.parent_id)
        tags = {
            "mlflow.parentRunId": self.parent_id,
            Tag.ENTRY_POINT: FIND_MASK_ROUND,
            Tag.ROUND: str(index),
            Tag.SPARSITY: f"{sparsity:.6g}",
            Tag.METHOD: self.method,
        }
        child = client.create_run(
            parent.info.experiment_id, run_name=name, tags=resolve_tags(tags)
        ).info.run_id
        client.log_batch(
            child, params=[Param("round", str(index)), Param("round_sparsity", str(sparsity))]
        )
        return child

    def _sidecar(self, ticket: Ticket, kind: str, path: Path) -> dict[str, Any]:
        report = sparsity_report(ticket.mask)
        return {
            "kind": kind,
            "method": self.method,
            "sparsity_target": ticket.sparsity,
            "sparsity": report["overall"],
            "per_layer": {k: v for k, v in report.items() if k != "overall"},
            "per_role": role_sparsity(ticket.mask),
            "source_game": self.config.game,
            "algo": self.config.agent.algo,
            "encoder": self.config.agent.encoder,
            "seed": self.config.seed,
            "scope": self.config.sparsity.scope,
            "allocation": self.config.sparsity.allocation,
            "rewind_step": self.config.sparsity.imp_rewind_step,
            "round": ticket.round_index,
            "round_run_id": self.rounds.get(ticket.round_index, ""),
            "source_run_id": self.parent_id,
            "architecture": architecture_fingerprint(flat_weights(ticket.trained_weights)),
            "mask_hash": content_hash(ticket.mask),
            "content_hash": file_hash(path),
        }

    def on_ticket(self, ticket: Ticket) -> None:
        folder = self.scratch / sparsity_folder(ticket.sparsity)
        folder.mkdir(parents=True, exist_ok=True)
        save_mask(ticket.mask, folder / MASK)
        torch.save(ticket.ticket_weights, folder / TICKET)
        torch.save(ticket.trained_weights, folder / TRAINED)
        torch.save(ticket.rewind_weights, folder / REWIND)
        for kind in ("mask", "ticket", "trained", "rewind"):
            sidecar = self._sidecar(ticket, kind, folder / f"{kind}.pt")
            (folder / f"{kind}.json").write_text(json.dumps(sidecar, indent=2))
        client = mlflow.MlflowClient()
        client.log_artifacts(self.parent_id, str(folder), folder.name)
        final = ticket.eval_history[-1]["scores"] if ticket.eval_history else []
        row = {
            "sparsity_target": ticket.sparsity,
            "sparsity": sparsity_report(ticket.mask)["overall"],
            "sparsity_per_role": role_sparsity(ticket.mask),
            "round": ticket.round_index,
            "round_run_id": self.rounds.get(ticket.round_index, ""),
            "artifact_dir": folder.name,
            "final_eval_mean": float(np.mean(final)) if final else None,
            "final_eval_iqm": interquartile_mean(np.asarray(final)) if final else None,
        }
        if self.previous_mask is not None:
            # How much of the previous level's subnetwork survives (Jaccard of kept sets).
            row["overlap_previous_level"] = overlap(ticket.mask, self.previous_mask)["overall"]
        self.previous_mask = ticket.mask
        self.summary.append(row)
        client.log_dict(self.parent_id, self.summary, TICKETS)
        step = round(ticket.sparsity * 1000)
        values = {"ticket/sparsity": row["sparsity"]}
        if "overlap_previous_level" in row:
            values["ticket/overlap_previous_level"] = row["overlap_previous_level"]
        if final:
            values["ticket/final_eval_mean"] = row["final_eval_mean"]
            values["ticket/final_eval_iqm"] = row["final_eval_iqm"]
        logged = client.get_metric_history(self.parent_id, "ticket/sparsity")
        if any(m.step == step for m in logged):
            return  # logged by this run before it was interrupted (one batch: all or none)
        now = int(time.time() * 1000)
        client.log_batch(
            self.parent_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()]
        )


def earlier_rounds(parent_id: str) -> dict[int, tuple[str, str]]:
    """``{round index: (run id, status)}`` of the round runs a find-mask run has already."""
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs(
        [experiment],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_id}' "
            f"and tags.`{Tag.ENTRY_POINT}` = '{FIND_MASK_ROUND}'"
        ),
        order_by=["attributes.start_time ASC"],
    )
    return {int(r.data.tags[Tag.ROUND]): (r.info.run_id, r.info.status) for r in runs}


# ----------------------------------------------------------------------------- entry point
@dataclass
class FindPlan:
    """A validated find-mask request: everything its chain needs, nothing logged yet."""

    method: str
    config: TrainConfig
    levels: list[float]
    dense: DenseStart | None
    template: Any
    template_weights: Any
    tags: dict[str, str]


def plan_find(request: FindMaskRequest) -> FindPlan:
    """Validate a request completely (configs, the dense run, the template)."""
    config, levels = build_find_config(request)
    check_device(config)
    dense = dense_start(request.dense_run, config) if request.dense_run.strip() else None
    template, template_weights = _template(request, config)
    if template is not None:
        levels = [round(sparsity_report(template)["overall"], 6)]
    tags = {
        Tag.ENTRY_POINT: ENTRY_POINT,
        Tag.METHOD: request.method,
        Tag.SPARSITIES: ",".join(f"{level:g}" for level in levels),
        Tag.DENSE_RUN: request.dense_run,
        Tag.TEMPLATE: request.template,
    }
    return FindPlan(request.method, config, levels, dense, template, template_weights, tags)


def find_chain(plan: FindPlan, run_id: str, directory: Path) -> Chain:
    """The plan's rounds as a chain logging into run ``run_id`` (a nested run per round)."""
    hooks = MlflowRounds(run_id, plan.config, plan.method, Path(tempfile.mkdtemp()))
    config, levels = plan.config, plan.levels
    if plan.method == "imp":
        return imp_chain(config, levels, directory, hooks, plan.dense, config.run.total_steps)
    if plan.method == "gmp":
        return gmp_chain(config, levels, directory, hooks, plan.dense)
    return random_chain(
        config, levels, directory, hooks, plan.template, plan.template_weights, config.seed
    )


def find_mask(request: FindMaskRequest) -> int:
    """Run the entry point; returns the process exit code."""
    run_id = continued_run(request)
    if run_id:
        return continue_chain(request, run_id)
    plan = plan_find(request)
    with mlflow.start_run() as run:
        directory = checkpoint_root(request) / run.info.run_id
        log_request(request, run.info.run_id)  # before the entry-point tag that marks it started
        log_provenance(flatten(plan.config), {**plan.tags, Tag.CHECKPOINT_DIR: str(directory)})
        with run_lock(directory, run.info.run_id):
            return _run_chain(plan, run.info.run_id, directory)


def log_request(request: FindMaskRequest, run_id: str) -> None:
    """``request.json``: the parameters a continued run is planned from again."""
    stored = {k: v for k, v in asdict(request).items() if k not in ("resume", "checkpoint_dir")}
    mlflow.MlflowClient().log_dict(run_id, stored, FIND_REQUEST)


def continued_run(request: FindMaskRequest) -> str | None:
    """The find-mask run to continue: ``--resume``, or one ``mlflow run --run-id`` handed us
    that has started before (the study driver's resume, a requeued SLURM task)."""
    if request.resume.strip():
        return request.resume.strip()
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id and mlflow.MlflowClient().get_run(run_id).data.tags.get(Tag.ENTRY_POINT) == FIND_MASK:
        return run_id
    return None


def continue_chain(request: FindMaskRequest, run_id: str) -> int:
    """Continue a find-mask run from its last finished round, with the request it started with."""
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise InputError(
            f"no MLflow run with id {run_id!r} in {mlflow.get_tracking_uri()}"
        ) from None
    if run.data.tags.get(Tag.ENTRY_POINT) != FIND_MASK:
        raise InputError(f"run {run_id} is not a {FIND_MASK} run")
    if run.info.status == "FINISHED":
        print(f"{FIND_MASK}: run {run_id} already finished; nothing to do", file=sys.stderr)
        return 0
    try:
        stored = json.loads(download(run_uri(run_id, FIND_REQUEST), "resume").read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"run {run_id} has no readable {FIND_REQUEST}: {error}") from None
    plan = plan_find(FindMaskRequest(**stored, checkpoint_dir=request.checkpoint_dir))
    directory = run_checkpoint_dir(request, run_id)
    with run_lock(directory, run_id), mlflow.start_run(run_id=run_id):
        print(f"{FIND_MASK}: continuing run {run_id} from its last finished round", file=sys.stderr)
        return _run_chain(plan, run_id, directory)


@contextmanager
def run_lock(directory: Path, run_id: str) -> Iterator[None]:
    """One writer per find-mask run: InputError at once if a live process holds its lock
    (taken before the run is reopened, so the refused process changes nothing)."""
    lock = FileLock(directory / LOCK_FILE, f"find-mask run {run_id}")
    try:
        lock.acquire()
    except LockHeld as error:
        raise InputError(f"run {run_id} is already being trained: {error}") from None
    try:
        yield
    finally:
        lock.release()


def _run_chain(plan: FindPlan, run_id: str, directory: Path) -> int:
    """Drive the plan's chain in the active run ``run_id`` (its lock held)."""
    try:
        run_chain(find_chain(plan, run_id, directory))
    except InterruptedError:
        print(
            f"{FIND_MASK}: stopped by signal; checkpoint written, resume with --resume {run_id}",
            file=sys.stderr,
        )
        end_run_if_active("KILLED")
        return EXIT_PREEMPTED
    except CheckpointError as error:
        end_run_if_active("FAILED")
        raise InputError(f"run {run_id}: {error}") from None
    return 0


def _template(request: FindMaskRequest, config: TrainConfig):
    if request.method != "random" or not request.template.strip():
        return None, None
    mask, _ = load_mask_uri(request.template)
    try:
        check_compatible(mask, probe_parameters(config))
    except MaskError as error:
        raise InputError(f"template does not fit this architecture: {error}") from None
    weights = None
    if request.random_weights == "ticket":
        # The unmasked rewind point, not ticket.pt: ticket.pt is already zero off the template's
        # mask, so under a random mask most active weights would start at exactly 0.
        rewind_uri = request.template.rsplit("/", 1)[0] + "/" + REWIND
        try:
            weights = load_weights(download_checked(rewind_uri, "template rewind point")[0])
        except CheckpointError as error:
            raise InputError(str(error)) from None
    return mask, weights
