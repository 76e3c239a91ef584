"""``train-members``: train several pre-created runs in one process, as one population.

The study driver and the SLURM launcher pack up to ``members_per_task`` nodes of the same
shape (the same entry point and parameters but for the seed and the seed's own upstream
runs) into one process, so one GPU trains K runs at once
(:class:`~sparse_ticket.population_runner.PopulationRunner`). Every member is still its own MLflow
run, created beforehand with the parameters and entry-point tag an ``mlflow run`` of it would
have logged; this process logs into each one exactly what ``train-dense`` or ``transfer``
would (provenance, ``config.json``, metrics, ``init.pt`` / ``final.pt``, checkpoints, status), so
a member's run cannot be told apart from a run trained alone, and with ``loop`` batching its
metrics and weights are the same bit for bit.

Members resume like single runs: each from its own newest complete checkpoint. Members whose
checkpoints are of different steps train as separate populations, one after another; finished
members are left alone. ``find-mask`` members are chains of rounds (IMP's dense round and pruned
rounds, one GMP or random run per level): round ``r`` of every member trains in one population,
each member prunes its own weights between rounds, and every round is a nested run of its own
member (:func:`~sparse_ticket.lottery.run_chains`). As alone, an interrupted chain continues
from its last finished round, and inside the round from its checkpoint, when its command runs
again.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param, RunTag

from sparse_ticket.checkpoint import CheckpointError
from sparse_ticket.config import flatten
from sparse_ticket.lottery import run_chains
from sparse_ticket.population_runner import PopulationRunner
from sparse_ticket.runner import Runner
from sparse_ticket_mlflow.contracts import (
    FIND_MASK,
    INIT_WEIGHTS,
    MLFLOW_ENTRY_POINT,
    MLFLOW_SOURCE_TYPE,
    RESUMABLE,
    TRAIN_DENSE,
    TRAIN_MEMBERS,
    TRANSFER,
    Tag,
)
from sparse_ticket_mlflow.errors import EXIT_PREEMPTED, InputError
from sparse_ticket_mlflow.find_mask import (
    FindMaskRequest,
    FindPlan,
    find_chain,
    log_request,
    plan_find,
    run_lock,
)
from sparse_ticket_mlflow.runs import (
    TrainRequest,
    build_config,
    checkpoint_root,
    existing_run,
    fetch_checkpoint,
    log_final_weights,
    open_runner,
    run_checkpoint_dir,
    run_config,
)
from sparse_ticket_mlflow.tracking import MlflowSink, last_logged_step, log_provenance, log_weights
from sparse_ticket_mlflow.transfer import TransferRequest, plan_transfer

PACKABLE = {
    TRAIN_DENSE: TrainRequest,
    TRANSFER: TransferRequest,
    FIND_MASK: FindMaskRequest,
}
"""Entry points whose runs can train as population members, and their request types."""


@dataclass
class Member:
    """One run of the population: its request and what it trains from."""

    run_id: str
    entry_point: str
    runner_args: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    checkpoint: Path | None = None
    resumed: bool = False
    find: FindPlan | None = None
    """A find-mask member's plan: its rounds train in lock-step with the others' rounds."""
    directory: Path | None = None
    request: TrainRequest | None = None
    """A find-mask member's request (logged as its ``request.json``)."""


def member_tags(entry_point: str) -> dict[str, str]:
    """The tags ``mlflow run`` would set on a run of ``entry_point`` (beside its params)."""
    return {MLFLOW_ENTRY_POINT: entry_point, MLFLOW_SOURCE_TYPE: "PROJECT"}


def create_member_run(
    experiment_id: str,
    entry_point: str,
    params: dict[str, str],
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
) -> str:
    """Create a run for ``train-members`` with what ``mlflow run -e <entry_point>`` would log.

    ``params`` are the entry point's MLproject parameters as strings (``game``, ``seed``,
    ``mask``...), logged as the run's params; ``tags`` are added (a study's node tags).
    """
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=run_name, tags=tags or {})
    describe_run(run.info.run_id, entry_point, params)
    return run.info.run_id


def describe_run(run_id: str, entry_point: str, params: dict[str, str]) -> None:
    """Log on a pre-created run what ``mlflow run -e <entry_point> -P ...`` would log:
    the entry point's parameters (shell-quoted, as ``mlflow run`` logs them) and its tags."""
    if entry_point not in PACKABLE:
        raise ValueError(f"{entry_point} runs cannot train as population members")
    client = mlflow.MlflowClient()
    logged = [Param(k, shlex.quote(str(v))) for k, v in params.items()]
    client.log_batch(
        run_id,
        params=logged,
        tags=[RunTag(k, v) for k, v in member_tags(entry_point).items()],
    )


def request_of(run: Any) -> tuple[str, TrainRequest]:
    """The entry point and request a pre-created run was made for (its tag and params)."""
    entry_point = run.data.tags.get(MLFLOW_ENTRY_POINT, "")
    if entry_point not in PACKABLE:
        raise InputError(
            f"run {run.info.run_id} is a {entry_point or 'untagged'} run; train-members trains "
            f"runs of {' or '.join(PACKABLE)}"
        )
    kind = PACKABLE[entry_point]
    names = {f.name for f in fields(kind)} - {"resume", "checkpoint_dir"}
    params = {k: _unquote(v) for k, v in run.data.params.items() if k in names}
    return entry_point, kind(**params)


def _unquote(value: str) -> str:
    """A parameter as the entry point received it (``mlflow run`` logs it shell-quoted)."""
    words = shlex.split(value)
    return words[0] if len(words) == 1 else value


def prepare(run_id: str, root: TrainRequest) -> tuple[Member, Runner | None]:
    """A member and its runner (None when the run has finished already)."""
    run = existing_run(run_id)
    if run.info.status == "FINISHED":
        return Member(run_id, run.data.tags.get(MLFLOW_ENTRY_POINT, "")), None
    if run.data.tags.get(Tag.ENTRY_POINT) in RESUMABLE:  # it has trained before
        return _resumed(run_id, root)
    entry_point, request = request_of(run)
    request.checkpoint_dir = root.checkpoint_dir
    directory = checkpoint_root(request) / run_id
    if entry_point == FIND_MASK:
        # A chain that has started continues in its directory (sparse_ticket.lottery).
        directory = (
            run_checkpoint_dir(root, run_id) if Tag.ENTRY_POINT in run.data.tags else directory
        )
        plan = plan_find(request)
        tags = {**plan.tags, Tag.CHECKPOINT_DIR: str(directory)}
        member = Member(run_id, entry_point, tags=tags, find=plan, directory=directory)
        return replace(member, request=request), None
    if entry_point == TRANSFER:
        plan = plan_transfer(request)
        config, tags = plan.config, plan.tags
        args = {"initial_weights": plan.initial_weights, "initial_mask": plan.initial_mask}
    else:
        config, tags, args = build_config(request), {Tag.ENTRY_POINT: entry_point}, {}
    member = Member(run_id, entry_point, args, {**tags, Tag.CHECKPOINT_DIR: str(directory)})
    return member, open_runner(
        run_id, config, directory, MlflowSink(run_id), progress=False, **args
    )


def _resumed(run_id: str, root: TrainRequest) -> tuple[Member, Runner]:
    config = run_config(run_id)
    directory = run_checkpoint_dir(root, run_id)
    sink = MlflowSink(run_id, skip_until=last_logged_step(run_id))
    runner = open_runner(run_id, config, directory, sink, progress=False)  # lock, then read
    path = fetch_checkpoint(run_id, directory, TRAIN_MEMBERS)
    if path is None:
        runner.close()
        raise InputError(f"run {run_id} has no complete checkpoint to resume from")
    return Member(run_id, "resume", checkpoint=path, resumed=True), runner


def train_members(run_ids: list[str], batching: str, checkpoint_dir: str = "") -> int:
    """Train the runs ``run_ids`` together; the process exit code."""
    if not run_ids:
        raise InputError("train-members needs --runs RUN_ID[,RUN_ID...]")
    root = TrainRequest(checkpoint_dir=checkpoint_dir)
    prepared = [prepare(run_id, root) for run_id in run_ids]
    finders = [member for member, _ in prepared if member.find is not None]
    trainers = [(m, r) for m, r in prepared if r is not None]
    if finders and trainers:
        raise InputError("find-mask runs and training runs cannot train together")
    for member, runner in prepared:
        if runner is None and member.find is None:
            say(f"run {member.run_id} already finished")
    if finders:
        return _find_together(finders, batching)
    codes = [_train_group(group, batching) for group in _groups(trainers)]
    return max(codes, default=0)


def _find_together(members: list[Member], batching: str) -> int:
    """find-mask runs of one shape: their chains' rounds train in lock-step, as populations."""
    client = mlflow.MlflowClient()
    with ExitStack() as locks:
        for member in members:
            locks.enter_context(run_lock(member.directory, member.run_id))
        chains = []
        for member in members:
            client.update_run(member.run_id, status="RUNNING")
            log_request(member.request, member.run_id)
            log_provenance(flatten(member.find.config), member.tags, member.run_id)
            chains.append(find_chain(member.find, member.run_id, member.directory))
        return _drive_chains(members, chains, batching)


def _drive_chains(members: list[Member], chains: list, batching: str) -> int:
    client = mlflow.MlflowClient()
    try:
        run_chains(chains, batching)
    except InterruptedError:
        for member in members:
            client.set_terminated(member.run_id, "KILLED")
        say("stopped by signal; run the same command again to continue from the last round")
        return EXIT_PREEMPTED
    except ValueError as error:
        for member in members:
            client.set_terminated(member.run_id, "FAILED")
        raise InputError(f"these runs cannot train together: {error}") from None
    except BaseException:
        for member in members:
            client.set_terminated(member.run_id, "FAILED")
        raise
    for member in members:
        client.set_terminated(member.run_id, "FINISHED")
    return 0


def _groups(pairs: list[tuple[Member, Runner]]) -> list[list[tuple[Member, Runner]]]:
    """Members that start from the same step train together (fresh ones all at step 0)."""
    by_step: dict[int, list[tuple[Member, Runner]]] = {}
    for member, runner in pairs:
        step = 0
        if member.resumed:
            try:
                step = runner.resume(member.checkpoint)
            except CheckpointError as error:
                raise InputError(str(error)) from None
        by_step.setdefault(step, []).append((member, runner))
    return list(by_step.values())


def _train_group(group: list[tuple[Member, Runner]], batching: str) -> int:
    members, runners = [m for m, _ in group], [r for _, r in group]
    try:
        population = PopulationRunner(runners, batching)
    except ValueError as error:
        raise InputError(f"these runs cannot train together: {error}") from None
    population.population.relink()  # resumed members loaded optimiser state of their own
    client = mlflow.MlflowClient()
    scratch = Path(tempfile.mkdtemp())
    for member, runner in group:
        client.update_run(member.run_id, status="RUNNING")
        if not member.resumed:
            log_provenance(flatten(runner.config), member.tags, member.run_id)
            log_weights(
                runner.initial_weights(), INIT_WEIGHTS, scratch / member.run_id, member.run_id
            )
        else:
            say(f"resuming run {member.run_id} at step {runner.step}")
    try:
        outcomes = population.train()
    except BaseException:
        for member in members:
            client.set_terminated(member.run_id, "FAILED")
        raise
    finally:
        population.close()
    for (member, runner), outcome in zip(group, outcomes, strict=True):
        if outcome == "preempted":
            client.set_terminated(member.run_id, "KILLED")
            continue
        log_final_weights(runner, scratch / member.run_id, member.run_id)
        client.set_terminated(member.run_id, "FINISHED")
    if "preempted" in outcomes:
        say(
            f"stopped by signal at step {population.step}; checkpoints written, "
            "run the same command again to resume"
        )
        return EXIT_PREEMPTED
    return 0


def say(text: str) -> None:
    print(f"train-members: {text}", file=sys.stderr, flush=True)
