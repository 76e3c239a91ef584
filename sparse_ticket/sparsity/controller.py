"""The sparsity regime of one training run: which mask the agent trains under, and when it changes.

The runner owns one :class:`SparsityController` and calls :meth:`SparsityController.step` after
each vector step. The controller never touches the env; it hands masks to the agent
(``agent.set_masks``), which applies them after every optimiser step and to its targets.

Regimes (``SparsityConfig.regime``):

* ``dense``  -- no mask (unless one is given, which makes it ``static``);
* ``static`` -- one fixed mask: a given one, or one made at step 0 (random or by magnitude);
* ``gmp``    -- gradual magnitude pruning along the cubic schedule of Zhu & Gupta (2017),
  starting from the given mask (or dense) and pruning to exactly ``s(t)`` at each update;
* ``set``    -- SET (Mocanu et al. 2018): drop the smallest active weights, regrow as many at
  random, at fixed sparsity, with an optionally cosine-decayed drop fraction
  (Graesser et al. 2022);
* ``rigl``   -- RigL (Evci et al. 2020): as SET but regrow where the dense gradient is largest.

SET and RigL rewire on the clock of the *training updates*, as RigL (Evci et al. 2020, Alg. 1:
a mask update every Delta T training steps, the drop fraction cosine-decayed over them) and
sparse DQN (Graesser et al. 2022) do: the first rewiring comes ``update_every`` agent steps after
``learning_starts`` (when gradient updates begin), and the drop-fraction schedule runs from
``learning_starts`` to ``dynamic_end``. Before the first gradient update the mask is exactly the
one the run started with: a transferred ticket is not rewired into random zero-valued
connections while the replay fills (docs/protocol.md, "SET and RigL").
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from sparse_ticket.clock import crossed
from sparse_ticket.config import SparsityConfig
from sparse_ticket.sparsity.allocation import layer_densities, magnitude_prune, random_mask
from sparse_ticket.sparsity.dynamic import rigl_update, set_update
from sparse_ticket.sparsity.masks import (
    Mask,
    by_role,
    overlap,
    prunable_names,
    role_sparsity,
    sparsity_report,
)
from sparse_ticket.sparsity.schedules import cosine_decay, gmp_sparsity, resolve_step
from sparse_ticket.types import Metric


class MaskedAgent(Protocol):
    """What the controller needs of an agent (see ``sparse_ticket.agents.base.Agent``)."""

    def named_parameters(self) -> dict[str, torch.Tensor]: ...
    def set_masks(self, mask: Any) -> None: ...
    def reset_optimizer_state(self, positions: Any) -> None: ...
    def gradients(self, batch: Any) -> dict[str, torch.Tensor]: ...


def _cpu(mask: Mask) -> Mask:
    return {name: m.detach().to("cpu", copy=True) for name, m in mask.items()}


class SparsityController:
    """Owns the current mask of a run and changes it on schedule.

    Args:
        config: The run's sparsity section.
        total_steps: The run's budget (schedule fractions are of it).
        agent: The agent whose weights are masked.
        seed: Seed of the controller's random stream (random masks, SET regrowth).
        initial_mask: A mask to start from (a ticket); None makes one if the regime needs it.
        learning_starts: The agent step of the first gradient update: SET/RigL rewire every
            ``update_every`` steps after it, never before.
    """

    def __init__(
        self,
        config: SparsityConfig,
        total_steps: int,
        agent: MaskedAgent,
        seed: int,
        initial_mask: Mask | None = None,
        learning_starts: int = 0,
    ) -> None:
        self.config = config
        self.learning_starts = learning_starts
        self.total_steps = total_steps
        self.agent = agent
        self.generator = torch.Generator().manual_seed(seed)
        self.reference: Mask | None = _cpu(initial_mask) if initial_mask is not None else None
        self.mask: Mask | None = None
        self.updates = 0
        self.last_change = 0.0
        self.gmp_start = resolve_step(config.gmp_start, total_steps)
        self.gmp_end = resolve_step(config.gmp_end, total_steps)
        self.dynamic_end = resolve_step(config.dynamic_end, total_steps)
        self.gmp_initial = 0.0

    @property
    def active(self) -> bool:
        """Whether this run is sparse at all."""
        return self.config.regime != "dense" or self.reference is not None

    def start(self) -> None:
        """Install the mask of step 0 on the agent."""
        if self.reference is not None:
            self._install(self.reference)
        elif self.config.regime in ("static", "set", "rigl"):
            self._install(self._initial_mask(self.config.sparsity))
        if self.mask is not None:
            self.gmp_initial = sparsity_report(self.mask)["overall"]

    def _initial_mask(self, sparsity: float) -> Mask:
        params = self.agent.named_parameters()
        names = prunable_names(params, self.config.scope)
        if self.config.init_mask == "magnitude":
            dense = {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names}
            scores = {n: params[n].detach().abs().cpu() for n in names}
            return magnitude_prune(scores, dense, sparsity, self.config.allocation)
        shapes = {n: tuple(params[n].shape) for n in names}
        # Random masks have no magnitudes to rank globally: global allocation is uniform here.
        method = "uniform" if self.config.allocation == "global" else self.config.allocation
        densities: dict[str, float] = {}
        for group in by_role(shapes).values():  # each network at the level, as magnitude_prune
            densities.update(layer_densities(group, sparsity, method))
        return random_mask(shapes, densities, self.generator)

    def _install(self, mask: Mask) -> None:
        previous = self.mask
        self.mask = _cpu(mask)
        self.agent.set_masks(self.mask)
        if previous is not None:
            changed = sum(int((previous[n] != self.mask[n]).sum()) for n in self.mask)
            active = sum(int(m.sum()) for m in previous.values())
            self.last_change = changed / max(active, 1)

    # ------------------------------------------------------------------------------ updates
    def step(self, previous: int, step: int, sample_batch: Any = None) -> list[Metric]:
        """Update the mask if an update boundary lies in (previous, step]; returns metrics.

        ``sample_batch`` is a zero-argument callable returning a replay batch (RigL's gradients).
        """
        if not self.active:
            return []
        regime = self.config.regime
        if regime == "gmp":
            # Prune at every boundary inside [start, end), and on reaching the end, so the
            # final sparsity is met exactly at gmp_end whatever the update interval.
            boundary = crossed(previous, step, self.config.update_every)
            reached_end = previous < self.gmp_end <= step
            if not (reached_end or (boundary and self.gmp_start <= step < self.gmp_end)):
                return []
            self._gmp(min(step, self.gmp_end))
        elif regime in ("set", "rigl") and self.rewire_due(previous, step):
            self._rewire(step, sample_batch)
        else:
            return []
        self.updates += 1
        return self.metrics(step)

    def target_sparsity(self, step: int) -> float:
        """The sparsity the schedule asks for at ``step`` (GMP), else the fixed one."""
        if self.config.regime != "gmp":
            return sparsity_report(self.mask)["overall"] if self.mask else 0.0
        return gmp_sparsity(
            step,
            final=self.config.sparsity,
            initial=self.gmp_initial,
            start_step=self.gmp_start,
            end_step=self.gmp_end,
        )

    def _gmp(self, step: int) -> None:
        params = self.agent.named_parameters()
        current = self.mask
        if current is None:
            names = prunable_names(params, self.config.scope)
            current = {n: torch.ones(params[n].shape, dtype=torch.bool) for n in names}
        target = self.target_sparsity(step)
        if target <= sparsity_report(current)["overall"]:
            return
        scores = {n: params[n].detach().abs().cpu() for n in current}
        self._install(magnitude_prune(scores, current, target, self.config.allocation))

    def rewire_due(self, previous: int, step: int) -> bool:
        """Whether SET/RigL rewire in ``(previous, step]``: at every ``update_every`` agent
        steps counted from ``learning_starts`` (the first at ``learning_starts +
        update_every``), up to ``dynamic_end``."""
        start = self.learning_starts
        if step <= start or step > self.dynamic_end:
            return False
        return crossed(max(previous - start, 0), step - start, self.config.update_every)

    def _drop_fraction(self, step: int) -> float:
        """The drop fraction at ``step``: cosine-decayed over the training updates, i.e. from
        ``learning_starts`` to ``dynamic_end`` (Evci et al. 2020), or constant."""
        if self.config.drop_decay == "constant":
            return self.config.drop_fraction
        start = self.learning_starts
        return cosine_decay(step - start, self.config.drop_fraction, self.dynamic_end - start)

    def _rewire(self, step: int, sample_batch: Any) -> None:
        params = self.agent.named_parameters()
        weights = {n: params[n].detach().cpu() for n in self.mask}
        fraction = self._drop_fraction(step)
        if fraction <= 0:
            return
        if self.config.regime == "set":
            new, regrown = set_update(weights, self.mask, fraction, self.generator)
        else:
            grads = self.agent.gradients(sample_batch())
            dense = {n: grads[n].detach().cpu() for n in self.mask}
            new, regrown = rigl_update(weights, dense, self.mask, fraction)
        self._install(new)
        # Regrown weights start at zero (they were pruned) with fresh optimiser state.
        self.agent.reset_optimizer_state(regrown)

    # ------------------------------------------------------------------- metrics and state
    def metrics(self, step: int) -> list[Metric]:
        """Sparsity overall and per layer, mask change, and overlap with the starting mask."""
        if self.mask is None:
            return []
        report = sparsity_report(self.mask)
        out = [(f"sparsity/{name}", value, step) for name, value in report.items()]
        roles = role_sparsity(self.mask)
        if len(roles) > 1:  # DQV: each network's own level (each is pruned on its own)
            out += [(f"sparsity/role/{role}", value, step) for role, value in roles.items()]
        out.append(("sparsity/mask_change", self.last_change, step))
        if self.reference is not None:
            out.append(
                ("sparsity/overlap_initial", overlap(self.mask, self.reference)["overall"], step)
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Tensors and counters for a checkpoint (``torch.load(weights_only=True)`` safe)."""
        return {
            "mask": self.mask,
            "reference": self.reference,
            "updates": self.updates,
            "last_change": self.last_change,
            "gmp_initial": self.gmp_initial,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and re-install the mask on the agent."""
        self.reference = state["reference"]
        self.updates = state["updates"]
        self.last_change = state["last_change"]
        self.gmp_initial = state["gmp_initial"]
        self.generator.set_state(state["generator"])
        self.mask = None
        if state["mask"] is not None:
            self.mask = _cpu(state["mask"])
            self.agent.set_masks(self.mask)
