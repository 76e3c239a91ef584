"""What a training run of a study trained: its *condition*, read from its lineage tags.

Every training run (``train-dense``, ``transfer``) is put in a condition by its lineage tags:
algo x source x target x mask method x sparsity x weights x adapt x mask sparsity (baselines and
dense runs have their own conditions). ``sparsity`` is the final sparsity a run ends at,
``mask_sparsity`` the realised sparsity of the mask it starts from (they differ for a transfer
that prunes on, ``adapt=gmp``; a run without the tag started at its final sparsity). The named
baselines a condition is compared against are conditions too (``baseline-<name>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparse_ticket.transfer import BASELINES
from sparse_ticket_mlflow.contracts import TRAIN_DENSE, Tag
from sparse_ticket_mlflow.errors import InputError

DEFAULT_BASELINES = ("dense",)
FIELDS = (
    "algo",
    "source",
    "target",
    "method",
    "sparsity",
    "weights",
    "adapt",
    "condition",
    "mask_sparsity",
)


def parse_baselines(text: str) -> tuple[str, ...]:
    """``"dense,gmp"`` -> ``("dense", "gmp")`` (blank: the default, ``dense``); InputError on
    an unknown name."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in str(text).split(",") if n.strip()))
    for name in names:
        if name not in BASELINES:
            raise InputError(f"unknown baseline {name!r} in baselines ({', '.join(BASELINES)})")
    return names or DEFAULT_BASELINES


@dataclass(frozen=True)
class Condition:
    """What a run trained: the grid coordinates of the study.

    ``sparsity`` is the final sparsity, ``mask_sparsity`` the sparsity the run started from
    (both rounded to 2 decimals; equal unless a transfer prunes on from its mask).
    """

    algo: str
    source: str
    target: str
    method: str
    sparsity: str
    weights: str
    adapt: str
    condition: str
    mask_sparsity: str

    @property
    def span(self) -> str:
        """``0.80``, or ``0.80->0.90`` for a run that starts from a mask at 0.80 and ends at
        0.90."""
        final = two_decimals(self.sparsity)
        start = two_decimals(self.mask_sparsity or self.sparsity)
        return final if start == final else f"{start}->{final}"

    @property
    def label(self) -> str:
        if self.condition in ("dense", "baseline-dense"):
            return f"{self.algo} dense from scratch"
        if self.condition.startswith("baseline-"):
            return f"{self.algo} {self.condition[9:]} on target, s={self.span}"
        return (
            f"{self.algo} {self.method} {self.source}->{self.target} s={self.span} "
            f"{self.weights}/{self.adapt}"
        )

    @property
    def is_scratch(self) -> bool:
        return self.condition in ("dense", "baseline-dense")


@dataclass
class Curves:
    """One condition's runs: (steps, values) per run."""

    run_ids: list[str] = field(default_factory=list)
    steps: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


def condition_of(run: Any) -> Condition:
    """The condition of a training run, from its tags and params."""
    tags, params = run.data.tags, run.data.params
    game = params.get("game", "")
    if tags.get(Tag.ENTRY_POINT) == TRAIN_DENSE:
        algo = params.get("agent.algo", "")
        return Condition(algo, game, game, "", "0", "", "", "dense", mask_sparsity="0")
    # The final sparsity; the mask's (start) sparsity defaults to it on runs logged before the
    # mask_sparsity tag existed, and on baselines, which train at one sparsity throughout.
    final = tags.get(Tag.SPARSITY, "0")
    return Condition(
        algo=tags.get(Tag.ALGO, params.get("agent.algo", "")),
        source=tags.get(Tag.SOURCE_GAME, "") or "-",
        target=tags.get(Tag.TARGET_GAME, game),
        method=tags.get(Tag.MASK_METHOD, "") or "-",
        # Realised sparsities (%.6g) differ in the last digits between masks of one level.
        sparsity=rounded_sparsity(final),
        weights=tags.get(Tag.WEIGHTS, ""),
        adapt=tags.get(Tag.ADAPT, ""),
        condition=tags.get(Tag.CONDITION, "transfer"),
        mask_sparsity=rounded_sparsity(tags.get(Tag.MASK_SPARSITY, final)),
    )


def rounded_sparsity(sparsity: str) -> str:
    """A sparsity tag (``%.6g`` of the realised sparsity) rounded to 2 decimals, as text."""
    try:
        return f"{round(float(sparsity), 2):g}"
    except ValueError:
        return sparsity


def two_decimals(sparsity: str) -> str:
    """``"0.8"`` -> ``"0.80"`` for labels and titles (text that is no number stays as it is)."""
    try:
        return f"{float(sparsity):.2f}"
    except ValueError:
        return sparsity
