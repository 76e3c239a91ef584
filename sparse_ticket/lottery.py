"""Finding sparse subnetworks: IMP with rewinding, GMP, and the random-ticket control.

Every method yields one :class:`Ticket` per requested sparsity level: the mask, the *ticket*
(the rewound weights under the mask) and the *trained* weights (the ticket after training, or
the end of a GMP run). Each training is one :class:`~sparse_ticket.runner.Runner` run; the
caller's :class:`RoundHooks` decide where its metrics go (the MLflow layer opens a nested run)
and what happens to each ticket.

IMP (Frankle & Carbin 2019; Frankle et al. 2020 for rewinding to step k > 0)::

    round 0: train dense                      (or take a train-dense run's weights)
    round r: prune imp_prune_fraction of the remaining weights by magnitude -> mask m_r
             rewind survivors to their step-k values -> ticket_r; retrain it under m_r
One chain passes through every requested level: :func:`imp_levels` clamps the geometric
sequence so that it lands exactly on each of them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sparse_ticket.config import TrainConfig
from sparse_ticket.metric_log import MetricSink
from sparse_ticket.runner import Runner
from sparse_ticket.sparsity.allocation import magnitude_prune, random_like
from sparse_ticket.sparsity.masks import Mask, prunable_names
from sparse_ticket.sparsity.schedules import imp_levels
from sparse_ticket.stats.bootstrap import interquartile_mean
from sparse_ticket.types import Weights

TICKET_METHODS = ("imp", "gmp", "random")
"""How a ``find-mask`` run finds its masks: IMP with rewinding, GMP, or the random control."""
RANDOM_WEIGHTS = ("ticket", "reinit")
"""What a random mask made from a template is put over: the template's ticket weights (Frankle
& Carbin 2019's random-pruning control) or a fresh init."""


@dataclass
class Ticket:
    """A mask at one sparsity level and the weights that go with it."""

    sparsity: float
    mask: Mask
    ticket_weights: Weights
    """The rewound (or re-initialised) weights under the mask: what a transfer starts from."""
    trained_weights: Weights
    """The weights after training under the mask."""
    round_index: int
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    """Evaluations of the run that trained the ticket (for winning-ticket curves)."""
    rewind_weights: Weights | None = None
    """The unmasked weights the ticket was rewound to (the init, or step k with late
    rewinding): what the random-ticket control puts under its random mask."""


@dataclass
class DenseStart:
    """A dense run to start from (e.g. a ``train-dense`` run): IMP's round 0, done already."""

    rewind_weights: Weights
    trained_weights: Weights
    episode_scores: list[float] = field(default_factory=list)


class RoundHooks(Protocol):
    """Where each training round reports (the MLflow layer: a nested run per round)."""

    def round(self, index: int, sparsity: float) -> AbstractContextManager[MetricSink]:
        """A context for round ``index`` at ``sparsity``, yielding its metric sink."""

    def on_ticket(self, ticket: Ticket) -> None:
        """A ticket for a requested level is complete."""


def flat_weights(weights: Weights) -> dict[str, torch.Tensor]:
    """``{role: {param: t}}`` -> ``{"role.param": t}`` (the naming masks use)."""
    return {f"{role}.{name}": t for role, sd in weights.items() for name, t in sd.items()}


def masked(weights: Weights, mask: Mask) -> Weights:
    """A copy of ``weights`` with every masked tensor multiplied by its mask."""
    out = copy.deepcopy(weights)
    for key, keep in mask.items():
        role, name = key.split(".", 1)
        out[role][name] = out[role][name] * keep.to(out[role][name].dtype)
    return out


def magnitude_mask(
    weights: Weights, current: Mask | None, sparsity: float, config: TrainConfig
) -> Mask:
    """Prune ``weights`` (within the config's scope) to ``sparsity`` by magnitude."""
    flat = flat_weights(weights)
    if current is None:
        names = prunable_names(flat, config.sparsity.scope)
        current = {n: torch.ones(flat[n].shape, dtype=torch.bool) for n in names}
    scores = {n: flat[n].abs() for n in current}
    return magnitude_prune(scores, current, sparsity, config.sparsity.allocation)


def _early_stop(window: int, reference: float | None) -> Callable[[list[float]], bool] | None:
    """IMP's optional early stop: the IQM of the last ``window`` scores reaches ``reference``."""
    if not window or reference is None:
        return None
    return lambda scores: (
        len(scores) >= window and interquartile_mean(np.asarray(scores[-window:])) >= reference
    )


def _round_config(config: TrainConfig, regime: str, sparsity: float, steps: int) -> TrainConfig:
    out = copy.deepcopy(config)
    out.sparsity = replace(out.sparsity, regime=regime, sparsity=sparsity)
    out.run.total_steps = steps
    return out


@dataclass
class Round:
    """One training of a chain: its config, checkpoint directory, metric sink and start."""

    config: TrainConfig
    directory: Path
    sink: MetricSink
    runner_args: dict[str, Any] = field(default_factory=dict)


Chain = Generator[Round, Runner, list[Ticket]]
"""A mask-finding method as a generator: it yields each :class:`Round` to train, is sent the
finished :class:`Runner`, and returns its tickets. Whoever drives it decides how a round
trains: alone (:func:`run_chain`) or in lock-step with other chains (:func:`run_chains`)."""


def train_round(request: Round) -> Runner:
    """Train one round alone; raises InterruptedError if a signal stopped it.

    The round continues from the newest complete checkpoint in its directory, if any: a
    finished round (final checkpoint) is not trained again, a preempted one goes on from its
    step. So a chain driven again over the same directories continues from its last finished
    round, bit-identical to one never interrupted (the checkpoint holds the whole loop state).
    """
    runner = _open(request)
    try:
        runner.resume()
        if not runner.done and runner.train() != "finished":
            raise InterruptedError("training was stopped by a signal")
    finally:
        runner.close()
    return runner


def _open(request: Round) -> Runner:
    return Runner(
        request.config, request.directory, request.sink, progress=False, **request.runner_args
    )


def run_chain(chain: Chain) -> list[Ticket]:
    """Drive one chain, each round trained alone; its tickets."""
    try:
        request = next(chain)
        while True:
            try:
                runner = train_round(request)
            except BaseException as error:
                _throw(chain, error)
                raise
            request = chain.send(runner)
    except StopIteration as done:
        return done.value


def _throw(chain: Chain, error: BaseException) -> None:
    """Raise ``error`` inside ``chain`` at its round, so its contexts (the round's run) close
    as they would had the round raised there; swallows what comes back out."""
    with contextlib.suppress(BaseException):  # the caller re-raises the original error
        chain.throw(error)


def run_chains(chains: Sequence[Chain], batching: str = "auto") -> list[list[Ticket]]:
    """Drive K chains of one shape (seeds) in lock-step, each round trained as a population.

    Round ``r`` of every chain trains together in one
    :class:`~sparse_ticket.population_runner.PopulationRunner`, so a member's rounds are those it
    would train alone (bit-identical with ``loop`` batching). The chains must have the same
    rounds (the same method, levels and budgets), and no early stop. Like a chain alone, the
    chains continue from their last finished rounds.
    """
    requests = [next(chain) for chain in chains]
    while True:
        runners = [_open(r) for r in requests]
        try:
            _train_together(runners, batching)
        except BaseException as error:
            for chain in chains:
                _throw(chain, error)
            raise
        requests, tickets = [], []
        for chain, runner in zip(chains, runners, strict=True):
            try:
                requests.append(chain.send(runner))
            except StopIteration as done:
                tickets.append(done.value)
        if tickets:
            if requests:
                raise RuntimeError("chains of different lengths cannot train in lock-step")
            return tickets


def _train_together(runners: list[Runner], batching: str) -> None:
    """Train one round of every chain; closes the runners.

    Each member continues from its round's newest checkpoint (see :func:`train_round`);
    finished members are left alone, and members at one step train as one population (a
    SIGKILL between the members' checkpoints can leave them at different steps).
    """
    from sparse_ticket.population_runner import PopulationRunner

    try:
        by_step: dict[int, list[Runner]] = {}
        for runner in runners:
            runner.resume()
            if not runner.done:
                by_step.setdefault(runner.step, []).append(runner)
        for step in sorted(by_step):
            population = PopulationRunner(by_step[step], batching)
            population.population.relink()  # resumed members loaded optimiser state of their own
            if any(outcome != "finished" for outcome in population.train()):
                raise InterruptedError("training was stopped by a signal")
    finally:
        for runner in runners:
            runner.close()


def _report(
    hooks: RoundHooks,
    runner: Runner,
    sparsity: float,
    rewind_weights: Weights,
    index: int,
) -> Ticket:
    """The ticket a finished round trained under its mask, handed to the hooks: the unmasked
    ``rewind_weights`` under the round's mask."""
    ticket = Ticket(
        sparsity,
        runner.sparsity.mask,
        masked(rewind_weights, runner.sparsity.mask),
        runner.agent.weights_state_dict(),
        index,
        runner.eval_history,
        rewind_weights,
    )
    hooks.on_ticket(ticket)
    return ticket


def imp_chain(
    config: TrainConfig,
    levels: Sequence[float],
    directory: Path,
    hooks: RoundHooks,
    dense: DenseStart | None = None,
    round_steps: int | None = None,
) -> Chain:
    """One IMP chain through every level in ``levels``; its tickets, lowest first.

    A :data:`Chain`: :func:`run_chain` trains it alone, :func:`run_chains` several in lock-step.
    """
    steps = round_steps or config.run.total_steps
    window = config.sparsity.imp_early_stop_window
    if dense is None:
        with hooks.round(0, 0.0) as sink:
            dense_config = _round_config(config, "dense", 0.0, steps)
            runner = yield Round(dense_config, directory / "round_0", sink)
        dense = DenseStart(
            runner.rewind_weights, runner.agent.weights_state_dict(), runner.episode_scores
        )
    if dense.rewind_weights is None:
        raise ValueError("the dense round never reached sparsity.imp_rewind_step")
    reference = (
        interquartile_mean(np.asarray(dense.episode_scores[-window:]))
        if window and dense.episode_scores
        else None
    )
    wanted = {round(level, 6) for level in levels}
    tickets, mask, trained = [], None, dense.trained_weights
    for index, sparsity in enumerate(imp_levels(levels, config.sparsity.imp_prune_fraction), 1):
        mask = magnitude_mask(trained, mask, sparsity, config)
        with hooks.round(index, sparsity) as sink:
            runner = yield Round(
                _round_config(config, "static", sparsity, steps),
                directory / f"round_{index}",
                sink,
                {
                    "initial_weights": masked(dense.rewind_weights, mask),
                    "initial_mask": mask,
                    "early_stop": _early_stop(window, reference),
                },
            )
        trained = runner.agent.weights_state_dict()
        if round(sparsity, 6) in wanted:
            tickets.append(_report(hooks, runner, sparsity, dense.rewind_weights, index))
    return tickets


def gmp_chain(
    config: TrainConfig,
    levels: Sequence[float],
    directory: Path,
    hooks: RoundHooks,
    dense: DenseStart | None = None,
) -> Chain:
    """One GMP run per level (Zhu & Gupta 2017); the ticket rewinds the final mask's survivors.

    A :data:`Chain` (see :func:`imp_chain`).
    """
    tickets = []
    for index, sparsity in enumerate(sorted(levels)):
        with hooks.round(index, sparsity) as sink:
            runner = yield Round(
                _round_config(config, "gmp", sparsity, config.run.total_steps),
                directory / f"gmp_{index}",
                sink,
                {"initial_weights": dense.trained_weights if dense else None},
            )
        rewind = dense.rewind_weights if dense else runner.rewind_weights
        tickets.append(_report(hooks, runner, sparsity, rewind, index))
    return tickets


def random_chain(
    config: TrainConfig,
    levels: Sequence[float],
    directory: Path,
    hooks: RoundHooks,
    template: Mask | None = None,
    template_weights: Weights | None = None,
    seed: int = 0,
) -> Chain:
    """The random-ticket control (Frankle & Carbin 2019): random masks, trained.

    With a ``template`` mask, each random mask has exactly its per-layer densities (and the
    level is the template's); without one, the config's allocation at each level (``global``
    has no magnitudes to rank, so it means ``uniform`` here). The weights are
    ``template_weights`` (the template ticket's *unmasked* rewind point: its init, or step k)
    under the random mask, so every active weight starts at its original initial value, as in
    Frankle & Carbin's random-pruning control; without ``template_weights``, a fresh init.
    A :data:`Chain` (see :func:`imp_chain`).
    """
    tickets = []
    for index, sparsity in enumerate(sorted(levels)):
        round_config = _round_config(config, "static", sparsity, config.run.total_steps)
        round_config.sparsity.imp_rewind_step = 0  # the ticket is the starting point
        args: dict[str, Any] = {}
        if template is not None:
            mask = random_like(template, torch.Generator().manual_seed(seed + index))
            args["initial_mask"] = mask
            if template_weights is not None:
                args["initial_weights"] = masked(template_weights, mask)
        with hooks.round(index, sparsity) as sink:
            runner = yield Round(round_config, directory / f"random_{index}", sink, args)
        rewind = template_weights if template_weights is not None else runner.rewind_weights
        tickets.append(_report(hooks, runner, sparsity, rewind, index))
    return tickets


__all__ = [
    "Chain",
    "DenseStart",
    "Round",
    "RoundHooks",
    "Ticket",
    "flat_weights",
    "gmp_chain",
    "imp_chain",
    "magnitude_mask",
    "masked",
    "random_chain",
    "run_chain",
    "run_chains",
    "train_round",
]
