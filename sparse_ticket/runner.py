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

import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from sparse_ticket.agents import make_agent
from sparse_ticket.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from sparse_ticket.clock import crossed, linear_schedule
from sparse_ticket.config import RunConfig, TrainConfig, flatten
from sparse_ticket.envs import EpisodicVecEnv, make_env
from sparse_ticket.envs.base import StepResult
from sparse_ticket.metrics.plasticity import PlasticityProbe
from sparse_ticket.replay import DeviceFrameReplay, FrameReplay
from sparse_ticket.seeding import derive_seed
from sparse_ticket.sparsity.controller import SparsityController
from sparse_ticket.sparsity.masks import Mask
from sparse_ticket.stats.bootstrap import interquartile_mean
from sparse_ticket.types import Metric


class MetricSink(Protocol):
    """Where the runner's metrics and checkpoints go (the MLflow layer implements it)."""

    def write(self, metrics: list[Metric]) -> None:
        """Record one logging interval's metrics (one call per interval)."""

    def on_checkpoint(self, path: Path, step: int) -> None:
        """A complete checkpoint for ``step`` now exists at ``path``."""

    def on_evaluation(self, history: list[dict[str, Any]]) -> None:
        """The evaluation history so far: ``[{"step": s, "scores": [...]}, ...]``."""


class NullSink:
    """Discards everything (library use and benchmarks)."""

    def write(self, metrics: list[Metric]) -> None:
        pass

    def on_checkpoint(self, path: Path, step: int) -> None:
        pass

    def on_evaluation(self, history: list[dict[str, Any]]) -> None:
        pass


def evaluate_policy(
    agent: Any, env: EpisodicVecEnv, episodes: int, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """Raw scores (episodes,) of ``episodes`` complete episodes of the epsilon-greedy policy.

    Each sub-env owes a fixed quota of episodes, decided up front, so short episodes are not
    over-represented (taking the first n episodes to finish would bias towards them).
    """
    quota = np.full(env.num_envs, episodes // env.num_envs)
    quota[: episodes % env.num_envs] += 1
    scores: list[list[float]] = [[] for _ in range(env.num_envs)]
    obs = env.reset()
    while any(len(s) < q for s, q in zip(scores, quota, strict=True)):
        # A sub-env ending its last owed episode is not reset: no one plays the next one.
        owed = quota - np.array([len(s) for s in scores])
        result = env.step(agent.act(obs, epsilon, rng), reset=owed > 1)
        for episode in result.finished:
            if len(scores[episode.env_index]) < quota[episode.env_index]:
                scores[episode.env_index].append(episode.score)
        obs = result.obs
    return np.array([score for per_env in scores for score in per_env], dtype=np.float64)


def merge_weights(agent: Any, partial: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The agent's own weights with every tensor ``partial`` names replaced.

    A transfer passes only encoder tensors: the value head keeps the target's fresh init
    (Sabatelli & Geurts 2021 re-initialise it for the target's action set).
    """
    merged = agent.weights_state_dict()
    for role, tensors in partial.items():
        if role not in merged:
            raise ValueError(f"weights for role {role!r}, the agent has {sorted(merged)}")
        merged[role].update(tensors)
    return merged


def probe_parameters(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The agent parameters (flat ``role.param`` names) a run of ``config`` would train.

    Builds a one-env backend just to learn the observation shape and action count, so a mask or
    weights file can be checked against the architecture before any run starts.
    """
    env = make_env(config.game, config.env, seed=0, num_envs=1)
    try:
        agent = make_agent(config.agent, env.obs_shape, env.num_actions, "cpu")
    finally:
        env.close()
    return agent.named_parameters()


def make_replay(
    run: RunConfig, num_envs: int, frame_shape: tuple[int, ...], stack: int, seed: int
) -> FrameReplay:
    """The replay of ``run.replay_device``: sampled on the host, or on the training device.

    Both draw the same batches from the same seed (the device one mirrors the frames on the
    device and gathers there, so an update copies indices instead of 1.8 MB of Atari frames).
    """
    device = torch.device(run.device)
    on_device = run.replay_device == "device" or (
        run.replay_device == "auto"
        and device.type == "cuda"
        and DeviceFrameReplay.fits(run.replay_capacity, num_envs, frame_shape, device)
    )
    if on_device:
        return DeviceFrameReplay(run.replay_capacity, num_envs, frame_shape, stack, seed, device)
    return FrameReplay(run.replay_capacity, num_envs, frame_shape, stack, seed=seed)


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
        self.sink: MetricSink = sink or NullSink()
        self.progress = progress
        run = config.run
        if run.torch_threads:
            torch.set_num_threads(run.torch_threads)
        torch.manual_seed(derive_seed(config.seed, "torch"))
        self.env = make_env(config.game, config.env, derive_seed(config.seed, "train-env"))
        self.eval_env = make_env(
            config.game,
            config.env,
            derive_seed(config.seed, "eval-env"),
            num_envs=min(run.eval_envs, run.eval_episodes),
            max_episode_frames=run.eval_max_frames,
        )
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
        self.early_stop = early_stop
        self.probe: PlasticityProbe | None = None
        self.episode_scores: list[float] = []
        self.replay = make_replay(
            run,
            self.env.num_envs,
            self.env.frame_shape,
            config.env.frame_stack,
            derive_seed(config.seed, "replay"),
        )
        self.act_rng = np.random.default_rng(derive_seed(config.seed, "explore"))
        self.checkpoints = CheckpointManager(checkpoint_dir, keep=run.keep_checkpoints)
        self.step = 0
        self.updates = 0
        self.update_debt = 0.0
        self.eval_history: list[dict[str, Any]] = []
        self.obs: np.ndarray | None = None
        self._pending: list[Metric] = []
        self._update_stats: list[dict[str, torch.Tensor]] = []
        self._interval_start = (0, time.perf_counter())
        self._stop: dict[str, Any] = {"stop": False}  # set by a signal (see stop_on_signals)
        self.last_epsilon: float | None = None
        """The epsilon of the last collected step (logged as ``train/epsilon``)."""
        self.stopped_early = False

    # ----------------------------------------------------------------------------- lifecycle
    def initial_weights(self) -> dict[str, Any]:
        """The online weights at step 0 (lottery-ticket rewinding needs them)."""
        return self.agent.weights_state_dict()

    def _snapshot_rewind_point(self, previous: int) -> None:
        """Keep the weights of step ``imp_rewind_step`` (late rewinding, Frankle et al. 2020)."""
        k = self.config.sparsity.imp_rewind_step
        if self.rewind_weights is None and previous < k <= self.step:
            self.rewind_weights = self.agent.weights_state_dict()

    def resume(self, path: str | Path | None = None) -> int:
        """Restore the newest complete checkpoint (or ``path``); returns its step, 0 if none."""
        path = Path(path) if path else self.checkpoints.latest()
        if path is None:
            return 0
        tensors, state, replay_state = load_checkpoint(path)
        if state.get("config") != _jsonable(flatten(self.config)):
            raise CheckpointError(f"checkpoint {path} was written by a different configuration")
        try:
            # The checkpoint's mask first: loading weights re-applies the agent's current mask,
            # which must not be the fresh run's step-0 mask (SET/RigL have moved on since).
            self.sparsity.load_state_dict(tensors["sparsity"])
            self.agent.load_state_dict(tensors["agent"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path} does not fit this agent: {error}") from None
        torch.set_rng_state(tensors["torch_rng"])
        self.rewind_weights = tensors["rewind"]
        if tensors.get("probe") is not None:
            self.probe = PlasticityProbe.from_state_dict(tensors["probe"])
        self.episode_scores = state["episode_scores"]
        self.act_rng.bit_generator.state = state["act_rng"]
        self.step, self.updates = state["step"], state["updates"]
        self.update_debt = state["update_debt"]
        self.eval_history = state["eval_history"]
        self.obs = self.env.load_state_dict(state["env"])
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
        tensors = {
            "agent": self.agent.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "sparsity": self.sparsity.state_dict(),
            "rewind": self.rewind_weights,
            "probe": self.probe.state_dict() if self.probe is not None else None,
        }
        state = {
            "step": self.step,
            "updates": self.updates,
            "update_debt": self.update_debt,
            "act_rng": self.act_rng.bit_generator.state,
            "env": self.env.state_dict(),
            "eval_history": self.eval_history,
            "episode_scores": self.episode_scores,
            "config": _jsonable(flatten(self.config)),
        }
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
            self._pending.extend(self.sparsity.metrics(0))
            if self.config.run.eval_every:
                self._evaluate()
        self.start_interval()

    def start_interval(self) -> None:
        """Start a metric interval now (its steps/s is measured from here to the next flush)."""
        self._interval_start = (self.step, time.perf_counter())

    def share_stop_flag(self, flag: dict[str, Any]) -> None:
        """Stop on ``flag`` (a population's: one signal stops every member at once)."""
        self._stop = flag

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
            self._pending.append(("train/episode_score", episode.score, self.step))
            self._pending.append(("train/episode_length", float(episode.length), self.step))
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
        self._update_stats.append(stats)
        self.updates += 1

    def _learn(self) -> None:
        for _ in range(self.updates_due()):
            self.record_update(self.agent.update(self.sample_batch()))

    def periodic(self, previous: int) -> None:
        """The work due between ``previous`` and the current step: rewind snapshot, sparsity
        schedule, target sync, evaluation, plasticity probe, metric flush, checkpoint."""
        run = self.config.run
        self._snapshot_rewind_point(previous)
        self._pending.extend(self.sparsity.step(previous, self.step, self.sample_batch))
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
            self._pending.append((f"plasticity/{key}", value, self.step))

    def sample_batch(self) -> Any:
        """One training batch from the replay (the runner's own sampling stream)."""
        return self.replay.sample(self.config.agent.batch_size)

    # ------------------------------------------------------------------- evaluation, metrics
    def _evaluate(self) -> None:
        run = self.config.run
        rng = np.random.default_rng(derive_seed(self.config.seed, "eval-act", self.step))
        self.eval_env.seed = derive_seed(self.config.seed, "eval-env", self.step)
        self.eval_env.episodes[:] = 0
        scores = evaluate_policy(
            self.agent, self.eval_env, run.eval_episodes, run.eval_epsilon, rng
        )
        self.eval_history.append({"step": self.step, "scores": scores.tolist()})
        for key, value in {
            "eval/score_mean": scores.mean(),
            "eval/score_iqm": interquartile_mean(scores),
            "eval/score_median": np.median(scores),
            "eval/score_std": scores.std(),
            "eval/score_min": scores.min(),
            "eval/score_max": scores.max(),
        }.items():
            self._pending.append((key, float(value), self.step))
        self.sink.on_evaluation(self.eval_history)

    def flush_metrics(self) -> None:
        """Reduce the interval's update stats (one host sync) and hand all metrics to the sink.

        The per-interval figures are written once per step: a second flush at the same step
        (a log and a checkpoint interval that coincide, or the final evaluation) only hands on
        what is pending, so no point is logged twice.
        """
        start_step, start_time = self._interval_start
        now = time.perf_counter()
        if self.step > start_step:
            self._pending.append(
                (
                    "perf/steps_per_sec",
                    (self.step - start_step) / max(now - start_time, 1e-9),
                    self.step,
                )
            )
            if self._update_stats:
                for key in self._update_stats[0]:
                    mean = torch.stack([s[key] for s in self._update_stats]).float().mean().item()
                    if math.isfinite(mean):
                        self._pending.append((f"train/{key}", mean, self.step))
                self._update_stats = []
            if self.last_epsilon is not None:
                self._pending.append(("train/epsilon", self.last_epsilon, self.step))
            self._pending.append(("train/updates", float(self.updates), self.step))
            self._pending.append(("progress/step", float(self.step), self.step))
            self._interval_start = (self.step, now)
        if self._pending:
            self.sink.write(self._pending)
            self._pending = []

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so comparisons match what a checkpoint stored."""
    return json.loads(json.dumps(values))
