"""A study: the grid of a study preset, read and checked.

A study preset (``sparse_ticket_mlflow/presets/<name>.toml`` with a ``[study]`` table) names the
grid::

    algos x sources x targets x mask methods x sparsities x weights x adapt x seeds
    + baselines on every target + the evaluation

:func:`load_study` reads it into a :class:`StudySpec` and :func:`check_spec` rejects a grid no
study can run; :func:`sparse_ticket_mlflow.dag.build_dag` turns the spec into the DAG of runs. This
module is pure: it knows nothing of MLflow (see :mod:`sparse_ticket_mlflow.main`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse_ticket.config import ConfigError
from sparse_ticket.lottery import TICKET_METHODS
from sparse_ticket.transfer import ADAPT_REGIMES, BASELINES, WEIGHT_MODES
from sparse_ticket_mlflow.presets import PRESET_DIR, read_preset, study_preset_names

# The grid's allowed values are the library's own lists. A grid names the methods whose masks
# it transfers; the random control is not one of them (``random_control = true`` adds it).
MASK_METHODS = tuple(method for method in TICKET_METHODS if method != "random")


@dataclass
class Steps:
    """Agent steps per run of each stage (find-mask: per training round)."""

    dense: int
    mask: int
    transfer: int


@dataclass
class StudySpec:
    """A study preset: the grid, the budgets, and how to evaluate it.

    ``run_preset`` and ``overrides`` configure every training run of the study (the overrides
    are applied last, as ``--overrides`` of each entry point).
    """

    name: str
    description: str
    run_preset: str
    overrides: dict[str, Any]
    algos: list[str]
    sources: list[str]
    targets: list[str]
    seeds: list[int]
    mask_methods: list[str]
    sparsities: list[float]
    transfer_sparsities: list[float]
    weights: list[str]
    adapt: list[str]
    adapt_gmp_final_sparsity: float | None
    baselines: list[str]
    random_control: bool
    steps: Steps
    eval_reps: int = 10_000
    members_per_task: int = 1
    """Runs of one shape packed into one process when ``main`` / ``slurm submit`` are not told
    (``--members-per-task``); a preset of many small runs (``demo``) packs to save start-ups."""
    eval_baselines: list[str] = field(default_factory=lambda: ["dense"])
    agent_steps_per_sec: float = 556.0
    steps_per_sec_source: str = ""
    steps_per_sec_device: str = "GPU"
    file: Path = PRESET_DIR

    @property
    def overrides_text(self) -> str:
        """The overrides as one ``--overrides`` string (sorted, so the text is canonical)."""
        return " ".join(f"{key}={_scalar(value)}" for key, value in sorted(self.overrides.items()))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ----------------------------------------------------------------------------- presets
def preset_path(name: str) -> Path:
    """The file of study preset ``name``, or a study file's path (ConfigError if neither)."""
    path = Path(name) if name.endswith(".toml") else PRESET_DIR / f"{name}.toml"
    try:
        is_study = path.is_file() and "study" in read_preset(path)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"study file {path} is not valid TOML: {error}") from None
    if not is_study:
        raise ConfigError(
            f"unknown study preset {name!r} (one of {', '.join(study_preset_names())})"
        )
    return path


def load_study(name: str) -> StudySpec:
    """Parse and check study preset ``name`` (or a path to a study file); ConfigError names
    the first bad field."""
    path = preset_path(name)
    name = path.stem
    raw = read_preset(path)
    table = dict(raw["study"])
    try:
        spec = _spec(name, str(raw.get("description", "")), table)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"study preset {name!r}: {error}") from None
    if table:
        raise ConfigError(f"study preset {name!r}: unknown field(s) {', '.join(sorted(table))}")
    check_spec(spec)
    spec.file = path
    return spec


def _spec(name: str, description: str, table: dict[str, Any]) -> StudySpec:
    """Pop every known field of the ``[study]`` table (what is left is unknown)."""
    games = table.pop("games", None)
    seeds = table.pop("seeds")
    steps = table.pop("steps")
    evaluation = table.pop("evaluate", {})
    throughput = table.pop("throughput", {})
    final = table.pop("adapt_gmp_final_sparsity", None)
    sparsities = table["sparsities"]
    return StudySpec(
        name=name,
        description=description,
        run_preset=str(table.pop("run_preset", "default")),
        overrides=dict(table.pop("overrides", {})),
        algos=_strings(table.pop("algos")),
        sources=_strings(table.pop("sources", games)),
        targets=_strings(table.pop("targets", games)),
        seeds=list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds],
        mask_methods=_strings(table.pop("mask_methods")),
        sparsities=_levels(table.pop("sparsities")),
        transfer_sparsities=_levels(table.pop("transfer_sparsities", sparsities)),
        weights=_strings(table.pop("weights", ["ticket"])),
        adapt=_strings(table.pop("adapt", ["none"])),
        adapt_gmp_final_sparsity=None if final is None else float(final),
        baselines=_strings(table.pop("baselines", ["dense"])),
        random_control=bool(table.pop("random_control", False)),
        steps=Steps(int(steps["dense"]), int(steps["mask"]), int(steps["transfer"])),
        eval_reps=int(evaluation.get("reps", 10_000)),
        members_per_task=int(table.pop("members_per_task", 1)),
        eval_baselines=_strings(evaluation.get("baselines", ["dense"])),
        agent_steps_per_sec=float(throughput.get("agent_steps_per_sec", 556.0)),
        steps_per_sec_source=str(throughput.get("source", "")),
        steps_per_sec_device=str(throughput.get("device", "GPU")),
    )


def _levels(values: Any) -> list[float]:
    return sorted({round(float(s), 6) for s in values})


def _strings(values: Any) -> list[str]:
    if values is None or isinstance(values, str):
        raise TypeError(f"expected a list of names, got {values!r}")
    return [str(v).strip().lower() for v in values]


def check_spec(spec: StudySpec) -> None:
    """Reject a grid no study can run, naming the field."""
    for name, values, allowed in (
        ("mask_methods", spec.mask_methods, MASK_METHODS),
        ("weights", spec.weights, WEIGHT_MODES),
        ("adapt", spec.adapt, tuple(ADAPT_REGIMES)),
        ("baselines", spec.baselines, BASELINES),
    ):
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(f"study {spec.name}: unknown {name} {unknown} ({', '.join(allowed)})")
    for name in ("algos", "sources", "targets", "seeds", "sparsities", "transfer_sparsities"):
        if not getattr(spec, name):
            raise ConfigError(f"study {spec.name}: {name} is empty")
    if any(s < 0 for s in spec.seeds):
        raise ConfigError(f"study {spec.name}: seeds must be non-negative")
    if any(not 0.0 < s < 1.0 for s in spec.sparsities):
        raise ConfigError(f"study {spec.name}: sparsities must be in (0, 1)")
    if min(spec.steps.dense, spec.steps.mask, spec.steps.transfer) <= 0:
        raise ConfigError(f"study {spec.name}: steps must be positive")
    if spec.members_per_task < 1:
        raise ConfigError(f"study {spec.name}: members_per_task must be at least 1")
    final, top = spec.adapt_gmp_final_sparsity, max(spec.transfer_sparsities or [0.0])
    if "gmp" in spec.adapt and (final is None or not top < final < 1.0):
        raise ConfigError(
            f"study {spec.name}: adapt gmp needs adapt_gmp_final_sparsity in ({top}, 1)"
        )
    if not set(spec.transfer_sparsities) <= set(spec.sparsities):
        raise ConfigError(f"study {spec.name}: transfer_sparsities must be among sparsities")
    copies_imp = spec.random_control or "random" in spec.baselines
    if copies_imp and "imp" not in spec.mask_methods:
        raise ConfigError(f"study {spec.name}: random controls copy IMP masks; add imp")
    if "random" in spec.baselines and not set(spec.targets) <= set(spec.sources):
        raise ConfigError(f"study {spec.name}: the random baseline needs every target a source")
