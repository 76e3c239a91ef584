"""The run lifecycle every training entry point shares (``train-dense``, ``transfer``,
``find-mask``, ``train-members``): requests and configs, checkpoint directories, opening,
training, closing and resuming a run, logging weights, and loading ``runs:/`` artifacts.

A new run validates all input before it opens an MLflow run. A resumed run (``--resume RUN_ID``,
or ``mlflow run --run-id RUN_ID`` on a run that has a checkpoint) rebuilds its config from the
run's ``config.json``, restores the newest complete checkpoint and continues logging into the
same run. Messages name the entry point of the run (its ``sparse_ticket.entry_point`` tag).

Where a run's files are::

    <checkpoint root>/<run id>/step_<12 digits>/   local checkpoints (sparse_ticket.checkpoint);
                                                   root: --checkpoint-dir, else
                                                   $SPARSE_TICKET_CHECKPOINT_DIR, else
                                                   ./st_checkpoints; tagged on the run
    runs:/<run id>/config.json                     the run's full config (what resume rebuilds)
    runs:/<run id>/checkpoints/init.pt, final.pt   {role: state_dict} at step 0 and at the end
    runs:/<run id>/checkpoints/step_<k>.pt         the late-rewinding point (imp_rewind_step k)
    runs:/<run id>/checkpoints/latest/             the newest checkpoint, without its replay
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch

from sparse_ticket.checkpoint import (
    MARKER,
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
)
from sparse_ticket.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    flatten,
    from_flat,
    validate,
)
from sparse_ticket.envs import available_games
from sparse_ticket.envs.atari import normalise_game
from sparse_ticket.locks import LockHeld
from sparse_ticket.runner import Runner
from sparse_ticket.sparsity.masks import MaskError, load_mask
from sparse_ticket_mlflow.contracts import (
    CONFIG,
    FINAL_WEIGHTS,
    INIT_WEIGHTS,
    LATEST_CHECKPOINT,
    RESUMABLE,
    TRAIN_DENSE,
    Tag,
    request_type,
    rewind_file,
)
from sparse_ticket_mlflow.errors import EXIT_PREEMPTED, InputError, RunFailed, parse_int
from sparse_ticket_mlflow.presets import load_preset
from sparse_ticket_mlflow.tracking import (
    MlflowSink,
    end_run_if_active,
    last_logged_step,
    log_provenance,
    log_weights,
)

CHECKPOINT_ENV = "SPARSE_TICKET_CHECKPOINT_DIR"


TrainRequest = request_type("TrainRequest", TRAIN_DENSE)
"""The ``train-dense`` parameters as the user gave them (strings, validated here); the other
training entry points' requests extend it."""


def build_config(request: TrainRequest) -> TrainConfig:
    """Defaults < preset < explicit parameters < overrides, then validated."""
    config = TrainConfig()
    try:
        apply_overrides(config, load_preset(request.preset))
        config.game = normalise_game(request.game)
        config.agent.algo = request.algo.strip().lower()
        config.seed = parse_int(request.seed, "seed", minimum=0)
        if str(request.total_steps).strip():
            config.run.total_steps = parse_int(request.total_steps, "total_steps")
        apply_overrides(config, request.overrides)
        validate(config)
    except ConfigError as error:
        raise InputError(str(error)) from None
    check_game(config)
    return config


def check_game(config: TrainConfig) -> None:
    if config.game not in available_games(config.env.suite):
        raise InputError(f"unknown {config.env.suite} game {config.game!r}")


def check_device(config: TrainConfig) -> None:
    """InputError unless this machine has ``run.device``: checked where a run is about to
    train, not in :func:`build_config` (a login node without a GPU plans a GPU study)."""
    device = torch.device(config.run.device)  # the form is checked by validate()
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise InputError(
            f"run.device={config.run.device} but this machine has no usable CUDA device "
            f"(torch {torch.__version__}, {build}); use run.device=cpu or a GPU node"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(
            f"run.device={config.run.device} but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )


def checkpoint_root(request: TrainRequest) -> Path:
    """Where runs keep local checkpoints (absolute: ``mlflow run`` changes the working dir)."""
    root = request.checkpoint_dir or os.environ.get(CHECKPOINT_ENV, "st_checkpoints")
    return Path(root).resolve()


def run_checkpoint_dir(request: TrainRequest, run_id: str) -> Path:
    """A run's checkpoint directory: an explicit root, else the one its tag records."""
    if not (request.checkpoint_dir or os.environ.get(CHECKPOINT_ENV)):
        tagged = mlflow.MlflowClient().get_run(run_id).data.tags.get(Tag.CHECKPOINT_DIR)
        if tagged:
            return Path(tagged)
    return checkpoint_root(request) / run_id


def existing_run(run_id: str) -> Any:
    """The run ``run_id`` of the tracking store; InputError (one line) if there is none."""
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise InputError(
            f"no MLflow run with id {run_id!r} in {mlflow.get_tracking_uri()}"
        ) from None


def run_config(run_id: str) -> TrainConfig:
    """The config a run was started with, from its ``config.json`` artifact.

    Not from the params: ``mlflow run`` also logs the MLproject parameters as params, in the
    user's spelling (``game=Pong``), beside the canonical config values.
    """
    run = existing_run(run_id)
    if run.data.tags.get(Tag.ENTRY_POINT) not in RESUMABLE:
        raise InputError(f"run {run_id} is not a {' or '.join(RESUMABLE)} run")
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=CONFIG, dst_path=tempfile.mkdtemp()
        )
        return from_flat(json.loads(Path(path).read_text()))
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as error:
        raise InputError(f"run {run_id} has no readable config.json: {error}") from None
    except ConfigError as error:
        raise InputError(f"run {run_id} has an unusable config: {error}") from None


def fetch_checkpoint(run_id: str, directory: Path, entry_point: str) -> Path | None:
    """The newest local checkpoint of a run, else its ``checkpoints/latest`` artifact
    (``entry_point`` names the one resuming it in the message that says so)."""
    local = CheckpointManager(directory).latest()
    if local is not None:
        return local
    try:
        downloaded = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=LATEST_CHECKPOINT, dst_path=tempfile.mkdtemp()
            )
        )
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    if not (downloaded / MARKER).is_file():
        return None
    print(
        f"{entry_point}: no local checkpoint under {directory}; resuming from the run's "
        "artifact checkpoint without its replay buffer (the replay refills: not bit-exact)",
        file=sys.stderr,
    )
    return downloaded


def resumable_run(request: TrainRequest) -> str | None:
    """The run id to continue: ``--resume``, or an existing run ``mlflow run`` handed us."""
    if request.resume.strip():
        return request.resume.strip()
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        tags = mlflow.MlflowClient().get_run(run_id).data.tags
        if tags.get(Tag.ENTRY_POINT) in RESUMABLE:  # it has trained before
            return run_id
    return None


def new_training_run(
    request: TrainRequest, config: TrainConfig, tags: dict[str, str], **runner_args: Any
) -> int:
    """Open a run, log provenance and ``init.pt``, train, and close it with the right status.

    ``runner_args`` (initial weights and mask of a transfer) go to the :class:`Runner`.
    """
    check_device(config)
    with mlflow.start_run() as run:
        directory = checkpoint_root(request) / run.info.run_id
        log_provenance(flatten(config), {**tags, Tag.CHECKPOINT_DIR: str(directory)})
        runner = Runner(config, directory, MlflowSink(run.info.run_id), **runner_args)
        scratch = Path(tempfile.mkdtemp())
        log_weights(runner.initial_weights(), INIT_WEIGHTS, scratch)
        return train_in_active_run(runner, scratch, tags[Tag.ENTRY_POINT])


def resume(request: TrainRequest, run_id: str) -> int:
    """Continue a run of ``RESUMABLE`` from its newest complete checkpoint."""
    config = run_config(run_id)
    entry_point = mlflow.MlflowClient().get_run(run_id).data.tags[Tag.ENTRY_POINT]
    directory = run_checkpoint_dir(request, run_id)
    # The lock first: a live writer may be replacing the checkpoint we would read.
    runner = open_runner(run_id, config, directory, MlflowSink(run_id, last_logged_step(run_id)))
    try:
        path = fetch_checkpoint(run_id, directory, entry_point)
        if path is None:
            raise InputError(f"run {run_id} has no complete checkpoint to resume from")
        step = runner.resume(path)
    except CheckpointError as error:
        runner.close()
        raise InputError(str(error)) from None
    except InputError:
        runner.close()
        raise
    if step >= config.run.total_steps and _status(run_id) == "FINISHED":
        runner.close()
        print(f"{entry_point}: run {run_id} already finished; nothing to do", file=sys.stderr)
        return 0
    print(f"{entry_point}: resuming run {run_id} at step {step}", file=sys.stderr)
    with mlflow.start_run(run_id=run_id):
        return train_in_active_run(runner, Path(tempfile.mkdtemp()), entry_point)


def open_runner(
    run_id: str, config: TrainConfig, directory: Path, sink: MlflowSink, **runner_args: Any
) -> Runner:
    """The :class:`Runner` of ``run_id``, holding its lock: InputError if a live process
    trains that run already (two writers would corrupt each other's checkpoints)."""
    check_device(config)
    try:
        return Runner(config, directory, sink, **runner_args)
    except LockHeld as error:
        raise InputError(f"run {run_id} is already being trained: {error}") from None


def _status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


def train_in_active_run(runner: Runner, scratch: Path, entry_point: str) -> int:
    """Train inside the active run (of ``entry_point``) and close it with the right status."""
    # What the process runs with, beside the config that asked for it (run.tune_malloc).
    mlflow.set_tag(Tag.MALLOC_TUNED, str(runner.malloc_tuned).lower())
    try:
        outcome = runner.train()
    except CheckpointWriteError as error:
        run_id = mlflow.active_run().info.run_id
        end_run_if_active("FAILED")
        raise RunFailed(f"{entry_point}: {error}; then: --resume {run_id}") from None
    except BaseException:
        end_run_if_active("FAILED")
        raise
    finally:
        runner.close()
    if outcome == "preempted":
        print(
            f"{entry_point}: stopped by signal at step {runner.step}; checkpoint written, "
            "resume with --resume " + mlflow.active_run().info.run_id,
            file=sys.stderr,
        )
        end_run_if_active("KILLED")
        return EXIT_PREEMPTED
    log_final_weights(runner, scratch)
    return 0


def log_final_weights(runner: Runner, scratch: Path, run_id: str | None = None) -> None:
    """``final.pt``, and the late-rewinding point of a later find-mask ``--dense-run``
    (``step_<k>.pt``, Frankle et al. 2020), into ``run_id`` (else the active run)."""
    log_weights(runner.agent.weights_state_dict(), FINAL_WEIGHTS, scratch, run_id)
    k = runner.config.sparsity.imp_rewind_step
    if k > 0 and runner.rewind_weights is not None:
        log_weights(runner.rewind_weights, rewind_file(k), scratch, run_id)


# ----------------------------------------------------------------------------- runs:/ artifacts
def run_id_of(uri: str, name: str) -> str:
    """The run id of a ``runs:/<id>[/...]`` URI (or a bare run id)."""
    text = uri.strip()
    if text.startswith("runs:/"):
        text = text[len("runs:/") :]
    run_id = text.strip("/").split("/", 1)[0]
    if not run_id:
        raise InputError(f"{name} must be a runs:/<run_id> URI, got {uri!r}")
    return run_id


def download(uri: str, name: str) -> Path:
    """Download an artifact URI, or InputError naming the parameter."""
    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=tempfile.mkdtemp()))
    except (mlflow.exceptions.MlflowException, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{name} {uri!r} cannot be downloaded: {first}") from None


def file_hash(path: Path) -> str:
    """The first 16 hex digits of a file's sha256 (a sidecar's ``content_hash``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def download_checked(uri: str, name: str) -> tuple[Path, dict[str, Any]]:
    """An artifact file and its sidecar (``<stem>.json`` beside it; ``{}`` if it has none).

    A file whose sha256 differs from the ``content_hash`` its sidecar recorded when find-mask
    wrote it (edited, truncated, or swapped for another run's) is refused: a transfer from it
    would silently mean another condition.
    """
    path = download(uri, name)
    sidecar: dict[str, Any] = {}
    try:
        sidecar_uri = uri[: -len(path.suffix)] + ".json"
        sidecar = json.loads(download(sidecar_uri, f"{name} sidecar").read_text())
    except (InputError, json.JSONDecodeError, UnicodeDecodeError):
        if path.with_suffix(".json").is_file():  # downloaded beside it (a folder URI)
            sidecar = json.loads(path.with_suffix(".json").read_text())
    expected = sidecar.get("content_hash")
    actual = file_hash(path) if expected else None
    if expected and actual != expected:
        raise InputError(
            f"{name} {uri!r} does not match its recorded content hash ({actual}, "
            f"recorded {expected}): the file was changed after it was logged; refusing it"
        )
    return path, sidecar


def load_mask_uri(uri: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A mask and its sidecar from a ``runs:/.../mask.pt`` URI (InputError if unusable)."""
    path, sidecar = download_checked(uri, "mask")
    try:
        mask = load_mask(path)
    except MaskError as error:
        raise InputError(str(error)) from None
    return mask, sidecar
