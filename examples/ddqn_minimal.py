"""Double DQN on MinAtar in one screen: the library's parts, the loop in the open (CleanRL-style).

Read this before ``sparse_ticket/runner.py``. It builds the same env, replay and network as a
``train-dense`` run, then writes out what :class:`~sparse_ticket.runner.Runner` and
:class:`~sparse_ticket.agents.dqn.DDQN` do behind their interfaces: epsilon-greedy acting, storing
transitions, one Double DQN update (van Hasselt et al. 2016) every ``train_freq`` agent steps and a
hard target copy every ``target_update``. No sparsity, checkpoints, evaluation or MLflow here; the
layered version adds those. Run it::

    python examples/ddqn_minimal.py --game breakout --total-steps 100000
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sparse_ticket.config import EnvConfig
from sparse_ticket.envs import make_env
from sparse_ticket.nets import MinAtarEncoder, ValueNetwork
from sparse_ticket.replay import FrameReplay


@dataclass
class Args:
    """Every setting of the run (the ``minatar`` preset's values,
    ``sparse_ticket_mlflow/presets``)."""

    game: str = "breakout"
    """A MinAtar game: asterix, breakout, freeway, seaquest, space_invaders."""
    total_steps: int = 100_000
    """Agent steps (MinAtar has no frame skip: one step is one frame)."""
    seed: int = 0
    num_envs: int = 4
    """Parallel envs; one agent step of each is one vector step of the loop."""
    lr: float = 2.5e-4
    gamma: float = 0.99
    batch_size: int = 32
    replay_capacity: int = 100_000
    learning_starts: int = 5_000
    """Agent steps of random-ish acting before the first update."""
    train_freq: int = 4
    """Agent steps per gradient update (Mnih et al. 2015)."""
    target_update: int = 1_000
    """Agent steps between hard copies of the online network into the target network."""
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 10_000
    """Linear epsilon decay over this many agent steps (10% of the budget in the preset)."""


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return Args(**vars(parser.parse_args(argv)))


def train(args: Args) -> tuple[ValueNetwork, list[float]]:
    """Train; returns the online network and the score of every finished training episode."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    env_config = EnvConfig(suite="minatar", frame_stack=1, num_envs=args.num_envs)
    env = make_env(args.game, env_config, args.seed)
    q = ValueNetwork(MinAtarEncoder(), env.num_actions)
    q_target = copy.deepcopy(q)
    optimizer = torch.optim.Adam(q.parameters(), lr=args.lr)
    replay = FrameReplay(args.replay_capacity, env.num_envs, env.frame_shape, 1, args.seed)

    obs = env.reset()
    replay.add_reset(np.ones(env.num_envs, dtype=bool), env.latest_frame(obs))
    scores: list[float] = []
    for step in range(0, args.total_steps, env.num_envs):
        # Act: epsilon-greedy over the online network's Q values.
        fraction = min(1.0, step / args.eps_decay_steps)
        epsilon = args.eps_start + fraction * (args.eps_end - args.eps_start)
        with torch.no_grad():
            greedy = q(torch.from_numpy(obs)).argmax(dim=1).numpy()
        explore = rng.random(env.num_envs) < epsilon
        actions = np.where(explore, rng.integers(env.num_actions, size=env.num_envs), greedy)

        # Store: s' is result.next_obs; a finished episode's env is already reset in result.obs.
        result = env.step(actions)
        next_frames = env.latest_frame(result.next_obs)
        replay.add_step(actions, result.rewards, result.terminals, next_frames)
        if result.reset_mask.any():
            replay.add_reset(result.reset_mask, env.latest_frame(result.obs))
        obs = result.obs
        scores += [episode.score for episode in result.finished]

        # Learn: one update per train_freq agent steps (num_envs of them per vector step).
        if step >= args.learning_starts and step % args.train_freq < env.num_envs:
            batch = replay.sample(args.batch_size)
            with torch.no_grad():
                # Double DQN: the online network picks a', the target network values it.
                next_action = q(batch.next_obs).argmax(dim=1, keepdim=True)
                next_value = q_target(batch.next_obs).gather(1, next_action).squeeze(1)
                reward = batch.rewards.sign()  # clipped to its sign (Mnih et al. 2015)
                target = reward + args.gamma * (1.0 - batch.terminals.float()) * next_value
            q_taken = q(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
            loss = F.smooth_l1_loss(q_taken, target)  # Huber, delta 1
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(q.parameters(), 10.0)
            optimizer.step()

        if step % args.target_update < env.num_envs:
            q_target.load_state_dict(q.state_dict())
    return q, scores


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _, scores = train(args)
    recent = scores[-100:]
    mean = float(np.mean(recent)) if recent else float("nan")
    print(f"{args.game}: {len(scores)} episodes, mean of the last {len(recent)}: {mean:.2f}")


if __name__ == "__main__":
    main()
