"""Throughput of the training loop against what its parts allow: one process, one config.

Usage (from the repository root; ``python -m benchmarks.throughput`` is the same)::

    python benchmarks/throughput [--game pong] [--algo ddqn] [--device cpu|cuda]
        [--num-envs 4] [--steps N] [--threads T] [--repeats 3] [--quick] [--json]
        [--profile] [--overrides "key=value ..."]
        [--members K[,K...] [--batching auto|loop|vmap[,...]] [--study paper]]
        [--ab REF [--modes fp32,bf16]]

MinAtar instead of Atari: ``--game breakout --overrides "env.suite=minatar agent.encoder=minatar
env.frame_stack=1"`` (the settings of ``sparse_ticket_mlflow/presets/minatar.toml`` that make it
MinAtar; the others there are schedule lengths the benchmark sets itself).

Every figure is measured on the same :class:`~sparse_ticket.config.TrainConfig` (the full-scale
protocol of ``TrainConfig()``, with a 100k replay, learning that starts after a few thousand steps,
and evaluation, checkpoints and metric flushes pushed out of the timed window). Each block is
timed ``--repeats`` times (interleaved, so slow drift of a shared machine hits every block alike);
the median is reported, with the min and max beside it. Timers are ``time.perf_counter``; on CUDA
the device is synchronised before every timer read.

The figures
-----------
``loop_steps_per_s``
    Agent steps per second (one agent step = one step of one of the ``num_envs`` envs) of exactly
    what :meth:`Runner.train` does per iteration (``Runner.iterate``: act, store, learn, periodic
    work), in its learning phase: acting epsilon-greedily with epsilon already at ``eps_end``
    (the value of most of a run; it is printed), one ``batch_size`` update per ``train_freq`` agent
    steps, target syncs as they fall due. Warm-up (replay fill past ``learning_starts``, a few
    updates) is not timed.
``env_steps_per_s``
    Agent steps per second of a second vector env built the same way (``make_env``, the same
    ``num_envs``), stepped with random actions and no agent: the emulators plus the Python
    episode bookkeeping of :class:`~sparse_ticket.envs.EpisodicVecEnv`.
``updates_per_s``
    ``agent.update(batch)`` calls per second on batches sampled beforehand from the filled replay
    (sampling is not included; a separate agent of the same config is used so the loop's agent is
    left as training would leave it).
``replay_sample_ms``
    Mean milliseconds of one ``replay.sample(batch_size)``. The replay holds only the warm-up's
    few thousand transitions, which fit in the CPU caches better than a full 1M buffer would, so
    read this as a lower bound for a late-run sample.
``act_ms``
    Mean milliseconds of one ``agent.act(obs, eps_end, rng)`` on the ``num_envs`` observations
    (the Q-network forward pass on the greedy rows, i.e. on nearly every vector step).
``limit_steps_per_s``
    ``1 / (1 / env_steps_per_s + (1 / train_freq) / updates_per_s)``: the rate of a loop that did
    nothing but step the env and pay for its updates (with ``train_freq = 4``:
    ``1 / (1/env + 0.25/update)``).
``ratio_to_limit``
    ``loop_steps_per_s / limit_steps_per_s``. Near 1: the loop costs what the env and the updates
    cost, and only a faster env or a faster update will speed it up. Below 1: ``1 - ratio`` is the
    share of loop time spent elsewhere: acting, replay writes and sampling, Python bookkeeping,
    and interference (torch's intra-op threads and the emulator threads competing for the same
    cores). Above 1 is not possible for a serial CPU loop (it means the figures are noisy: run
    again on a quiet machine); on CUDA an update is asynchronous and overlaps the host work that
    follows it until the next acting forward pass synchronises, so it may slightly exceed 1.
``accounted_steps_per_s``, ``ratio_to_accounted``
    The same limit with acting and sampling added,
    ``1 / (1/env + act_s/num_envs + (sample_s + 1/update) / train_freq)``, and the loop's ratio
    to it: what is left below 1 is replay writes, the loop's own Python and interference.
``replay_bytes_per_transition``
    ``FrameReplay.bytes_per_transition`` of a 1M-transition buffer of this env (built but never
    written: ``np.zeros`` maps its pages lazily), with what 1M transitions take in GB.

Figures whose repeats differ by more than a factor 1.2 are listed under ``noisy``: on a shared
machine (other jobs, or torch's OpenMP threads descheduled mid-kernel) rerun before quoting them.

``--json`` prints one JSON object (the figures above plus the setup and every repeat's value);
``--profile`` adds one cProfile'd loop run after the measurements (top functions to stderr).

Population figures
------------------
``--members 1,2,4,8,16`` measures :class:`~sparse_ticket.population_runner.PopulationRunner`
instead: K runners of the benchmark's config (seeds ``--seed`` .. ``--seed + K - 1``, each with a
:class:`~sparse_ticket.metric_log.NullSink` and a temporary checkpoint directory of its own, each
with a ``REPLAY_CAPACITY`` replay) trained in lock-step by one population, for every K given and
every ``--batching`` given (``loop,vmap`` compares the two in one invocation; ``auto`` resolves to
vmap on CUDA, loop on CPU, and a batching that resolves to one already listed is measured once). The
single-run figures above are then **not** measured (nor ``--masked`` and ``--profile``): a
population run is long enough on its own; run the benchmark again without ``--members`` for them.

Every population is built and warmed up first, as the single run is (``begin()`` on each member,
then ``PopulationRunner.iterate`` until every member is past ``learning_starts`` with an update
done, then ``warmup_updates`` more updates per member); then each repeat times one run of every
(K, batching) in turn, so drift of a shared machine hits them alike. All populations are alive at
once (K members each hold their envs, emulator threads and replay; on CUDA a device replay mirror
each while it fits, see ``run.replay_device``). A timed run is ``ceil(steps / num_envs)``
population iterations, i.e. the single-run loop's agent steps *per member*.

``per_member_steps_per_s``
    Agent steps per second of one member (every member advances the same steps per iteration):
    member steps of the timed run / its wall time, the median over ``--repeats`` (min and max
    beside it).
``aggregate_steps_per_s``
    ``K * per_member_steps_per_s``: agent steps per second of all K members together.
``speedup_vs_k1``
    ``aggregate_steps_per_s / aggregate_steps_per_s`` at ``K = 1`` of the same batching in the
    same invocation (``null`` in JSON, blank in the table, when 1 is not among ``--members``).
``batching``, ``replay``
    The batching the population resolved (``loop`` or ``vmap``) and the members' replay class
    (``DeviceFrameReplay`` or ``FrameReplay``; a mix is listed with counts).
``study_device_hours``
    Device-hours of the ``--study`` preset (default ``paper``: about 44.4G agent steps) at this
    aggregate rate: ``study_agent_steps / aggregate_steps_per_s / 3600``, where
    ``study_agent_steps`` is the total the study's dry run reports
    (``sparse_ticket_mlflow.main.load`` and ``sparse_ticket_mlflow.dag.dag_size``). It assumes
    every training run of the study trains in a full population of K at this rate (this benchmark's
    game and algorithm stand for all of them). A :class:`PopulationRunner` needs K runs of one
    config but their seeds (or masks and initial weights) at a time: the ``paper`` study has 10
    seeds per condition, so read K > 10 as what packing conditions of one shape together would give.

``--json`` then prints the setup, ``study`` (name, agent steps, training runs) and
``population``: one object per (K, batching) with the figures above, ``members``,
``requested_batching``, every repeat's per-member value and ``noisy`` (max/min > 1.2).

A/B against today's code path
-----------------------------
``--ab REF`` measures the single-run figures of git ``REF`` (e.g. ``main`` before a change)
against this checkout in each of ``--modes`` (``agent.precision``), one fresh process per run,
``--repeats`` interleaved rounds, and prints medians and ratios to ``REF`` (module ``ab``)::

    python benchmarks/throughput --ab c471b87 --modes fp32,bf16 --quick --threads 2
    python benchmarks/throughput --ab c471b87 --modes fp32 --quick --threads 2 --game breakout \
        --overrides "env.suite=minatar agent.encoder=minatar env.frame_stack=1"

Modules
-------
``cli``
    The options and :func:`main`.
``build``
    The benchmarked config, the runners and populations, and their untimed warm-up.
``timing``
    The timed blocks (loop, env, updates, sampling, acting) and :class:`Figure`.
``single_run``, ``population``
    The two benchmarks: what they time, in which order, and the JSON-ready result.
``context``
    The setup fields both results share (the run's shape, the machine, the versions).
``report``
    The human-readable reports, from the JSON-ready result alone.
``ab``
    The interleaved A/B of ``--ab`` (git worktree of the ref, one process per run).
"""

from __future__ import annotations

from benchmarks.throughput.cli import main, parse_args
from benchmarks.throughput.population import run_population_benchmark
from benchmarks.throughput.report import format_population_report, format_report
from benchmarks.throughput.single_run import run_benchmark

__all__ = [
    "format_population_report",
    "format_report",
    "main",
    "parse_args",
    "run_benchmark",
    "run_population_benchmark",
]
