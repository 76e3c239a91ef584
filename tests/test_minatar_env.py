"""MinAtar backend: observation layout, actions, seeding, truncation and exact resume."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from minatar import Environment

from sparse_ticket.config import EnvConfig
from sparse_ticket.envs.base import EpisodicVecEnv, StepResult
from sparse_ticket.envs.minatar import MINATAR_CHANNELS, MinAtarBackend, minatar_games

GAMES = ["asterix", "breakout", "freeway", "seaquest", "space_invaders"]
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
NUM_ACTIONS = {"asterix": 5, "breakout": 3, "freeway": 3, "seaquest": 6, "space_invaders": 4}


def make_config(**overrides: Any) -> EnvConfig:
    """The MinAtar protocol: no frame stack, sticky actions as in the config default."""
    return EnvConfig(suite="minatar", frame_stack=1, **overrides)


def make_backend(
    game: str, num_envs: int, max_episode_frames: int | None = None, **overrides: Any
) -> MinAtarBackend:
    return MinAtarBackend(game, make_config(**overrides), num_envs, max_episode_frames)


def rollout(env: EpisodicVecEnv, actions: np.ndarray) -> list[StepResult]:
    """Step ``env`` with each row of ``actions`` (T, N); the results of every step."""
    return [env.step(a) for a in actions]


def assert_same_results(a: list[StepResult], b: list[StepResult]) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        for field in ("next_obs", "rewards", "terminals", "truncations", "obs", "reset_mask"):
            np.testing.assert_array_equal(
                getattr(x, field), getattr(y, field), err_msg=f"{field} at step {t}"
            )
        assert x.finished == y.finished, f"finished at step {t}"


def test_games_listed() -> None:
    assert minatar_games() == GAMES


@pytest.mark.parametrize("game", GAMES)
def test_layout_padding_and_actions(game: str) -> None:
    backend = make_backend(game, num_envs=2)
    channels = CHANNELS[game]
    assert backend.num_envs == 2
    assert backend.num_actions == NUM_ACTIONS[game]
    assert backend.obs_shape == backend.frame_shape == (MINATAR_CHANNELS, 10, 10)

    obs = backend.reset(np.ones(2, dtype=bool), np.array([5, 6]))
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert obs.shape == (2, MINATAR_CHANNELS, 10, 10)
        assert obs.dtype == np.uint8
        assert set(np.unique(obs)) <= {0, 1}
        assert obs[:, :channels].any()  # every game draws at least the player
        assert not obs[:, channels:].any()  # padding channels stay zero
        assert backend.latest_frame(obs) is obs
        obs, rewards, terminals, truncations = backend.step(
            rng.integers(backend.num_actions, size=2)
        )
        assert rewards.dtype == np.float32 and rewards.shape == (2,)
        assert terminals.dtype == truncations.dtype == np.bool_
        if terminals.any():
            backend.reset(terminals, np.arange(int(terminals.sum())))


@pytest.mark.parametrize("game", GAMES)
def test_matches_reference_environment(game: str) -> None:
    """After any history, a reset with seed s replays what ``Environment.seed(s)`` gives."""
    backend = make_backend(game, num_envs=1)
    mask = np.ones(1, dtype=bool)
    backend.reset(mask, np.array([99]))
    for _ in range(30):
        backend.step(np.array([backend.num_actions - 1]))
    obs = backend.reset(mask, np.array([5]))

    reference = Environment(game, sticky_action_prob=0.25)
    reference.seed(5)
    reference.reset()
    channels = CHANNELS[game]
    actions = np.random.default_rng(4).integers(backend.num_actions, size=300)
    for action in actions:
        np.testing.assert_array_equal(obs[0, :channels], reference.state().transpose(2, 0, 1))
        obs, rewards, terminals, _ = backend.step(np.array([action]))
        reward, terminal = reference.act(reference.minimal_action_set()[action])
        assert (rewards[0], terminals[0]) == (reward, terminal)
        if terminal:
            break


@pytest.mark.parametrize("name", ["SpaceInvaders", "space-invaders", " space_invaders "])
def test_game_names_normalised(name: str) -> None:
    assert make_backend(name, num_envs=1).game == "space_invaders"


def test_bad_arguments_rejected() -> None:
    with pytest.raises(ValueError, match="unknown MinAtar game 'pong'"):
        make_backend("pong", num_envs=1)
    with pytest.raises(ValueError, match="frame_stack=1"):
        MinAtarBackend("breakout", EnvConfig(frame_stack=4), 1)
    backend = make_backend("breakout", num_envs=2)
    backend.reset(np.ones(2, dtype=bool), np.array([0, 1]))
    with pytest.raises(ValueError, match="not in"):
        backend.step(np.array([0, -1]))
    with pytest.raises(ValueError, match="not in"):
        backend.step(np.array([3, 0]))


def test_full_action_space() -> None:
    assert make_backend("breakout", num_envs=1, full_action_space=True).num_actions == 6


def test_returned_arrays_are_not_aliased() -> None:
    backend = make_backend("breakout", num_envs=2)
    obs = backend.reset(np.ones(2, dtype=bool), np.array([0, 1]))
    kept = obs.copy()
    next_obs, *_ = backend.step(np.array([1, 2]))
    assert not np.array_equal(next_obs, kept)  # the ball moves every step
    np.testing.assert_array_equal(obs, kept)  # the caller's earlier obs is untouched
    reset_obs = backend.reset(np.array([True, False]), np.array([9]))
    assert reset_obs is not next_obs
    np.testing.assert_array_equal(reset_obs[1], next_obs[1])  # unmasked sub-env unchanged


@pytest.mark.parametrize("game", GAMES)
def test_vec_env_deterministic(game: str) -> None:
    actions = np.random.default_rng(1).integers(NUM_ACTIONS[game], size=(300, 2))
    runs = []
    for _ in range(2):
        env = EpisodicVecEnv(make_backend(game, num_envs=2), seed=3)
        first = env.reset()
        runs.append((first, rollout(env, actions)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert_same_results(runs[0][1], runs[1][1])


def test_different_seeds_differ() -> None:
    actions = np.random.default_rng(1).integers(NUM_ACTIONS["seaquest"], size=(100, 2))
    obs = []
    for seed in (3, 4):
        env = EpisodicVecEnv(make_backend("seaquest", num_envs=2), seed=seed)
        env.reset()
        obs.append(np.stack([r.next_obs for r in rollout(env, actions)]))
    assert not np.array_equal(obs[0], obs[1])


@pytest.mark.parametrize("game", GAMES)
def test_seeded_reset_independent_of_history(game: str) -> None:
    """An episode reset with seed s depends only on (s, actions), not on the env's past."""
    n = NUM_ACTIONS[game]
    actions = np.random.default_rng(2).integers(n, size=(200, 1))
    mask = np.ones(1, dtype=bool)

    def play(backend: MinAtarBackend) -> list[tuple[np.ndarray, ...]]:
        steps = [(backend.reset(mask, np.array([7])),)]
        for a in actions:
            out = backend.step(a)
            steps.append(out)
            if out[2].any():
                break
        return steps

    fresh = play(make_backend(game, num_envs=1))
    used = make_backend(game, num_envs=1)
    used.reset(mask, np.array([123]))
    history = np.random.default_rng(3).integers(n, size=77)
    history[-1] = n - 1  # end on a non-no-op action: what a sticky first step would repeat
    for a in history:
        used.step(np.array([a]))
    replayed = play(used)

    assert len(fresh) == len(replayed)
    for x, y in zip(fresh, replayed, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


def test_sticky_action_does_not_leak_across_reset() -> None:
    """With sticky probability 1 every action repeats the last one, which a reset must clear."""
    backend = make_backend("breakout", num_envs=1, sticky_actions=1.0)
    mask = np.ones(1, dtype=bool)
    backend.reset(mask, np.array([0]))
    backend.envs[0].last_action = 3  # as if the previous episode ended pressing "right"
    backend.reset(mask, np.array([0]))
    paddle_before = backend.step(np.array([0]))[0][0, 0, 9].copy()
    for _ in range(2):
        obs = backend.step(np.array([2]))[0]  # agent asks for "right"; sticky no-op wins
    np.testing.assert_array_equal(obs[0, 0, 9], paddle_before)


def test_truncation_reports_raw_score() -> None:
    limit = 15  # firing in place, the cannon is shot around frame 18
    env = EpisodicVecEnv(make_backend("space_invaders", 2, max_episode_frames=limit), seed=3)
    env.reset()
    fire = np.full(2, 3)  # space_invaders minimal set: no-op, left, right, fire
    scores = np.zeros(2)
    for t in range(1, limit + 1):
        result = env.step(fire)
        scores += result.rewards
        assert not result.terminals.any()
        if t < limit:
            assert not result.truncations.any() and not result.finished
    assert result.truncations.all()
    assert result.reset_mask.all()
    assert result.finished == [(0, scores[0], limit), (1, scores[1], limit)]
    assert scores.min() > 0  # firing straight up hits the alien block: raw, unclipped sums
    # The wrapper reset both sub-envs: the agent now sees a first observation, not s'.
    assert not np.array_equal(result.obs, result.next_obs)
    assert (env.lengths == 0).all() and (env.episodes == 1).all()
    assert not env.step(fire).truncations.any()


def test_terminal_takes_precedence_over_truncation() -> None:
    noop = np.zeros(1, dtype=np.int64)
    mask = np.ones(1, dtype=bool)
    backend = make_backend("breakout", num_envs=1, sticky_actions=0.0)
    backend.reset(mask, np.array([4]))
    end = 0
    while True:
        end += 1
        _, _, terminals, truncations = backend.step(noop)
        if terminals[0]:
            assert not truncations[0]
            break
    # Same episode with the limit on the terminal step: still a terminal, not a truncation.
    backend = make_backend("breakout", 1, max_episode_frames=end, sticky_actions=0.0)
    backend.reset(mask, np.array([4]))
    for _ in range(end - 1):
        assert not any(backend.step(noop)[2:])
    _, _, terminals, truncations = backend.step(noop)
    assert terminals[0] and not truncations[0]


def test_exact_resume() -> None:
    """State saved mid-run (episodes ended before and after) is restored by action replay."""
    k, l_steps = 300, 300
    rng = np.random.default_rng(5)
    actions = rng.integers(NUM_ACTIONS["breakout"], size=(k + l_steps, 2))

    env = EpisodicVecEnv(make_backend("breakout", num_envs=2), seed=11)
    env.reset()
    before = rollout(env, actions[:k])
    assert sum(len(r.finished) for r in before) >= 2
    state = json.loads(json.dumps(env.state_dict()))  # it must survive JSON
    # Sub-envs mid-episode with different history lengths exercise the staggered replay.
    assert len({len(a) for a in state["actions_since_reset"]}) == 2
    saved_obs = env.obs.copy()
    after = rollout(env, actions[k:])
    assert sum(len(r.finished) for r in after) >= 2

    resumed = EpisodicVecEnv(make_backend("breakout", num_envs=2), seed=0)
    obs = resumed.load_state_dict(state)
    np.testing.assert_array_equal(obs, saved_obs)
    assert_same_results(after, rollout(resumed, actions[k:]))
    assert resumed.state_dict() == env.state_dict()
