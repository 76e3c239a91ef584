"""The DAG of a study: one node per run of an entry point, upstream before downstream.

:func:`build_dag` turns a :class:`sparse_ticket_mlflow.study.StudySpec` into nodes, each one run of
an entry point::

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
run exists. This module is pure: it knows nothing of MLflow (see :mod:`sparse_ticket_mlflow.main`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sparse_ticket_mlflow.contracts import (
    CONDITION_TAGS,
    EVALUATE,
    FIND_MASK,
    MASK,
    TRAIN_DENSE,
    TRANSFER,
    sparsity_folder,
)
from sparse_ticket_mlflow.study import StudySpec

STAGES = ("dense", "mask", "transfer", "baseline", "evaluate")


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
    condition: dict[str, str] = field(default_factory=dict)
    """The grid coordinates it trains (``contracts.CONDITION_TAGS``' fields that apply to its
    stage: algo, source, target, method, level, weights, adapt, seed); not part of its key."""

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
            node = Node(node_id, "dense", TRAIN_DENSE, params, agent_steps=_int(params))
            node.condition = _condition(
                algo, seed, source=game, target=game, method="dense", level=_level(0)
            )
            self.add(node)
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
        node.condition = _condition(algo, seed, source=game, method=method)
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
        node.condition = _condition(algo, seed, source=game, method="random", level=_level(level))
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
        node.condition = _condition(
            algo,
            seed,
            source=source,
            target=target,
            method=method,
            level=_level(level),
            weights=weights,
            adapt=adapt,
        )
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
        node.condition = _condition(
            algo,
            seed,
            target=target,
            method=f"baseline-{name}",
            level=_level(level or 0),
            adapt="none",  # as the transfer entry point tags a baseline
        )
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


def _condition(algo: str, seed: int, **fields: str) -> dict[str, str]:
    """A node's condition, in ``contracts.CONDITION_TAGS``' order."""
    values = {"algo": algo, **fields, "seed": str(seed)}
    return {name: values[name] for name in CONDITION_TAGS if name in values}


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
