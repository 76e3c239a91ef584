"""Typed experiment configuration: every hyperparameter is a documented dataclass field.

A :class:`TrainConfig` is made of sections (``env``, ``agent``, ``run``). Each field is addressable
as ``section.field`` (``agent.lr``) or, where the name is unique across sections, as the bare field
name (``lr``); :func:`apply_overrides` parses ``"lr=1e-4 target_update=8000"`` strings against the
field types, so a typo or a bad value is an error, never a silently ignored setting.

Defaults are the full-scale protocol of ``docs/protocol.md`` ("Environment and agent protocol"):
ALE v5 with sticky actions 0.25 (Machado et al. 2018), Adam 1e-4, replay 1M, learning starts 80k,
10M agent steps.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value or override that cannot be used (the message is one line)."""


@dataclass
class EnvConfig:
    """Environment protocol (Machado et al. 2018; docs/protocol.md). Every field is logged."""

    suite: str = "atari"
    """``atari`` (ALE through ale-py) or ``minatar`` (the MinAtar suite, for CPU-scale studies)."""
    num_envs: int = 4
    """Parallel training environments; agent steps are counted over all of them."""
    frame_skip: int = 4
    """Emulator frames per agent step (the last two are max-pooled)."""
    frame_stack: int = 4
    """Frames stacked into one observation (MinAtar: 1, its state is already Markov)."""
    screen_size: int = 84
    """Side of the square grayscale observation."""
    sticky_actions: float = 0.25
    """Probability that the emulator repeats the previous action (0.25 as Machado et al. 2018)."""
    noop_max: int = 30
    """Up to this many no-op actions at the start of each episode."""
    fire_reset: bool = True
    """Press FIRE on reset in games that need it to start."""
    episodic_life: bool = False
    """End training episodes on life loss (off in the v5 protocol; never used for evaluation)."""
    max_episode_frames: int = 108_000
    """Truncate episodes after this many emulator frames (30 minutes of play)."""
    full_action_space: bool = False
    """Use all 18 ALE actions instead of the game's minimal set."""
    env_threads: int = 0
    """Emulator threads for the vector env (0: one per env, at most the number of CPUs)."""


@dataclass
class AgentConfig:
    """Algorithm hyperparameters (van Hasselt et al. 2016; Sabatelli et al. 2018)."""

    algo: str = "ddqn"
    """``ddqn`` (Double DQN), ``dqv`` (Deep Quality-Value) or ``dqv-max``."""
    encoder: str = "nature"
    """``nature`` (Mnih et al. 2015: 3 conv + 512 fc) or ``minatar`` (Young & Tian 2019)."""
    lr: float = 1e-4
    """Adam learning rate."""
    adam_eps: float = 1e-8
    """Adam epsilon (Dopamine uses 1.5e-4 with lr 6.25e-5)."""
    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 32
    """Transitions per update."""
    loss: str = "huber"
    """TD loss: ``huber`` (smooth L1, delta 1) or ``mse``."""
    max_grad_norm: float = 10.0
    """Clip the global gradient norm of each network to this value (0 disables)."""
    clip_rewards: bool = True
    """Clip rewards to their sign in the TD target (the replay keeps raw rewards)."""
    target_update: int = 8_000
    """Agent steps between hard target-network updates."""
    precision: str = "fp32"
    """Arithmetic of the network forward passes: ``fp32``, or ``bf16`` (autocast: convolutions
    and matrix products in bfloat16; parameters, their gradients, Adam's moments, the network
    outputs, TD targets and losses stay float32). See ``docs/protocol.md``, "Precision"."""


@dataclass
class RunConfig:
    """The runner: budget, exploration, replay, evaluation, logging and checkpoints."""

    total_steps: int = 10_000_000
    """Agent steps (1 agent step = ``frame_skip`` frames) over all training envs."""
    learning_starts: int = 80_000
    """Agent steps of pure exploration that fill the replay before the first update."""
    train_freq: int = 4
    """Agent steps per gradient update (DQN: one update every 4 steps)."""
    replay_capacity: int = 1_000_000
    """Transitions kept in replay (a frame is stored once: ~7.06 GB for 1M Atari transitions)."""
    eps_start: float = 1.0
    """Initial exploration epsilon."""
    eps_end: float = 0.01
    """Final exploration epsilon."""
    eps_decay_fraction: float = 0.1
    """Fraction of ``total_steps`` over which epsilon decays linearly."""
    eval_every: int = 250_000
    """Agent steps between evaluations (0 disables periodic evaluation; a final one always runs)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    eval_epsilon: float = 0.001
    """Epsilon of the evaluation policy."""
    eval_envs: int = 4
    """Parallel evaluation environments."""
    eval_max_frames: int = 108_000
    """Truncate evaluation episodes after this many frames."""
    log_every: int = 10_000
    """Agent steps between metric flushes (metrics are buffered: one tracking call per interval)."""
    checkpoint_every: int = 500_000
    """Agent steps between checkpoints (0: only the final one)."""
    checkpoint_replay: bool = True
    """Include the replay buffer in checkpoints (needed for an exact resume; ~7 GB at 1M)."""
    keep_checkpoints: int = 1
    """Complete checkpoints kept on disk (older ones are deleted once a newer one is complete)."""
    plasticity_every: int = 50_000
    """Agent steps between plasticity measurements on a fixed probe batch (0 disables)."""
    plasticity_probe_size: int = 512
    """States in the probe batch, drawn once from the replay at the first measurement."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:1``)."""
    replay_device: str = "auto"
    """Where replay batches are sampled: ``host`` (numpy, then copied to the device), ``device``
    (a mirror of the frames on the training device, sampled there: bit-identical batches), or
    ``auto`` (the device when training on CUDA and the frames fit in half its free memory)."""
    torch_threads: int = 0
    """Intra-op threads for torch on CPU (0: torch's default, the physical cores)."""
    tune_malloc: bool = True
    """Keep freed memory in glibc's heap instead of returning it to the kernel after every
    update (:mod:`sparse_ticket.malloc`): the update's multi-MB temporaries then stop
    page-faulting. Process-wide, applied when a runner is built; a no-op off glibc."""


@dataclass
class SparsityConfig:
    """Sparse training and mask finding (Frankle & Carbin 2019; Zhu & Gupta 2017; Mocanu et al.
    2018; Evci et al. 2020). Schedule boundaries are fractions of training (<= 1) or steps (> 1).
    """

    regime: str = "dense"
    """``dense`` (no mask), ``static`` (a fixed mask), ``gmp`` (gradual magnitude pruning),
    ``set`` (SET rewiring at fixed sparsity) or ``rigl`` (RigL rewiring)."""
    sparsity: float = 0.0
    """Fixed sparsity of ``static``/``set``/``rigl``; final sparsity of ``gmp``."""
    scope: str = "encoder"
    """Which weights may be pruned: ``encoder`` (3 conv + fc, the prior study) or ``all``."""
    allocation: str = "global"
    """How sparsity is spread over layers: ``global`` magnitude, ``uniform``, or ``erk``."""
    init_mask: str = "random"
    """A mask made at step 0 (no mask given): ``random`` positions or ``magnitude`` of init."""
    gmp_start: float = 0.2
    """GMP: pruning starts here (Obando-Ceron et al. 2024: 20% of training)."""
    gmp_end: float = 0.8
    """GMP: the final sparsity is reached here (80% of training)."""
    update_every: int = 1_000
    """Agent steps between mask updates (GMP prunes, SET/RigL rewire)."""
    drop_fraction: float = 0.3
    """SET/RigL: fraction of active weights dropped and regrown per update."""
    drop_decay: str = "cosine"
    """SET/RigL drop-fraction schedule: ``cosine`` decay to 0 at ``dynamic_end`` or ``constant``."""
    dynamic_end: float = 1.0
    """SET/RigL: no rewiring after this point."""
    imp_prune_fraction: float = 0.2
    """IMP: fraction of the remaining weights pruned per round."""
    imp_rewind_step: int = 0
    """IMP: rewind survivors to their values at this step (0 = init; Frankle et al. 2020)."""
    imp_early_stop_window: int = 0
    """IMP: end a round once the IQM of its last N episode scores reaches the dense round's
    (0: off)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run; logged in full as MLflow params."""

    game: str = "pong"
    """Game name: any ALE ROM in snake_case (``space_invaders``) or a MinAtar game."""
    seed: int = 0
    """Master seed: network init, exploration, replay sampling and env episodes derive from it."""
    init_stream: str = "init"
    """The named stream the initial weights are drawn from (``sparse_ticket.seeding``): ``init``,
    or ``reinit`` for the re-initialisation controls, whose fresh weights must differ from the
    source ticket's at the same seed (Frankle & Carbin 2019)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)


SECTIONS = ("env", "agent", "run", "sparsity")


def _leaf_fields(config: TrainConfig) -> dict[str, tuple[Any, dataclasses.Field]]:
    """Map every dotted key (``agent.lr``, ``game``) to (owning object, field)."""
    leaves: dict[str, tuple[Any, dataclasses.Field]] = {}
    for f in fields(config):
        if f.name in SECTIONS:
            section = getattr(config, f.name)
            for sub in fields(section):
                leaves[f"{f.name}.{sub.name}"] = (section, sub)
        else:
            leaves[f.name] = (config, f)
    return leaves


def resolve_key(config: TrainConfig, key: str) -> str:
    """The dotted name of ``key``: itself if dotted, else the unique field with that name."""
    leaves = _leaf_fields(config)
    if key in leaves:
        return key
    matches = [name for name in leaves if name.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"ambiguous config key {key!r}: use one of {', '.join(matches)}")
    raise ConfigError(f"unknown config key {key!r}")


def parse_value(text: str, kind: type | str, key: str) -> Any:
    """Convert override text to the field's type (``int``, ``float``, ``bool``, ``str``)."""
    name = kind if isinstance(kind, str) else kind.__name__
    try:
        if name == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if name == "int":
            return int(text.replace("_", ""))
        if name == "float":
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"{key} must be {name}, got {text!r}") from None


def set_value(config: TrainConfig, key: str, value: Any) -> None:
    """Set a field by (possibly bare) key, converting strings to the field's type."""
    dotted = resolve_key(config, key)
    owner, f = _leaf_fields(config)[dotted]
    if isinstance(value, str):
        value = parse_value(value, f.type, dotted)
    setattr(owner, f.name, value)


def parse_overrides(text: str) -> list[tuple[str, str]]:
    """Split ``"lr=1e-4 target_update=8000"`` (spaces or commas) into (key, value) pairs."""
    pairs = []
    for token in shlex.split(text.replace(",", " ")):
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {token!r} is not of the form key=value")
        pairs.append((key.strip(), value.strip()))
    return pairs


def apply_overrides(config: TrainConfig, overrides: str | dict[str, Any]) -> TrainConfig:
    """Apply overrides in place and return the config (for chaining)."""
    items = overrides.items() if isinstance(overrides, dict) else parse_overrides(overrides)
    for key, value in items:
        set_value(config, key, value)
    return config


def flatten(config: TrainConfig) -> dict[str, Any]:
    """All fields as ``{dotted_key: value}``: what gets logged as MLflow params."""
    return {key: getattr(owner, f.name) for key, (owner, f) in _leaf_fields(config).items()}


def from_flat(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config from :func:`flatten` output (values may be strings, as MLflow has them)."""
    config = TrainConfig()
    for key, value in values.items():
        set_value(config, key, value)
    return config


def validate(config: TrainConfig) -> None:
    """Reject values no run can use, with a one-line message naming the field."""
    checks = [
        (config.run.total_steps > 0, "run.total_steps must be positive"),
        (config.env.num_envs > 0, "env.num_envs must be positive"),
        (config.agent.batch_size > 0, "agent.batch_size must be positive"),
        (config.run.train_freq > 0, "run.train_freq must be positive"),
        (config.run.replay_capacity > 0, "run.replay_capacity must be positive"),
        (config.agent.target_update > 0, "agent.target_update must be positive"),
        (config.run.log_every > 0, "run.log_every must be positive"),
        (config.run.eval_episodes > 0, "run.eval_episodes must be positive"),
        (config.run.eval_envs > 0, "run.eval_envs must be positive"),
        (config.run.learning_starts >= 0, "run.learning_starts must be >= 0"),
        (config.run.eval_every >= 0, "run.eval_every must be >= 0"),
        (config.run.checkpoint_every >= 0, "run.checkpoint_every must be >= 0"),
        (config.run.plasticity_every >= 0, "run.plasticity_every must be >= 0"),
        (config.run.plasticity_probe_size > 0, "run.plasticity_probe_size must be positive"),
        (config.run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1"),
        (config.agent.lr > 0, "agent.lr must be positive"),
        (0.0 <= config.agent.gamma <= 1.0, "agent.gamma must be in [0, 1]"),
        (0.0 <= config.env.sticky_actions <= 1.0, "env.sticky_actions must be in [0, 1]"),
        (0.0 <= config.run.eps_end <= 1.0, "run.eps_end must be in [0, 1]"),
        (0.0 <= config.run.eps_start <= 1.0, "run.eps_start must be in [0, 1]"),
        (0.0 <= config.run.eval_epsilon <= 1.0, "run.eval_epsilon must be in [0, 1]"),
        (0.0 < config.run.eps_decay_fraction <= 1.0, "run.eps_decay_fraction must be in (0, 1]"),
        (config.agent.loss in LOSSES, f"agent.loss must be {' or '.join(LOSSES)}"),
        (config.init_stream in INIT_STREAMS, "init_stream must be init or reinit"),
        (
            config.run.replay_device in ("auto", "host", "device"),
            "run.replay_device must be auto, host or device",
        ),
        (
            re.fullmatch(r"cpu|cuda(:\d+)?", config.run.device) is not None,
            f"run.device must be cpu, cuda or cuda:N, not {config.run.device!r}",
        ),
        (config.agent.algo in ALGOS, f"unknown algo {config.agent.algo!r} ({', '.join(ALGOS)})"),
        (config.env.suite in SUITES, f"unknown env suite {config.env.suite!r} (atari or minatar)"),
        (config.agent.encoder in ENCODERS, f"unknown encoder {config.agent.encoder!r}"),
        (
            config.agent.precision in PRECISIONS,
            f"agent.precision must be {' or '.join(PRECISIONS)}, not {config.agent.precision!r}",
        ),
        (config.agent.max_grad_norm >= 0, "agent.max_grad_norm must be >= 0"),
        *_sparsity_checks(config.sparsity),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _sparsity_checks(sp: SparsityConfig) -> list[tuple[bool, str]]:
    return [
        (sp.regime in REGIMES, f"unknown sparsity regime {sp.regime!r} ({', '.join(REGIMES)})"),
        (0.0 <= sp.sparsity < 1.0, "sparsity.sparsity must be in [0, 1)"),
        (sp.scope in SCOPES, f"unknown sparsity scope {sp.scope!r} (encoder or all)"),
        (
            sp.allocation in ALLOCATIONS,
            f"unknown allocation {sp.allocation!r} (global, uniform, erk)",
        ),
        (sp.init_mask in ("random", "magnitude"), "sparsity.init_mask must be random or magnitude"),
        (sp.drop_decay in ("cosine", "constant"), "sparsity.drop_decay must be cosine or constant"),
        (0.0 <= sp.drop_fraction < 1.0, "sparsity.drop_fraction must be in [0, 1)"),
        (0.0 < sp.imp_prune_fraction < 1.0, "sparsity.imp_prune_fraction must be in (0, 1)"),
        (sp.update_every > 0, "sparsity.update_every must be positive"),
        (sp.imp_rewind_step >= 0, "sparsity.imp_rewind_step must be >= 0"),
        (sp.imp_early_stop_window >= 0, "sparsity.imp_early_stop_window must be >= 0"),
        (sp.gmp_start >= 0, "sparsity.gmp_start must be >= 0"),
        (sp.gmp_end >= sp.gmp_start, "sparsity.gmp_end must not precede sparsity.gmp_start"),
    ]


# The allowed values of each config field that names a choice, defined here once: the checks
# above, the modules that act on them and the command line's help all read these.
REGIMES = ("dense", "static", "gmp", "set", "rigl")
SCOPES = ("encoder", "all")  # what may be pruned: the encoder only (the prior study) or all
ALLOCATIONS = ("global", "uniform", "erk")
ALGOS = ("ddqn", "dqv", "dqv-max")
SUITES = ("atari", "minatar")
ENCODERS = ("nature", "minatar")
PRECISIONS = ("fp32", "bf16")  # AgentConfig.precision, and ValueNetwork's
LOSSES = ("huber", "mse")  # AgentConfig.loss, and td_loss's kind
INIT_STREAMS = ("init", "reinit")
