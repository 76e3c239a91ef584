"""Rollouts of a policy for evaluation, and the summary metrics of their scores.

What the runner calls at every ``eval_every`` steps (Machado et al. 2018 evaluate the policy on
complete episodes, with a small epsilon): a fixed number of complete episodes per evaluation,
each sub-env owing its share decided up front.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparse_ticket.envs import EpisodicVecEnv
from sparse_ticket.stats.bootstrap import interquartile_mean

__all__ = ["evaluate_policy", "score_metrics"]


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


def score_metrics(scores: np.ndarray) -> dict[str, float]:
    """The ``eval/*`` metrics of one evaluation's raw scores ``(episodes,)``."""
    return {
        "eval/score_mean": float(scores.mean()),
        "eval/score_iqm": float(interquartile_mean(scores)),
        "eval/score_median": float(np.median(scores)),
        "eval/score_std": float(scores.std()),
        "eval/score_min": float(scores.min()),
        "eval/score_max": float(scores.max()),
    }
