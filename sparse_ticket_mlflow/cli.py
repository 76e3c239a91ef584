"""Command line: ``python -m sparse_ticket_mlflow <entry point> ...`` (what the MLproject file
calls)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import click

from sparse_ticket.agents.population import BATCHING
from sparse_ticket.checkpoint import CheckpointWriteError
from sparse_ticket_mlflow.contracts import (
    EVALUATE,
    FIND_MASK,
    MAIN,
    PARAMETERS,
    SLURM_SUBMIT,
    TRAIN_DENSE,
    TRAIN_MEMBERS,
    TRANSFER,
)
from sparse_ticket_mlflow.errors import EXIT_FAILED, EXIT_INPUT, InputError, RunFailed
from sparse_ticket_mlflow.find_mask import FindMaskRequest, find_mask
from sparse_ticket_mlflow.main import StudyRequest, main_study
from sparse_ticket_mlflow.runs import TrainRequest
from sparse_ticket_mlflow.tracking import end_run_if_active
from sparse_ticket_mlflow.train_dense import train_dense
from sparse_ticket_mlflow.transfer import TransferRequest, transfer


@click.group()
def cli() -> None:
    """sparse-ticket: lottery tickets and their transfer across Atari games, tracked in MLflow."""


def options(entry_point: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command with ``entry_point``'s options, made from ``contracts.PARAMETERS``."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for param in reversed(PARAMETERS[entry_point]):
            command = click.option(
                param.flag,
                default=None if param.required else param.default,
                required=param.required,
                multiple=param.multiple,
                show_default=bool(param.default),
                help=param.help_text(),
            )(command)
        return command

    return decorate


@cli.command(TRAIN_DENSE)
@options(TRAIN_DENSE)
def train_dense_command(**params: str) -> None:
    """Train a dense agent; logs config, metrics, init/final weights and checkpoints."""
    sys.exit(train_dense(TrainRequest(**params)))


@cli.command(TRAIN_MEMBERS)
@options(TRAIN_MEMBERS)
def train_members_command(runs: str, batching: str, checkpoint_dir: str) -> None:
    """Train several runs of one shape in one process (one population; each its own run)."""
    from sparse_ticket_mlflow.train_members import train_members

    if batching not in BATCHING:
        raise InputError(f"unknown batching {batching!r} (one of {', '.join(BATCHING)})")
    ids = [run_id.strip() for run_id in runs.split(",") if run_id.strip()]
    sys.exit(train_members(ids, batching, checkpoint_dir))


@cli.command(FIND_MASK)
@options(FIND_MASK)
def find_mask_command(**params: str) -> None:
    """Find masks (and tickets) on a source game at each requested sparsity."""
    sys.exit(find_mask(FindMaskRequest(**params)))


@cli.command(TRANSFER)
@options(TRANSFER)
def transfer_command(**params: str) -> None:
    """Transfer a sparse encoder to a target game (or run a baseline there)."""
    sys.exit(transfer(TransferRequest(**params)))


@cli.command(EVALUATE)
@options(EVALUATE)
def evaluate_command(
    study: str, output_dir: str, reps: str, seed: str, baselines: str, aggregate: str
) -> None:
    """IQM with CIs, area ratios and figures for every condition of a study."""
    from sparse_ticket_mlflow.evaluate import (
        evaluate,  # rliable, scipy, matplotlib: only when evaluating
    )

    sys.exit(evaluate(study, output_dir, reps, seed, baselines, aggregate))


@cli.command(MAIN)
@options(MAIN)
def main_command(**params: str) -> None:
    """Run a whole study: dense -> masks -> transfers and baselines -> evaluate."""
    sys.exit(main_study(StudyRequest(**params)))


@cli.group("slurm")
def slurm_group() -> None:
    """Run a study on a SLURM cluster: one array job per stage."""


@slurm_group.command("submit")
@options(SLURM_SUBMIT)
def slurm_submit_command(**params) -> None:
    """Turn a study's DAG into array jobs chained with --dependency=afterok, and submit them."""
    from sparse_ticket_mlflow.slurm import SubmitRequest, submit

    sys.exit(submit(SubmitRequest(**params)))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input ends with one line on stderr and exit code 2."""
    # MLflow's INFO lines (e.g. creating the sqlite tables) and download progress bars would
    # drown the one-line errors.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cli.main(args=argv, prog_name="python -m sparse_ticket_mlflow", standalone_mode=False)
    except InputError as error:
        end_run_if_active("FAILED")
        click.echo(f"error: {' '.join(str(error).split())}", err=True)
        sys.exit(EXIT_INPUT)
    except (RunFailed, CheckpointWriteError) as error:
        end_run_if_active("FAILED")
        click.echo(f"error: {' '.join(str(error).split())}", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as error:
        end_run_if_active("FAILED")
        click.echo(f"error: {error.format_message()}", err=True)
        sys.exit(EXIT_INPUT)
    except click.exceptions.Abort:
        sys.exit(130)
