"""Train K runs of one shape in one process, in lock-step, with their updates batched.

A :class:`PopulationRunner` drives K ordinary :class:`~sparse_ticket.runner.Runner` objects, one
per member (a seed, or a condition of the same shape: a transfer from another mask). Each member
keeps everything a run trained alone has: its config and seed, env and evaluation env, replay,
exploration, evaluation and sampling RNG streams, sparsity controller, plasticity probe, metric
sink and checkpoints. Only the arithmetic is shared: one
:class:`~sparse_ticket.agents.population.Population` acts for all members (one batched forward
pass with ``vmap`` batching) and steps all of them with one optimiser. The members' vector envs
step at the same time (each ALE vector env runs its emulators in threads of its own).

One iteration, for every member at once::

    act (batched) -> start every env step -> collect each member's transitions -> the updates
    due (one batched update per train_freq agent steps) -> each member's periodic work
    (target sync, sparsity schedule, evaluation, plasticity, metrics, checkpoint)

With ``loop`` batching a member's metrics, checkpoints and final weights are bit-identical to
the same run trained alone by :meth:`Runner.train` (tested on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sparse_ticket.agents.population import Population
from sparse_ticket.checkpoint import CheckpointError
from sparse_ticket.config import flatten
from sparse_ticket.runner import Runner, stop_on_signals

__all__ = ["PopulationRunner"]


class PopulationRunner:
    """Trains K runners of one configuration (seeds aside) together.

    Args:
        runners: The members, each built as it would be built to train alone (its own config,
            checkpoint directory, sink, initial weights and mask). Their configs may differ
            only in ``seed``.
        batching: ``loop``, ``vmap`` or ``auto`` (vmap on CUDA): see
            :mod:`sparse_ticket.agents.population`.

    Raises:
        ValueError: If the members' configs differ beyond the seed, or one has an early stop
            (members must stay in lock-step).
    """

    def __init__(self, runners: Sequence[Runner], batching: str = "auto") -> None:
        if not runners:
            raise ValueError("a population needs at least one member")
        _check_same_shape(runners)
        self.runners = list(runners)
        self.population = Population([runner.agent for runner in self.runners], batching)
        # One stop flag for all: a signal stops every member at the same iteration.
        self._stop = {"stop": False}
        for runner in self.runners:
            runner.share_stop_flag(self._stop)

    @property
    def step(self) -> int:
        """The members' common step."""
        return self.runners[0].step

    def resume(self, paths: Sequence[str | Path | None]) -> int:
        """Restore every member from its checkpoint (``None``: its newest); their common step.

        Raises:
            CheckpointError: If a member's checkpoint does not fit, or the members' checkpoints
                are of different steps (a population resumes together).
        """
        steps = [runner.resume(path) for runner, path in zip(self.runners, paths, strict=True)]
        if len(set(steps)) > 1:
            raise CheckpointError(
                f"members resumed at different steps {steps}: a population resumes together"
            )
        self.population.relink()  # loading gave each member's optimiser state dicts of its own
        return steps[0]

    def train(self) -> list[str]:
        """Train every member to ``total_steps``; each one's ``"finished"`` or ``"preempted"``."""
        for runner in self.runners:
            runner.begin()
        with stop_on_signals(self._stop), self.runners[0].progress_bar() as bar:
            while all(runner.running() for runner in self.runners):
                bar.update(self.iterate())
        return [runner.end() for runner in self.runners]

    def iterate(self) -> int:
        """One iteration of every member (see the module docstring); the steps each took."""
        previous = [runner.step for runner in self.runners]
        actions = self.population.act(
            [runner.obs for runner in self.runners],
            [runner.epsilon() for runner in self.runners],
            [runner.act_rng for runner in self.runners],
        )
        for runner, member_actions in zip(self.runners, actions, strict=True):
            runner.env.step_async(member_actions)
        for runner, member_actions in zip(self.runners, actions, strict=True):
            runner.store(member_actions, runner.env.step_wait())
        self._learn()
        for runner, before in zip(self.runners, previous, strict=True):
            runner.periodic(before)
        return self.step - previous[0]

    def _learn(self) -> None:
        """The updates due, each one batched over the members (each on its own batch)."""
        due = [runner.updates_due() for runner in self.runners]
        if len(set(due)) > 1:
            # Members start learning once their replay holds a batch; episode ends make replay
            # lengths differ by a few transitions, which matters only if learning_starts is
            # barely above batch_size.
            raise RuntimeError(
                f"population members fell out of lock-step (updates due {due}): "
                "set run.learning_starts well above agent.batch_size"
            )
        for _ in range(due[0]):
            batches = [runner.sample_batch() for runner in self.runners]
            for runner, stats in zip(self.runners, self.population.update(batches), strict=True):
                runner.record_update(stats)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


def _check_same_shape(runners: Sequence[Runner]) -> None:
    """Raise a ValueError naming the first setting in which a member differs from member 0."""
    first = flatten(runners[0].config)
    for index, runner in enumerate(runners):
        if runner.early_stop is not None:
            raise ValueError(f"population member {index} has an early stop (members train alike)")
        config = flatten(runner.config)
        for key in sorted(set(first) | set(config)):
            if key != "seed" and first.get(key) != config.get(key):
                raise ValueError(
                    f"population member {index} differs from member 0 in {key}: "
                    f"{config.get(key)!r} vs {first.get(key)!r}"
                )
