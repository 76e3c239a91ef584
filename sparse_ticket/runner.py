"""The runner owns the env loop, evaluation and checkpoints; the agent never touches an env.

One iteration of :meth:`Runner.train` (Mnih et al. 2015; van Hasselt et al. 2016)::

    act epsilon-greedily in N envs -> store the transitions -> (after learning_starts) one update
    per train_freq agent steps -> hard target sync every target_update steps -> periodic
    evaluation, metric flush and checkpoint

Tracking is not this module's business: metrics go to a :class:`MetricSink` in one batch per
logging interval (an sqlite tracking store costs ~20 ms per call), and finished checkpoints are
announced through :meth:`MetricSink.on_checkpoint`. SIGTERM (SLURM preemption) and SIGINT set a
flag; the loop then writes a checkpoint and returns ``"preempted"`` at the next iteration.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sparse_ticket.agents import make_agent
from sparse_ticket.building import make_replay
from sparse_ticket.checkpoint import CheckpointManager, load_checkpoint
from sparse_ticket.clock import crossed, linear_schedule
from sparse_ticket.config import TrainConfig
from sparse_ticket.envs import make_env
from sparse_ticket.envs.base import StepResult
from sparse_ticket.locks import LOCK_FILE, FileLock
from sparse_ticket.malloc import tune_malloc
from sparse_ticket.metric_log import MetricLog, MetricSink, NullSink
from sparse_ticket.metrics.plasticity import PlasticityProbe
from sparse_ticket.rollouts import evaluate_policy, score_metrics
from sparse_ticket.run_state import bundle, unbundle
from sparse_ticket.seeding import derive_seed
from sparse_ticket.sparsity.controller import SparsityController
from sparse_ticket.sparsity.masks import Mask
from sparse_ticket.transfer import merge_weights

__all__ = ["Runner", "stop_on_signals"]


@contextmanager
def stop_on_signals(flag: dict[str, bool]) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into ``flag["stop"] = True`` for the duration of the block."""

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True
        flag["signal"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Runner:
    """Trains one agent on one game: the loop, evaluation, metrics, checkpoints and resume."""

    def __init__(
        self,
        config: TrainConfig,
        checkpoint_dir: str | Path,
        sink: MetricSink | None = None,
        progress: bool | None = None,
        initial_weights: Mapping[str, Any] | None = None,
        initial_mask: Mask | None = None,
        early_stop: Callable[[list[float]], bool] | None = None,
    ) -> None:
        """Build env, agent, replay and sparsity regime.

        Args:
            initial_weights: Online weights ``{role: state_dict}`` to start from (a ticket's
                rewound weights, a transferred encoder) instead of a fresh init.
            initial_mask: A mask to train under from step 0 (see ``SparsityController``).
            early_stop: Called with all training episode scores so far after episodes end;
                True ends training early (IMP's optional early stop).
        """
        self.config = config
        # One writer per checkpoint directory (sparse_ticket.locks): LockHeld if a live process
        # trains this run; a killed holder's lock is gone with it.
        self.lock = FileLock(
            Path(checkpoint_dir) / LOCK_FILE, f"checkpoint directory {checkpoint_dir}"
        )
        self.lock.acquire()
        try:
            self._build(config, sink, progress, early_stop, initial_weights, initial_mask)
        except BaseException:
            self.lock.release()
            raise
        self.checkpoints = CheckpointManager(checkpoint_dir, keep=config.run.keep_checkpoints)

    def _build(
        self,
        config: TrainConfig,
        sink: MetricSink | None,
        progress: bool | None,
        early_stop: Callable[[list[float]], bool] | None,
        initial_weights: Mapping[str, Any] | None,
        initial_mask: Mask | None,
    ) -> None:
        self.sink: MetricSink = sink or NullSink()
        self.progress = progress
        self.early_stop = early_stop
        if config.run.torch_threads:
            torch.set_num_threads(config.run.torch_threads)
        self.malloc_tuned = config.run.tune_malloc and tune_malloc()
        """Whether glibc malloc tuning is in force (:mod:`sparse_ticket.malloc`)."""
        torch.manual_seed(derive_seed(config.seed, "torch"))
        self._build_envs()
        self._build_agent(initial_weights, initial_mask)
        self.replay = make_replay(
            config.run,
            self.env.num_envs,
            self.env.frame_shape,
            config.env.frame_stack,
            derive_seed(config.seed, "replay"),
        )
        self.act_rng = np.random.default_rng(derive_seed(config.seed, "explore"))
        self.log = MetricLog(self.sink)
        """Metrics since the last flush (:mod:`sparse_ticket.metric_log`)."""
        # The loop's state: everything below is checkpointed (save_checkpoint / resume).
        self.probe: PlasticityProbe | None = None
        self.episode_scores: list[float] = []
        self.step = 0
        self.updates = 0
        self.update_debt = 0.0
        self.eval_history: list[dict[str, Any]] = []
        self.obs: np.ndarray | None = None
        self._stop: dict[str, Any] = {"stop": False}  # set by a signal (see stop_on_signals)
        self.last_epsilon: float | None = None
        """The epsilon of the last collected step (logged as ``train/epsilon``)."""
        self.stopped_early = False

    def _build_envs(self) -> None:
        """The training envs and the evaluation envs, each from its own seed stream."""
        config, run = self.config, self.config.run
        self.env = make_env(config.game, config.env, derive_seed(config.seed, "train-env"))
        self.eval_env = make_env(
            config.game,
            config.env,
            derive_seed(config.seed, "eval-env"),
            num_envs=min(run.eval_envs, run.eval_episodes),
            max_episode_frames=run.eval_max_frames,
        )

    def _build_agent(
        self, initial_weights: Mapping[str, Any] | None, initial_mask: Mask | None
    ) -> None:
        """The agent (from its init stream, or ``initial_weights``), its sparsity regime and
        the rewind point of step 0."""
        config, run = self.config, self.config.run
        self.device = torch.device(run.device)
        self.agent = make_agent(
            config.agent,
            self.env.obs_shape,
            self.env.num_actions,
            self.device,
            init_seed=derive_seed(config.seed, config.init_stream),
        )
        if initial_weights is not None:
            self.agent.load_weights_state_dict(merge_weights(self.agent, initial_weights))
        self.sparsity = SparsityController(
            config.sparsity,
            run.total_steps,
            self.agent,
            derive_seed(config.seed, "sparsity"),
            initial_mask,
            learning_starts=run.learning_starts,
        )
        self.sparsity.start()
        self.rewind_weights = (
            self.agent.weights_state_dict() if config.sparsity.imp_rewind_step == 0 else None
        )

    # ----------------------------------------------------------------------------- lifecycle
    def initial_weights(self) -> dict[str, Any]:
        """The online weights at step 0 (lottery-ticket rewinding needs them)."""
        return self.agent.weights_state_dict()

    def _snapshot_rewind_point(self, previous: int) -> None:
        """Keep the weights of step ``imp_rewind_step`` (late rewinding, Frankle et al. 2020)."""
        k = self.config.sparsity.imp_rewind_step
        if self.rewind_weights is None and previous < k <= self.step:
            self.rewind_weights = self.agent.weights_state_dict()

    def attach_sink(self, sink: MetricSink) -> None:
        """Send metrics, checkpoints and evaluations to ``sink`` from now on.

        For a sink that can only be made once the resumed step is known (after :meth:`resume`);
        the metric buffer and the runner's own hooks both switch to it.
        """
        self.sink = sink
        self.log.sink = sink

    def resume(self, path: str | Path | None = None) -> int:
        """Restore the newest complete checkpoint (or ``path``); returns its step, 0 if none."""
        path = Path(path) if path else self.checkpoints.latest()
        if path is None:
            return 0
        tensors, state, replay_state = load_checkpoint(path)
        unbundle(self, tensors, state, where=str(path))
        if replay_state is not None:
            self.replay.load_state_dict(replay_state)
        else:
            # Without a saved replay, it refills from the current observations (not bit-exact).
            self._start_replay_episodes()
        return self.step

    def _start_replay_episodes(self) -> None:
        """Open an episode in the replay for every env, at the current observations."""
        self.replay.add_reset(
            np.ones(self.env.num_envs, dtype=bool), self.env.latest_frame(self.obs)
        )

    def save_checkpoint(self, include_replay: bool | None = None) -> Path:
        """Write a complete checkpoint of everything needed to continue exactly.

        ``include_replay`` defaults to ``run.checkpoint_replay``; the final checkpoint of a
        finished run leaves the replay out (nothing will learn from it again).
        """
        tensors, state = bundle(self)
        if include_replay is None:
            include_replay = self.config.run.checkpoint_replay
        replay = self.replay.state_dict() if include_replay else None
        path = self.checkpoints.save(self.step, tensors, state, replay)
        self.sink.on_checkpoint(path, self.step)
        return path

    # ---------------------------------------------------------------------------- the loop
    def train(self) -> str:
        """Train to ``total_steps`` or an early stop; returns ``"finished"`` or ``"preempted"``."""
        self.begin()
        with stop_on_signals(self._stop), self.progress_bar() as bar:
            while self.running():
                bar.update(self.iterate())
        return self.end()

    def iterate(self) -> int:
        """One iteration of the loop (act, store, learn, periodic work); the steps it took."""
        previous = self.step
        self._collect(self.agent.act(self.obs, self.epsilon(), self.act_rng))
        self._learn()
        self.periodic(previous)
        return self.step - previous

    def begin(self) -> None:
        """Before the first iteration: reset the envs and evaluate at step 0 (a fresh run)."""
        if self.obs is None:
            self.obs = self.env.reset()
            self._start_replay_episodes()
            self.log.extend(self.sparsity.metrics(0))
            if self.config.run.eval_every:
                self._evaluate()
        self.start_interval()

    def start_interval(self) -> None:
        """Start a metric interval now (its steps/s is measured from here to the next flush)."""
        self.log.start_interval(self.step)

    def share_stop_flag(self, flag: dict[str, Any]) -> None:
        """Stop on ``flag`` (a population's: one signal stops every member at once)."""
        self._stop = flag

    @property
    def done(self) -> bool:
        """Whether training has ended: the budget is spent or an early stop ended it (a run
        resumed from its final checkpoint is done; one resumed from a preemption is not)."""
        return self.step >= self.config.run.total_steps or self.stopped_early

    def running(self) -> bool:
        """Whether another iteration is due (budget left, no stop signal, no early stop)."""
        total = self.config.run.total_steps
        return self.step < total and not self._stop["stop"] and not self.stopped_early

    def end(self) -> str:
        """After the last iteration: the final evaluation and checkpoint; the outcome."""
        if self._stop["stop"]:
            self.flush_metrics()
            self.save_checkpoint()
            return "preempted"
        if not self.eval_history or self.eval_history[-1]["step"] != self.step:
            self._evaluate()
        self.flush_metrics()
        self.save_checkpoint(include_replay=False)
        return "finished"

    def progress_bar(self) -> tqdm:
        """A step progress bar (shown on a terminal unless ``progress`` says otherwise)."""
        return tqdm(
            total=self.config.run.total_steps,
            initial=self.step,
            unit="step",
            disable=None if self.progress is None else not self.progress,
        )

    def epsilon(self) -> float:
        """The exploration epsilon of the current step (linear decay, Mnih et al. 2015)."""
        run = self.config.run
        decay_steps = int(run.eps_decay_fraction * run.total_steps)
        return linear_schedule(self.step, run.eps_start, run.eps_end, decay_steps)

    def _collect(self, actions: np.ndarray) -> None:
        """One vector step with ``actions``: store the transitions, note finished episodes."""
        self.store(actions, self.env.step(actions))

    def store(self, actions: np.ndarray, result: StepResult) -> None:
        """Record the vector step ``result`` of ``actions``: replay, step count, episodes."""
        self.replay.add_step(
            actions, result.rewards, result.terminals, self.env.latest_frame(result.next_obs)
        )
        if result.reset_mask.any():
            self.replay.add_reset(result.reset_mask, self.env.latest_frame(result.obs))
        self.obs = result.obs
        self.last_epsilon = self.epsilon()
        self.step += self.env.num_envs
        for episode in result.finished:
            self.episode_scores.append(episode.score)
            self.log.add("train/episode_score", episode.score, self.step)
            self.log.add("train/episode_length", float(episode.length), self.step)
        if result.finished and self.early_stop is not None:
            self.stopped_early = self.early_stop(self.episode_scores)

    def updates_due(self) -> int:
        """Pay the update debt: the updates due now, one per ``train_freq`` agent steps."""
        run = self.config.run
        if self.step < run.learning_starts or len(self.replay) < self.config.agent.batch_size:
            return 0
        self.update_debt += self.env.num_envs / run.train_freq
        due = 0
        while self.update_debt >= 1.0:
            due += 1
            self.update_debt -= 1.0
        return due

    def record_update(self, stats: dict[str, torch.Tensor]) -> None:
        """Keep one update's device-side metrics until the next flush (no host sync here)."""
        self.log.update_stats.append(stats)
        self.updates += 1

    def _learn(self) -> None:
        for _ in range(self.updates_due()):
            self.record_update(self.agent.update(self.sample_batch()))

    def periodic(self, previous: int) -> None:
        """The work due between ``previous`` and the current step: rewind snapshot, sparsity
        schedule, target sync, evaluation, plasticity probe, metric flush, checkpoint."""
        run = self.config.run
        self._snapshot_rewind_point(previous)
        self.log.extend(self.sparsity.step(previous, self.step, self.sample_batch))
        if crossed(previous, self.step, self.config.agent.target_update):
            self.agent.sync_target()
        if crossed(previous, self.step, run.eval_every):
            self._evaluate()
        if crossed(previous, self.step, run.plasticity_every) and len(self.replay) > 0:
            self._measure_plasticity()
        if crossed(previous, self.step, run.log_every):
            self.flush_metrics()
        if crossed(previous, self.step, run.checkpoint_every) and self.step < run.total_steps:
            self.flush_metrics()
            self.save_checkpoint()

    def _measure_plasticity(self) -> None:
        """Dormant units, feature rank, norms and Q statistics on the fixed probe batch."""
        if self.probe is None:
            # Drawn once and then kept (and checkpointed), so measurements compare over time.
            rng = np.random.default_rng(derive_seed(self.config.seed, "probe"))
            batch = self.replay.sample(self.config.run.plasticity_probe_size, rng)
            self.probe = PlasticityProbe(batch)
        for key, value in self.probe.measure(self.agent).items():
            self.log.add(f"plasticity/{key}", value, self.step)

    def sample_batch(self) -> Any:
        """One training batch from the replay (the runner's own sampling stream)."""
        return self.replay.sample(self.config.agent.batch_size)

    # ------------------------------------------------------------------- evaluation, metrics
    def _evaluate(self) -> None:
        """Evaluate the policy now, from seeds of this step only (a resume evaluates the same)."""
        run = self.config.run
        rng = np.random.default_rng(derive_seed(self.config.seed, "eval-act", self.step))
        self.eval_env.seed = derive_seed(self.config.seed, "eval-env", self.step)
        self.eval_env.episodes[:] = 0
        scores = evaluate_policy(
            self.agent, self.eval_env, run.eval_episodes, run.eval_epsilon, rng
        )
        self.eval_history.append({"step": self.step, "scores": scores.tolist()})
        for key, value in score_metrics(scores).items():
            self.log.add(key, value, self.step)
        self.sink.on_evaluation(self.eval_history)

    def flush_metrics(self) -> None:
        """Hand the interval's metrics to the sink (:meth:`MetricLog.flush`; one host sync)."""
        self.log.flush(self.step, self.updates, self.last_epsilon)

    def close(self) -> None:
        """Close the training and evaluation envs and release the run's lock."""
        try:
            self.env.close()
            self.eval_env.close()
        finally:
            self.lock.release()
