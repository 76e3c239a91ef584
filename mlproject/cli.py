"""Command line: ``python -m mlproject <entry point> ...`` (what the MLproject file calls)."""

from __future__ import annotations

import logging
import os
import sys

import click

from mlproject.errors import EXIT_INPUT, InputError
from mlproject.find_mask import FindMaskRequest, find_mask
from mlproject.main import StudyRequest, main_study
from mlproject.presets import preset_names, study_preset_names
from mlproject.runs import TrainRequest
from mlproject.tracking import end_run_if_active
from mlproject.train_dense import train_dense
from mlproject.transfer import TransferRequest, transfer


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


@cli.command("train-members")
@click.option(
    "--runs",
    default="",
    help="Comma-separated ids of pre-created train-dense/transfer runs to train together.",
)
@click.option(
    "--batching",
    default="auto",
    show_default=True,
    help="loop (bit-identical to training alone), vmap (stacked; the GPU's) or auto.",
)
@click.option("--checkpoint-dir", default="", help="Root of local checkpoints.")
def train_members_command(runs: str, batching: str, checkpoint_dir: str) -> None:
    """Train several runs of one shape in one process (one population; each its own run)."""
    from mlproject.train_members import train_members
    from sparse_ticket.agents.population import BATCHING

    if batching not in BATCHING:
        raise InputError(f"unknown batching {batching!r} (one of {', '.join(BATCHING)})")
    ids = [run_id.strip() for run_id in runs.split(",") if run_id.strip()]
    sys.exit(train_members(ids, batching, checkpoint_dir))


@cli.command("find-mask")
@click.option("--method", default="imp", show_default=True, help="imp, gmp or random.")
@click.option("--game", default="pong", show_default=True, help="The source game.")
@click.option("--algo", default="ddqn", show_default=True, help="ddqn, dqv or dqv-max.")
@click.option(
    "--sparsities",
    default="0.6,0.7,0.8",
    show_default=True,
    help="Comma-separated sparsity levels; one IMP chain passes through all of them.",
)
@click.option("--scope", default="encoder", show_default=True, help="encoder or all.")
@click.option("--allocation", default="global", show_default=True, help="global, uniform or erk.")
@click.option("--seed", default="0", show_default=True, help="Non-negative integer seed.")
@click.option("--total-steps", default="", help="Agent steps per training round.")
@click.option(
    "--preset", default="default", show_default=True, help=f"One of: {', '.join(preset_names())}."
)
@click.option("--overrides", default="", help='Config overrides, e.g. "imp_prune_fraction=0.1".')
@click.option("--dense-run", default="", help="runs:/<id> of a train-dense run to start from.")
@click.option(
    "--template",
    default="",
    help="random: runs:/.../mask.pt whose per-layer densities the random mask copies.",
)
@click.option(
    "--random-weights",
    default="ticket",
    show_default=True,
    help="random with a template: start from its ticket weights or reinit.",
)
@click.option("--checkpoint-dir", default="", help="Root of local checkpoints.")
def find_mask_command(**params: str) -> None:
    """Find masks (and tickets) on a source game at each requested sparsity."""
    sys.exit(find_mask(FindMaskRequest(**params)))


@cli.command("transfer")
@click.option("--mask", default="", help="runs:/<find-mask run>/sparsity_<s>/mask.pt to transfer.")
@click.option("--weights", default="ticket", show_default=True, help="ticket, trained or reinit.")
@click.option("--game", default="pong", show_default=True, help="The target game.")
@click.option("--algo", default="ddqn", show_default=True, help="ddqn, dqv or dqv-max.")
@click.option("--adapt", default="none", show_default=True, help="none, gmp, set or rigl.")
@click.option("--final-sparsity", default="", help="adapt=gmp: the sparsity to prune on to.")
@click.option(
    "--baseline",
    default="",
    help="Instead of a transfer: dense, gmp, set, rigl or random on the target alone.",
)
@click.option("--seed", default="0", show_default=True, help="Non-negative integer seed.")
@click.option("--total-steps", default="", help="Agent steps (default: the preset's).")
@click.option(
    "--preset", default="default", show_default=True, help=f"One of: {', '.join(preset_names())}."
)
@click.option("--overrides", default="", help="Config overrides.")
@click.option("--resume", default="", help="Run id to continue from its last complete checkpoint.")
@click.option("--checkpoint-dir", default="", help="Root of local checkpoints.")
def transfer_command(**params: str) -> None:
    """Transfer a sparse encoder to a target game (or run a baseline there)."""
    sys.exit(transfer(TransferRequest(**params)))


@cli.command("evaluate")
@click.option(
    "--study",
    required=True,
    help="An experiment name, a parent run id, or a search_runs filter string.",
)
@click.option(
    "--output-dir", default="", help="Where tables and figures go (default ./evaluation/<run id>)."
)
@click.option("--reps", default="10000", show_default=True, help="Bootstrap repetitions.")
@click.option("--seed", default="0", show_default=True, help="Bootstrap seed.")
@click.option(
    "--baselines",
    default="dense",
    show_default=True,
    help="Comma-separated baselines for area ratios: dense, gmp, set, rigl, random.",
)
@click.option(
    "--aggregate",
    default="iqm",
    show_default=True,
    help="Curve aggregate over seeds for area ratios: iqm (the prior study's) or mean.",
)
def evaluate_command(
    study: str, output_dir: str, reps: str, seed: str, baselines: str, aggregate: str
) -> None:
    """IQM with CIs, area ratios and figures for every condition of a study."""
    from mlproject.evaluate import evaluate  # rliable, scipy, matplotlib: only when evaluating

    sys.exit(evaluate(study, output_dir, reps, seed, baselines, aggregate))


@cli.command("main")
@click.option(
    "--preset",
    default="demo",
    show_default=True,
    help=f"A study preset: {', '.join(study_preset_names())}.",
)
@click.option(
    "--workers",
    default="2",
    show_default=True,
    help="Nodes run at once, each a process; the cores are shared among them.",
)
@click.option("--dry-run", default="false", show_default=True, help="true: print the DAG only.")
@click.option(
    "--output-dir",
    default="studies",
    show_default=True,
    help="Where <preset>/evaluation (tables, figures) and <preset>/logs go.",
)
@click.option(
    "--steps-per-sec",
    default="",
    help="Agent steps/s per run for the dry run's GPU-hour estimate (default: the preset's).",
)
@click.option(
    "--members-per-task",
    default="",
    help="Pack up to K runs of one shape (seeds) into one process, trained as one population "
    "(default: the preset's; 1 unless it says).",
)
def main_command(**params: str) -> None:
    """Run a whole study: dense -> masks -> transfers and baselines -> evaluate."""
    sys.exit(main_study(StudyRequest(**params)))


@cli.group("slurm")
def slurm_group() -> None:
    """Run a study on a SLURM cluster: one array job per stage."""


@slurm_group.command("submit")
@click.option("--preset", default="paper", show_default=True, help="A study preset or file.")
@click.option(
    "--container",
    default="singularity",
    show_default=True,
    help="singularity, apptainer (exec --nv IMAGE) or none (this Python environment).",
)
@click.option("--image", default="", help="The .sif image (docker/build-sif.sh).")
@click.option("--experiment", default="", help="MLflow experiment (default: study-<preset>).")
@click.option("--partition", default="", help="#SBATCH --partition.")
@click.option("--account", default="", help="#SBATCH --account.")
@click.option("--gpus", default="1", show_default=True, help="GPUs per task (0: none).")
@click.option("--cpus-per-task", default="4", show_default=True, help="CPUs per task.")
@click.option("--mem", default="32G", show_default=True, help="Memory per task.")
@click.option("--time", default="24:00:00", show_default=True, help="Time limit per task.")
@click.option(
    "--signal-seconds",
    default="300",
    show_default=True,
    help="SIGTERM this long before the time limit: checkpoint, requeue, resume (0: off).",
)
@click.option("--max-running", default="", help="At most this many tasks of an array at once.")
@click.option("--sbatch", multiple=True, help='Extra #SBATCH line, e.g. "--qos=long" (repeatable).')
@click.option("--jobs-dir", default="slurm_jobs", show_default=True, help="Scripts and logs.")
@click.option("--checkpoint-dir", default="", help="Checkpoints on a shared filesystem.")
@click.option("--dry-run", default="false", show_default=True, help="true: write, don't submit.")
@click.option(
    "--members-per-task",
    default="",
    help="Pack up to K runs of one shape (seeds) into one task, trained as one population "
    "(default: the preset's; 1 unless it says).",
)
def slurm_submit_command(**params) -> None:
    """Turn a study's DAG into array jobs chained with --dependency=afterok, and submit them."""
    from mlproject.slurm import SubmitRequest, submit

    sys.exit(submit(SubmitRequest(**params)))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input ends with one line on stderr and exit code 2."""
    # MLflow's INFO lines (e.g. creating the sqlite tables) and download progress bars would
    # drown the one-line errors.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
