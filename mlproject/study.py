"""A study: the grid of a study preset, and the DAG of MLflow runs that trains and evaluates it.

A study preset (``mlproject/presets/<name>.toml`` with a ``[study]`` table) names the grid::

    algos x sources x targets x mask methods x sparsities x weights x adapt x seeds
    + baselines on every target + the evaluation

and :func:`build_dag` turns it into nodes, each one run of an entry point::

    train-dense (algo, game, seed)
      -> find-mask imp (algo, game, seed)       starts from that dense run (its rewind point and
                                                 trained weights are IMP's dense round)
    find-mask gmp (algo, game, seed)            Zhu & Gupta: prunes while training from scratch
    find-mask random (algo, game, seed, level)  the random control, with the IMP mask's densities
      -> transfer (algo, method, source -> target, level, weights, adapt, seed)
    transfer --baseline (algo, target, baseline[, level], seed)
      -> evaluate (everything above)

The dense-from-scratch baseline on a target that is also a source, at the transfers' budget, is
the source's ``train-dense`` run itself (:func:`dense_serves_as_baseline`).

A transfer of seed ``s`` uses the mask found with seed ``s`` on the source. Upstream runs are
passed as ``runs:/<run_id>/...`` parameters, filled in (:meth:`Node.resolved`) once the upstream
run exists. This module is pure: it knows nothing of MLflow (see :mod:`mlproject.main`).
"""

from __future__ import annotations

import hashlib
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlproject.contracts import EVALUATE, FIND_MASK, MASK, TRAIN_DENSE, TRANSFER, sparsity_folder
from mlproject.presets import PRESET_DIR, read_preset, study_preset_names
from sparse_ticket.config import ConfigError

MASK_METHODS = ("imp", "gmp")
WEIGHTS = ("ticket", "trained", "reinit")
ADAPTS = ("none", "gmp", "set", "rigl")
BASELINES = ("dense", "gmp", "set", "rigl", "random")
STAGES = ("dense", "mask", "transfer", "baseline", "evaluate")
CODE_DIRS = ("sparse_ticket", "mlproject")
CODE_FILES = ("MLproject", "requirements.txt", "pyproject.toml")


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
        ("weights", spec.weights, WEIGHTS),
        ("adapt", spec.adapt, ADAPTS),
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


# ----------------------------------------------------------------------------- the DAG
@dataclass(frozen=True)
class Ref:
    """A parameter filled from an upstream node's run: ``runs:/<run_id><suffix>``."""

    node: str
    suffix: str = ""


@dataclass
class Node:
    """One run of an entry point, with its parameters and the upstream runs it reads."""

    id: str
    stage: str
    entry_point: str
    params: dict[str, str]
    refs: dict[str, Ref] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)
    agent_steps: int = 0
    frames_per_step: int = 4

    @property
    def upstream(self) -> list[str]:
        """Every node that must finish first (referenced or merely ordered after)."""
        return sorted({ref.node for ref in self.refs.values()} | set(self.after))

    def resolved(self, run_ids: dict[str, str]) -> dict[str, str]:
        """The parameters with every reference replaced by its upstream run's URI."""
        params = dict(self.params)
        for name, ref in self.refs.items():
            params[name] = f"runs:/{run_ids[ref.node]}{ref.suffix}"
        return params


def _level(sparsity: float) -> str:
    return f"{sparsity:.2f}"


def _mask_path(sparsity: float) -> str:
    """The ``Ref`` suffix of a find-mask level's mask: ``/sparsity_0.80/mask.pt``."""
    return f"/{sparsity_folder(sparsity)}/{MASK}"


class DagBuilder:
    """Builds the nodes of a study, stage by stage, in a topological order."""

    def __init__(self, spec: StudySpec, imp_rounds: int, frames_per_step: int) -> None:
        self.spec = spec
        self.imp_rounds = imp_rounds
        self.frames = frames_per_step
        self.nodes: dict[str, Node] = {}

    def common(self, algo: str, seed: int, steps: int) -> dict[str, str]:
        return {
            "algo": algo,
            "seed": str(seed),
            "total_steps": str(steps),
            "preset": self.spec.run_preset,
            "overrides": self.spec.overrides_text,
        }

    def add(self, node: Node) -> Node:
        node.frames_per_step = self.frames
        self.nodes[node.id] = node
        return node

    def dense(self, algo: str, game: str, seed: int) -> str:
        node_id = f"dense/{algo}/{game}/s{seed}"
        if node_id not in self.nodes:
            params = {**self.common(algo, seed, self.spec.steps.dense), "game": game}
            self.add(Node(node_id, "dense", TRAIN_DENSE, params, agent_steps=_int(params)))
        return node_id

    def mask(self, algo: str, game: str, method: str, seed: int) -> str:
        node_id = f"mask/{algo}/{game}/{method}/s{seed}"
        if node_id in self.nodes:
            return node_id
        params = {
            **self.common(algo, seed, self.spec.steps.mask),
            "game": game,
            "method": method,
            "sparsities": ",".join(f"{s:g}" for s in self.spec.sparsities),
        }
        refs = {}
        rounds = len(self.spec.sparsities)
        if method == "imp":  # IMP's dense round is the train-dense run of the same seed
            refs["dense_run"] = Ref(self.dense(algo, game, seed))
            rounds = self.imp_rounds
        node = Node(node_id, "mask", FIND_MASK, params, refs)
        node.agent_steps = rounds * self.spec.steps.mask
        self.add(node)
        return node_id

    def random_control(self, algo: str, game: str, level: float, seed: int) -> str:
        node_id = f"mask/{algo}/{game}/random/{_level(level)}/s{seed}"
        params = {
            **self.common(algo, seed, self.spec.steps.mask),
            "game": game,
            "method": "random",
            "random_weights": "ticket",
        }
        template = Ref(self.mask(algo, game, "imp", seed), _mask_path(level))
        node = Node(node_id, "mask", FIND_MASK, params, {"template": template})
        node.agent_steps = self.spec.steps.mask
        self.add(node)
        return node_id

    def transfer(self, key: tuple[str, str, str, str, float, str, str, int]) -> str:
        algo, method, source, target, level, weights, adapt, seed = key
        node_id = (
            f"transfer/{algo}/{method}/{source}->{target}/{_level(level)}/{weights}/{adapt}/s{seed}"
        )
        params = {
            **self.common(algo, seed, self.spec.steps.transfer),
            "game": target,
            "weights": weights,
            "adapt": adapt,
        }
        if adapt == "gmp":
            params["final_sparsity"] = f"{self.spec.adapt_gmp_final_sparsity:g}"
        mask = Ref(self.mask(algo, source, method, seed), _mask_path(level))
        node = Node(node_id, "transfer", TRANSFER, params, {"mask": mask})
        node.agent_steps = self.spec.steps.transfer
        return self.add(node).id

    def baseline(self, algo: str, target: str, name: str, level: float | None, seed: int) -> str:
        suffix = "" if level is None else f"/{_level(level)}"
        node_id = f"baseline/{algo}/{target}/{name}{suffix}/s{seed}"
        params = {
            **self.common(algo, seed, self.spec.steps.transfer),
            "game": target,
            "baseline": name,
        }
        refs = {}
        if name == "random":  # the densities of the IMP mask found on the target itself
            imp = self.mask(algo, target, "imp", seed)
            refs["mask"] = Ref(imp, _mask_path(level))
        elif level is not None:
            params["final_sparsity"] = f"{level:g}"
        node = Node(node_id, "baseline", TRANSFER, params, refs)
        node.agent_steps = self.spec.steps.transfer
        return self.add(node).id


def build_dag(spec: StudySpec, imp_rounds: int, frames_per_step: int = 4) -> list[Node]:
    """Every node of the study, upstream before downstream, the evaluation last.

    Args:
        spec: The study.
        imp_rounds: Pruned rounds one IMP chain trains to pass through every level.
        frames_per_step: Emulator frames per agent step (4 on Atari, 1 on MinAtar).
    """
    builder = DagBuilder(spec, imp_rounds, frames_per_step)
    for algo, game, seed in itertools.product(spec.algos, spec.sources, spec.seeds):
        builder.dense(algo, game, seed)
        for method in spec.mask_methods:
            builder.mask(algo, game, method, seed)
        if spec.random_control:
            for level in spec.sparsities:
                builder.random_control(algo, game, level, seed)
    for key in itertools.product(
        spec.algos,
        spec.mask_methods,
        spec.sources,
        spec.targets,
        spec.transfer_sparsities,
        spec.weights,
        spec.adapt,
        spec.seeds,
    ):
        builder.transfer(key)
    for algo, target, name, seed in itertools.product(
        spec.algos, spec.targets, spec.baselines, spec.seeds
    ):
        if name == "dense" and dense_serves_as_baseline(spec, target):
            continue
        for level in baseline_levels(spec, name):
            builder.baseline(algo, target, name, level, seed)
    training = list(builder.nodes)
    evaluation = Node(
        "evaluate",
        "evaluate",
        EVALUATE,
        {
            "reps": str(spec.eval_reps),
            "seed": "0",
            "baselines": ",".join(spec.eval_baselines),
        },
        after=training,
    )
    return [*builder.nodes.values(), evaluation]


def baseline_levels(spec: StudySpec, name: str) -> list[float | None]:
    """The sparsities baseline ``name`` trains at: every level a transfer *ends* at.

    That is each transferred level, and for ``adapt = gmp`` its final sparsity too (a transfer
    that prunes on from 0.8 to 0.9 is compared with baselines at 0.9). ``dense`` has no level;
    ``random`` copies the densities of an IMP mask, so only the ticket levels exist for it.
    """
    if name == "dense":
        return [None]
    levels = list(spec.transfer_sparsities)
    final = spec.adapt_gmp_final_sparsity
    if name != "random" and "gmp" in spec.adapt and final is not None and final not in levels:
        levels.append(final)
    return levels


def dense_serves_as_baseline(spec: StudySpec, target: str) -> bool:
    """Whether the source's dense runs are the dense-from-scratch baseline on ``target``.

    A dense baseline on a game that is also a source, trained as long as a transfer, is the
    very run ``train-dense`` already made there (same config, same seed: the same result, bit for
    bit on CPU), so it is not trained twice; ``evaluate`` compares against those runs.
    """
    return target in spec.sources and spec.steps.dense == spec.steps.transfer


def _int(params: dict[str, str]) -> int:
    return int(params["total_steps"])


# ----------------------------------------------------------------------------- sizes
@dataclass
class StageSize:
    """How big one stage of a study is."""

    runs: int = 0
    agent_steps: int = 0
    frames: int = 0


def dag_size(nodes: list[Node]) -> dict[str, StageSize]:
    """Runs, agent steps and emulator frames per stage, and ``"total"``."""
    sizes = {stage: StageSize() for stage in (*STAGES, "total")}
    for node in nodes:
        for key in (node.stage, "total"):
            sizes[key].runs += 1
            sizes[key].agent_steps += node.agent_steps
            sizes[key].frames += node.agent_steps * node.frames_per_step
    return sizes


# ----------------------------------------------------------------------------- versions
def code_version(root: Path | None = None) -> str:
    """A content hash of the code that decides a result.

    The library, the entry points and run presets, ``MLproject`` and the pinned requirements: a
    change to any of them makes every node of a study run again. Left out: what only plans and
    launches nodes (this module, the driver, the SLURM launcher, study-only presets: whatever of
    theirs matters is in each node's parameters), and the README, tests and benchmarks. Unlike a
    git commit it also sees uncommitted edits, and it works in an image without ``.git``.
    """
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = [p for d in CODE_DIRS for p in sorted((root / d).rglob("*")) if _is_code(p, root)]
    files += [root / name for name in CODE_FILES if (root / name).is_file()]
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


LAUNCH_ONLY = ("mlproject/study.py", "mlproject/main.py", "mlproject/slurm.py")


def _is_code(path: Path, root: Path) -> bool:
    if not path.is_file() or path.suffix not in (".py", ".toml") or "__pycache__" in path.parts:
        return False
    if path.relative_to(root).as_posix() in LAUNCH_ONLY:
        return False
    return path.suffix == ".py" or "overrides" in read_preset(path)
