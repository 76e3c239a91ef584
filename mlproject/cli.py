"""Command line: ``python -m mlproject <entry point> ...`` (what the MLproject file calls)."""

from __future__ import annotations

import logging
import sys

import click

from mlproject.errors import EXIT_INPUT, InputError
from mlproject.presets import preset_names
from mlproject.tracking import end_run_if_active
from mlproject.train_dense import TrainRequest, train_dense


@click.group()
def cli() -> None:
    """sparse-ticket: lottery tickets and their transfer across Atari games, tracked in MLflow."""


@cli.command("train-dense")
@click.option(
    "--game", default="pong", show_default=True, help="ALE game (snake_case) or MinAtar game."
)
@click.option("--algo", default="ddqn", show_default=True, help="ddqn, dqv or dqv-max.")
@click.option("--seed", default="0", show_default=True, help="Non-negative integer seed.")
@click.option("--total-steps", default="", help="Agent steps (default: the preset's).")
@click.option(
    "--preset", default="default", show_default=True, help=f"One of: {', '.join(preset_names())}."
)
@click.option(
    "--overrides", default="", help='Config overrides, e.g. "lr=1e-4 target_update=8000".'
)
@click.option("--resume", default="", help="Run id to continue from its last complete checkpoint.")
@click.option(
    "--checkpoint-dir",
    default="",
    help="Root of local checkpoints (default: $SPARSE_TICKET_CHECKPOINT_DIR or ./st_checkpoints).",
)
def train_dense_command(**params: str) -> None:
    """Train a dense agent; logs config, metrics, init/final weights and checkpoints."""
    sys.exit(train_dense(TrainRequest(**params)))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input ends with one line on stderr and exit code 2."""
    # MLflow's INFO lines (e.g. creating the sqlite tables) would drown the one-line errors.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        cli.main(args=argv, prog_name="python -m mlproject", standalone_mode=False)
    except InputError as error:
        end_run_if_active("FAILED")
        click.echo(f"error: {' '.join(str(error).split())}", err=True)
        sys.exit(EXIT_INPUT)
    except click.ClickException as error:
        end_run_if_active("FAILED")
        click.echo(f"error: {error.format_message()}", err=True)
        sys.exit(EXIT_INPUT)
    except click.exceptions.Abort:
        sys.exit(130)
