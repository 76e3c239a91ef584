"""Config overrides, flattening and validation."""

import pytest

from sparse_ticket.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    flatten,
    from_flat,
    parse_overrides,
    validate,
)


def test_overrides_by_bare_and_dotted_name_with_types():
    config = apply_overrides(
        TrainConfig(), "lr=1e-4 target_update=8000 run.checkpoint_replay=false"
    )
    assert config.agent.lr == 1e-4
    assert config.agent.target_update == 8000
    assert config.run.checkpoint_replay is False


def test_overrides_accept_commas_and_underscored_ints():
    config = apply_overrides(TrainConfig(), "total_steps=1_000,batch_size=64")
    assert config.run.total_steps == 1000
    assert config.agent.batch_size == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope=1", "unknown config key 'nope'"),
        ("lr=fast", "agent.lr must be float, got 'fast'"),
        ("batch_size=3.5", "agent.batch_size must be int"),
        ("lr", "not of the form key=value"),
        ("checkpoint_replay=maybe", "run.checkpoint_replay must be bool"),
    ],
)
def test_bad_overrides_are_one_line_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(), text)


def test_parse_overrides_keeps_quoted_values():
    assert parse_overrides("game='space_invaders' device=cuda") == [
        ("game", "space_invaders"),
        ("device", "cuda"),
    ]


def test_flatten_round_trips_through_strings():
    config = apply_overrides(TrainConfig(), "lr=3e-4 sticky_actions=0 algo=dqv")
    flat = {key: str(value) for key, value in flatten(config).items()}
    assert flatten(from_flat(flat)) == flatten(config)
    assert "env.sticky_actions" in flat and "agent.lr" in flat and "game" in flat


def test_defaults_follow_the_protocol():
    config = TrainConfig()
    assert config.env.sticky_actions == 0.25
    assert config.env.frame_skip == 4 and config.env.frame_stack == 4
    assert config.env.max_episode_frames == 108_000
    assert config.run.replay_capacity == 1_000_000 and config.run.learning_starts == 80_000
    assert config.run.total_steps == 10_000_000
    validate(config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("total_steps=0", "run.total_steps must be positive"),
        ("algo=ppo", "unknown algo 'ppo'"),
        ("gamma=1.5", r"agent.gamma must be in \[0, 1\]"),
        ("loss=l1", "agent.loss must be huber or mse"),
    ],
)
def test_validate_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(apply_overrides(TrainConfig(), override))
