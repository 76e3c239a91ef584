"""Real Atari through ale-py: protocol, raw scores, explicit resets, exact resume, and replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparse_ticket.config import EnvConfig
from sparse_ticket.envs import available_games, episode_seed, make_env
from sparse_ticket.envs.atari import normalise_game
from sparse_ticket.replay import FrameReplay
from sparse_ticket.rollouts import evaluate_policy


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Pong", "pong"),
        ("SpaceInvaders", "space_invaders"),
        ("space-invaders", "space_invaders"),
        ("breakout", "breakout"),
    ],
)
def test_game_names(name, expected):
    assert normalise_game(name) == expected


def test_every_ale_game_is_available_and_unknown_ones_fail():
    games = available_games("atari")
    assert {"pong", "breakout", "space_invaders"} <= set(games) and len(games) > 100
    with pytest.raises(ValueError, match="unknown Atari game 'tetris_deluxe'"):
        make_env("tetris_deluxe", EnvConfig(), seed=0)


def test_episode_seeds_are_distinct_and_stable():
    seeds = {episode_seed(1, env, ep) for env in range(4) for ep in range(50)}
    assert len(seeds) == 200
    assert episode_seed(1, 2, 3) == episode_seed(1, 2, 3)


def test_observations_and_raw_rewards():
    env = make_env("pong", EnvConfig(), seed=0, num_envs=2)
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert env.num_actions == 6 and env.frame_shape == (84, 84)
    # The first observation of an episode is one frame after three zero frames.
    assert not obs[:, :3].any() and obs[:, 3].any()
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(400):
        rewards.append(env.step(rng.integers(0, 6, 2)).rewards)
    assert set(np.unique(np.concatenate(rewards))) <= {-1.0, 0.0, 1.0}
    assert np.concatenate(rewards).min() == -1.0  # random Pong loses points


def _run(env, actions):
    out = []
    for a in actions:
        r = env.step(a)
        out.append((r.next_obs.copy(), r.obs.copy(), r.rewards.copy(), r.reset_mask.copy()))
    return out


def test_finished_episodes_reset_at_once_without_an_autoreset_step():
    """No step after a terminal is the vector env's ignored 'reset step'."""
    env = make_env("breakout", EnvConfig(), seed=1, num_envs=2)
    env.reset()
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(1500):
        result = env.step(rng.integers(0, env.num_actions, 2))
        for episode in result.finished:
            ends += 1
            i = episode.env_index
            assert not result.obs[i, :3].any()  # the new episode's first observation
            assert episode.length > 0
    assert ends >= 2


def test_exact_resume_by_replaying_actions():
    config = EnvConfig()
    rng = np.random.default_rng(0)
    env = make_env("breakout", config, seed=5, num_envs=3)
    env.reset()
    actions = rng.integers(0, env.num_actions, (900, 3))
    _run(env, actions[:600])
    state = json.loads(json.dumps(env.state_dict()))
    assert max(state["episodes"]) >= 1  # an episode boundary lies behind the snapshot
    expected = _run(env, actions[600:])
    fresh = make_env("breakout", config, seed=5, num_envs=3)
    fresh.load_state_dict(state)
    got = _run(fresh, actions[600:])
    for a, b in zip(expected, got, strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


def test_replay_reproduces_every_transition_the_env_produced():
    """Stacks rebuilt from single frames equal what ale-py returned, across episode ends."""
    env = make_env("breakout", EnvConfig(), seed=2, num_envs=2)
    replay = FrameReplay(10_000, 2, env.frame_shape, 4, seed=0)
    obs = env.reset()
    replay.add_reset(np.ones(2, dtype=bool), env.latest_frame(obs))
    rng = np.random.default_rng(2)
    seen = set()
    ends = 0
    for _ in range(1200):
        actions = rng.integers(0, env.num_actions, 2)
        result = env.step(actions)
        replay.add_step(
            actions, result.rewards, result.terminals, env.latest_frame(result.next_obs)
        )
        for i in range(2):
            seen.add(
                (
                    obs[i].tobytes(),
                    int(actions[i]),
                    float(result.rewards[i]),
                    result.next_obs[i].tobytes(),
                    bool(result.terminals[i]),
                )
            )
        if result.reset_mask.any():
            ends += int(result.reset_mask.sum())
            replay.add_reset(result.reset_mask, env.latest_frame(result.obs))
        obs = result.obs
    assert ends >= 2 and len(replay) == 2 * 1200
    for _ in range(40):
        batch = replay.sample(64)
        for k in range(64):
            key = (
                batch.obs[k].numpy().tobytes(),
                int(batch.actions[k]),
                float(batch.rewards[k]),
                batch.next_obs[k].numpy().tobytes(),
                bool(batch.terminals[k]),
            )
            assert key in seen


class _ConstantAgent:
    def act(self, obs, epsilon, rng):
        return np.ones(len(obs), dtype=np.int64)


def test_evaluation_counts_complete_episodes_per_env_quota():
    env = make_env("breakout", EnvConfig(), seed=9, num_envs=2, max_episode_frames=400)
    scores = evaluate_policy(
        _ConstantAgent(), env, episodes=3, epsilon=0.0, rng=np.random.default_rng(0)
    )
    assert scores.shape == (3,)


class _RandomAgent:
    def act(self, obs, epsilon, rng):
        return rng.integers(0, 4, size=len(obs))


class _ResetCounter:
    """Wraps a backend's reset to count the sub-envs it resets."""

    def __init__(self, env):
        self.count, self._reset = 0, env.backend.reset
        env.backend.reset = self

    def __call__(self, mask, seeds):
        self.count += int(np.count_nonzero(mask))
        return self._reset(mask, seeds)


def test_evaluation_does_not_reset_for_episodes_no_one_plays():
    # The same scores as when every finished sub-env is reset (the step's default), without the
    # seeded resets (a ROM reload each) of sub-envs whose quota is met.
    def evaluate(reset_all: bool):
        env = make_env("breakout", EnvConfig(), seed=9, num_envs=2, max_episode_frames=400)
        if reset_all:
            step = env.step
            env.step = lambda actions, reset=None: step(actions)
        counter = _ResetCounter(env)
        scores = evaluate_policy(_RandomAgent(), env, 3, 0.0, np.random.default_rng(0))
        env.close()
        return scores, counter.count

    (scores, resets), (expected, all_resets) = evaluate(False), evaluate(True)
    assert np.array_equal(scores, expected)
    # Quotas 2 and 1: the first reset starts both (2); then only env 0's second episode (1).
    assert resets == 3 and all_resets > resets
