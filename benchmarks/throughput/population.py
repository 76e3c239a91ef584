"""The population figures (``--members``): K runners trained in lock-step by one population.

:func:`run_population_benchmark` builds every (K, batching) population at once, warms each up as
the single run is, then times one run of each in turn per repeat, and prices the ``--study``
preset at each aggregate rate (see "Population figures" in the package docstring).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.throughput.build import (
    Setup,
    build_population,
    prepare,
    start_population,
    unknown_names_as_config_errors,
)
from benchmarks.throughput.context import LoopState, host_fields, run_fields
from benchmarks.throughput.timing import Figure, time_loop, whole_vector_steps
from sparse_ticket.agents.population import resolve_batching
from sparse_ticket.config import ConfigError, TrainConfig
from sparse_ticket.population_runner import PopulationRunner


@dataclass
class PopulationCell:
    """One measured population: K members under one batching."""

    members: int
    requested: str
    """The ``--batching`` value that asked for it (``auto`` or the resolved name)."""
    population: PopulationRunner
    per_member: Figure


@dataclass(frozen=True)
class PopulationMeasurement:
    """What the timed repeats left behind, read before the populations are closed."""

    state: LoopState
    """Of the first member of the first population."""
    replays: list[str]
    """Per cell: the members' replay class (see :func:`replay_kind`)."""
    resolved: list[str]
    """Per cell: the batching the population resolved (``loop`` or ``vmap``)."""


# ------------------------------------------------------------------------------------- setup


def requested_batchings(batchings: list[str], device: torch.device) -> dict[str, str]:
    """Resolved batching -> the first ``--batching`` value asking for it (each measured once)."""
    requested: dict[str, str] = {}
    for name in batchings:
        requested.setdefault(resolve_batching(name, device), name)
    return requested


def build_cells(
    config: TrainConfig, members: list[int], requested: dict[str, str], root: Path
) -> list[PopulationCell]:
    """One population per (K, batching), K-major; every one built is closed if one fails."""
    cells: list[PopulationCell] = []
    try:
        for size in members:
            for batching, asked in requested.items():
                directory = root / f"{batching}-{size}"
                with unknown_names_as_config_errors():
                    population = build_population(config, size, batching, directory)
                cells.append(PopulationCell(size, asked, population, Figure([])))
    except BaseException:
        for cell in cells:
            cell.population.close()
        raise
    return cells


def replay_kind(population: PopulationRunner) -> str:
    """The members' replay class name (with counts if they differ)."""
    names = [type(runner.replay).__name__ for runner in population.runners]
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    if len(counts) == 1:
        return names[0]
    return " + ".join(f"{count} {name}" for name, count in counts.items())


def study_size(name: str) -> dict[str, Any]:
    """The study preset's total agent steps and training runs, as its dry run counts them."""
    # Imported here: mlflow comes with the driver and costs a few seconds.
    from sparse_ticket_mlflow.dag import dag_size
    from sparse_ticket_mlflow.errors import InputError
    from sparse_ticket_mlflow.main import StudyRequest, load

    try:
        spec, nodes = load(StudyRequest(preset=name))
    except InputError as error:
        raise ConfigError(f"--study {name}: {error}") from None
    sizes = dag_size(nodes)
    return {
        "name": spec.name,
        "agent_steps": sizes["total"].agent_steps,
        "training_runs": sizes["total"].runs - sizes["evaluate"].runs,
    }


# ------------------------------------------------------------------------------------ timing


def time_populations(
    cells: list[PopulationCell], setup: Setup, repeats: int
) -> PopulationMeasurement:
    """Warm every population up, then time one run of each in turn per repeat."""
    for cell in cells:
        start_population(cell.population, setup.budget)
    first = cells[0].population.runners[0]
    epsilon = first.epsilon()
    # Interleaved: slow drift of a shared machine hits every (K, batching) alike.
    for _ in range(repeats):
        for cell in cells:
            cell.per_member.values.append(time_loop(cell.population, setup.steps, setup.sync))
    return PopulationMeasurement(
        state=LoopState(epsilon, first.epsilon(), len(first.replay)),
        replays=[replay_kind(cell.population) for cell in cells],
        resolved=[cell.population.population.batching for cell in cells],
    )


def run_population_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (K, batching) population; returns the JSON-ready result."""
    wall_start = time.perf_counter()
    setup = prepare(args)
    study = study_size(args.study)  # first: a bad --study fails before minutes of warm-up
    requested = requested_batchings(args.batching, setup.device)
    with tempfile.TemporaryDirectory(prefix="throughput-") as root:
        cells = build_cells(setup.config, args.members, requested, Path(root))
        try:
            measurement = time_populations(cells, setup, args.repeats)
        finally:
            for cell in cells:
                cell.population.close()
    rows = population_rows(cells, measurement, study)
    return population_result(args, setup, rows, study, requested, measurement) | {
        "wall_s": time.perf_counter() - wall_start
    }


# ------------------------------------------------------------------------------------ result


def population_rows(
    cells: list[PopulationCell], measurement: PopulationMeasurement, study: dict[str, Any]
) -> list[dict[str, Any]]:
    """One JSON-ready row per (K, batching), with its speed-up over K = 1 and study cost."""
    resolved = measurement.resolved
    k1 = {
        batching: cell.members * cell.per_member.median
        for cell, batching in zip(cells, resolved, strict=True)
        if cell.members == 1
    }
    rows = []
    for cell, batching, replay in zip(cells, resolved, measurement.replays, strict=True):
        per_member = cell.per_member.median
        aggregate = cell.members * per_member
        rows.append(
            {
                "members": cell.members,
                "batching": batching,
                "requested_batching": cell.requested,
                "replay": replay,
                "per_member_steps_per_s": per_member,
                "aggregate_steps_per_s": aggregate,
                "speedup_vs_k1": aggregate / k1[batching] if batching in k1 else None,
                "study_device_hours": study["agent_steps"] / aggregate / 3600,
                "values": cell.per_member.values,
                "noisy": cell.per_member.noisy,
            }
        )
    return rows


def population_result(
    args: argparse.Namespace,
    setup: Setup,
    rows: list[dict[str, Any]],
    study: dict[str, Any],
    requested: dict[str, str],
    measurement: PopulationMeasurement,
) -> dict[str, Any]:
    """The JSON-ready result, less ``wall_s``: the rows, the study, the setup."""
    num_envs = setup.config.env.num_envs
    return {
        "population": rows,
        "study": study,
        "device_hours_unit": "GPU-hours" if setup.device.type == "cuda" else "CPU-hours",
        "members": args.members,
        "batchings": list(requested),
        **run_fields(setup, measurement.state, suite=True),
        "steps_per_member_per_run": whole_vector_steps(setup.steps, num_envs),
        "repeats": args.repeats,
        "quick": args.quick,
        **host_fields(),
    }
