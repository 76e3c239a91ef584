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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow

from sparse_ticket.building import probe_parameters
from sparse_ticket.checkpoint import CheckpointError, load_weights
from sparse_ticket.config import ConfigError, TrainConfig, apply_overrides, flatten, validate
from sparse_ticket.locks import LOCK_FILE, FileLock, LockHeld
from sparse_ticket.lottery import (
    RANDOM_WEIGHTS,
    TICKET_METHODS,
    Chain,
    DenseStart,
    gmp_chain,
    imp_chain,
    random_chain,
    run_chain,
)
from sparse_ticket.sparsity.masks import (
    MaskError,
    check_compatible,
    sparsity_report,
)
from sparse_ticket_mlflow.contracts import (
    FINAL_WEIGHTS,
    FIND_MASK,
    FIND_REQUEST,
    REWIND,
    Tag,
    checkpoint_weights,
    request_type,
    rewind_file,
    run_uri,
)
from sparse_ticket_mlflow.errors import EXIT_PREEMPTED, InputError
from sparse_ticket_mlflow.mask_rounds import MlflowRounds
from sparse_ticket_mlflow.runs import (
    TrainRequest,
    build_config,
    check_device,
    checkpoint_root,
    download,
    download_checked,
    existing_run,
    load_mask_uri,
    run_checkpoint_dir,
    run_config,
    run_id_of,
)
from sparse_ticket_mlflow.tracking import (
    end_run_if_active,
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
    run = existing_run(run_id)
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
