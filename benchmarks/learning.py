"""Do our dense agents learn as published ones do? MinAtar learning curves against Young & Tian.

Young & Tian (2019, figure ``img/learning_curves.gif`` of kenjyoung/MinAtar; ``docs/protocol.md``
section "Reference results") plot DQN's **training return, a moving average over the last 100
episodes**, per frame, over 30 runs. MinAtar has no frame skip, so one frame is one agent step.
This benchmark trains dense agents with a run preset (default ``minatar``) and prints the same
statistic at checkpoints next to the published values read off that figure::

    python benchmarks/learning.py --games breakout,space_invaders,freeway,asterix --seeds 0,1
    python benchmarks/learning.py --report                 # table and plot from stored results
    python benchmarks/learning.py --set run.train_freq=1 --tag minatar-tf1   # a preset variant

Per seed, the figure at step ``t`` is the mean of the last 100 training episodes that ended by
``t`` (fewer if fewer have ended); across seeds it is their IQM (Agarwal et al. 2021; with two
seeds the IQM is their mean). A game *reaches* the published value when that IQM is at least
``--pass-fraction`` (0.9) of it.

Runs are resumable: each keeps checkpoints under ``--work`` and its episode record under
``--results``; a killed benchmark continues every unfinished run from its last checkpoint, and a
finished run is never trained again. Layout of ``--results`` (committed; ``docs/validation.md``
shows what it holds)::

    benchmarks/results/learning/<tag>/<algo>/<game>/s<seed>.json
        {"config": {...}, "episodes": [[step, score], ...], "step": 1000000,
         "seconds": 812.4, "finished": true}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparse_ticket.config import TrainConfig, apply_overrides, flatten, validate
from sparse_ticket.envs import make_env
from sparse_ticket.runner import Runner
from sparse_ticket.stats.scores import iqm
from sparse_ticket.types import Metric
from sparse_ticket_mlflow.presets import load_preset

PUBLISHED_DQN: dict[str, dict[int, float]] = {
    "breakout": {1_000_000: 9.5, 5_000_000: 10.0},
    "space_invaders": {1_000_000: 30.0, 5_000_000: 43.0},
    "freeway": {1_000_000: 48.0, 5_000_000: 50.0},
    "asterix": {1_000_000: 10.0, 5_000_000: 17.0},
    "seaquest": {1_000_000: 1.0, 5_000_000: 20.0},
}
"""DQN's training return (100-episode moving average) at 1M and 5M frames, read off Young & Tian's
figure (about +-1; no table exists). Sticky actions 0.1, difficulty ramping, 1 update per frame."""

MUST_REACH = ("breakout", "space_invaders", "freeway")
"""Games whose published value our preset must reach (issue 12); Asterix is reported beside."""

WINDOW = 100
"""Episodes in the moving average (Young & Tian)."""

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", default="breakout,space_invaders,freeway,asterix")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--algos", default="ddqn", help="ddqn, dqv, dqv-max (comma-separated)")
    parser.add_argument("--steps", type=int, default=1_000_000, help="agent steps per run")
    parser.add_argument("--preset", default="minatar", help="run preset of every run")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override on the preset"
    )
    parser.add_argument("--tag", default="", help="results folder name (default: the preset)")
    parser.add_argument("--checkpoints", default="250000,300000,500000,1000000")
    parser.add_argument(
        "--study-budget",
        type=int,
        default=300_000,
        help="agent steps of a dense run of the minatar study: the report says how far from "
        "random to the published value the agents are there",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "learning")
    parser.add_argument("--work", type=Path, default=Path("st-data") / "learning")
    parser.add_argument("--pass-fraction", type=float, default=0.9)
    parser.add_argument("--report", action="store_true", help="only report stored results")
    parser.add_argument("--plot", type=Path, default=None, help="write the learning-curve figure")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class RunKey:
    """One benchmark run: which results folder, algorithm, game and seed."""

    tag: str
    algo: str
    game: str
    seed: int

    def result_path(self, root: Path) -> Path:
        return root / self.tag / self.algo / self.game / f"s{self.seed}.json"

    def work_dir(self, root: Path) -> Path:
        return root / self.tag / self.algo / self.game / f"s{self.seed}"


def build_config(args: argparse.Namespace, key: RunKey) -> TrainConfig:
    """The preset's config for one run, with the benchmark's budget and overrides."""
    config = apply_overrides(TrainConfig(), load_preset(args.preset))
    config.game, config.seed, config.agent.algo = key.game, key.seed, key.algo
    config.run.total_steps = args.steps
    config.run.torch_threads = args.threads
    apply_overrides(config, " ".join(args.set))
    validate(config)
    return config


class EpisodeRecord:
    """A :class:`MetricSink` keeping ``(step, score)`` of every training episode.

    At every complete checkpoint it rewrites the result file, so a resumed run continues the
    record exactly where its checkpoint left it.
    """

    def __init__(self, path: Path, config: TrainConfig, resumed_step: int) -> None:
        self.path = path
        self.config = config
        stored = json.loads(path.read_text()) if resumed_step and path.is_file() else {}
        self.episodes: list[list[float]] = [
            e for e in stored.get("episodes", []) if e[0] <= resumed_step
        ]
        self.seconds = float(stored.get("seconds", 0.0)) if resumed_step else 0.0
        self.started = time.perf_counter()

    def write(self, metrics: list[Metric]) -> None:
        self.episodes += [[step, value] for key, value, step in metrics if key == TRAIN_SCORE]

    def on_checkpoint(self, path: Path, step: int) -> None:
        self.save(step, finished=False)

    def on_evaluation(self, history: list[dict[str, Any]]) -> None:
        pass

    def save(self, step: int, finished: bool) -> None:
        seconds = self.seconds + time.perf_counter() - self.started
        record = {
            "config": flatten(self.config),
            "episodes": self.episodes,
            "step": step,
            "seconds": round(seconds, 1),
            "finished": finished,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path)


TRAIN_SCORE = "train/episode_score"


def train(args: argparse.Namespace, key: RunKey) -> bool:
    """Train (or resume) one run to its budget, recording its training episodes; False if a
    signal stopped it (it checkpointed: the next call resumes it)."""
    path = key.result_path(args.results)
    if path.is_file() and json.loads(path.read_text()).get("finished"):
        return True
    config = build_config(args, key)
    runner = Runner(config, key.work_dir(args.work), progress=False)
    try:
        step = runner.resume() if runner.checkpoints.latest() else 0
        record = EpisodeRecord(path, config, step)
        runner.attach_sink(record)
        print(f"{key.tag}/{key.algo}/{key.game}/s{key.seed}: from step {step}", flush=True)
        if runner.train() != "finished":
            return False
        record.save(runner.step, finished=True)
    finally:
        runner.close()
    return True


RANDOM_EPISODES = 100
"""Episodes of the uniform-random policy behind each game's random score."""

RANDOM_SEED = 2**20
"""Env seed of the random-policy episodes (apart from every training seed)."""


def random_score(args: argparse.Namespace, game: str) -> float:
    """Mean score of :data:`RANDOM_EPISODES` uniform-random episodes in the preset's env.

    The floor a learning agent must leave behind (issue 12: "no game whose dense agent is still
    near its random score"). Cached in ``<results>/<tag>/random/<game>.json``.
    """
    path = args.results / (args.tag or args.preset) / "random" / f"{game}.json"
    if path.is_file():
        return float(json.loads(path.read_text())["mean"])
    config = apply_overrides(TrainConfig(), load_preset(args.preset))
    env = make_env(game, config.env, RANDOM_SEED)
    env.reset()
    rng = np.random.default_rng(RANDOM_SEED)
    scores: list[float] = []
    while len(scores) < RANDOM_EPISODES:
        result = env.step(rng.integers(env.num_actions, size=env.num_envs))
        scores += [e.score for e in result.finished]
    env.backend.close()
    scores = scores[:RANDOM_EPISODES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"episodes": len(scores), "mean": float(np.mean(scores))}))
    return float(np.mean(scores))


def moving_average_at(episodes: np.ndarray, step: int) -> float:
    """Mean score of the last :data:`WINDOW` episodes ended by ``step`` (NaN if none).

    ``episodes``: (n, 2) array of ``(step, score)`` rows in step order.
    """
    done = episodes[episodes[:, 0] <= step, 1] if len(episodes) else episodes
    return float(done[-WINDOW:].mean()) if len(done) else float("nan")


def load_runs(results: Path, tag: str, algo: str, game: str) -> list[dict[str, Any]]:
    folder = results / tag / algo / game
    return [json.loads(p.read_text()) for p in sorted(folder.glob("s*.json"))]


def summary_row(runs: list[dict[str, Any]], step: int) -> dict[str, float]:
    """IQM over seeds of the per-seed moving average at ``step`` (runs that reached it)."""
    values = [
        moving_average_at(np.asarray(r["episodes"], dtype=np.float64).reshape(-1, 2), step)
        for r in runs
        if r["step"] >= step
    ]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return {"seeds": 0, "iqm": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "seeds": len(values),
        "iqm": iqm(np.asarray(values)[:, None]),
        "min": min(values),
        "max": max(values),
    }


def learned_fraction(score: float, random: float, published: float) -> float:
    """How far ``score`` has come from the random policy's to the published 1M value:
    0 = random, 1 = published (``(score - random) / (published - random)``)."""
    return (score - random) / (published - random)


def steps_per_second(runs: list[dict[str, Any]]) -> float:
    seconds = sum(r["seconds"] for r in runs)
    return sum(r["step"] for r in runs) / seconds if seconds else float("nan")


def report(args: argparse.Namespace, tag: str, algos: list[str], games: list[str]) -> str:
    """The markdown table: our figure at each checkpoint beside Young & Tian's and the random
    policy's."""
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    head = ["algo", "game", "random", *[f"{c / 1e6:g}M" for c in checkpoints], "published 1M"]
    head += ["ratio 1M", "reaches", f"learned at {args.study_budget / 1e6:g}M", "steps/s"]
    lines = [head, ["---"] * len(head)]
    for algo in algos:
        for game in games:
            runs = load_runs(args.results, tag, algo, game)
            if runs:
                lines.append([algo, game, *report_cells(args, game, runs, checkpoints)])
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def report_cells(
    args: argparse.Namespace, game: str, runs: list[dict[str, Any]], checkpoints: list[int]
) -> list[str]:
    """One game's cells of :func:`report`, from ``random`` to ``steps/s``."""
    cells = [
        f"{r['iqm']:.1f} [{r['min']:.1f}, {r['max']:.1f}] (n={r['seeds']})" if r["seeds"] else "-"
        for r in (summary_row(runs, c) for c in checkpoints)
    ]
    published = PUBLISHED_DQN.get(game, {}).get(1_000_000, float("nan"))
    ratio = summary_row(runs, 1_000_000)["iqm"] / published
    verdict = "-" if not np.isfinite(ratio) else ("yes" if ratio >= args.pass_fraction else "no")
    if game not in MUST_REACH and verdict != "-":
        verdict += " (reported)"
    floor = random_score(args, game)
    learned = learned_fraction(summary_row(runs, args.study_budget)["iqm"], floor, published)
    return [
        f"{floor:.2f}",
        *cells,
        f"{published:g}",
        f"{ratio:.2f}",
        verdict,
        f"{learned:.2f}",
        f"{steps_per_second(runs):,.0f}",
    ]


def plot(args: argparse.Namespace, tag: str, algos: list[str], games: list[str]) -> None:
    """Per game: each seed's moving average, their IQM, and the published points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(games), figsize=(4 * len(games), 3.2), squeeze=False)
    grid = np.linspace(0, args.steps, 81)[1:]
    for ax, game in zip(axes[0], games, strict=True):
        for algo, colour in zip(algos, ("tab:blue", "tab:orange", "tab:green"), strict=False):
            runs = load_runs(args.results, tag, algo, game)
            for run in runs:
                episodes = np.asarray(run["episodes"], dtype=np.float64).reshape(-1, 2)
                curve = [moving_average_at(episodes, s) for s in grid if s <= run["step"]]
                ax.plot(grid[: len(curve)], curve, color=colour, alpha=0.3, lw=0.8)
            iqm_curve = [summary_row(runs, int(s))["iqm"] for s in grid]
            ax.plot(grid, iqm_curve, color=colour, lw=2, label=f"{algo} (IQM, {len(runs)} seeds)")
        published = PUBLISHED_DQN.get(game, {})
        steps = [s for s in published if s <= args.steps]
        ax.scatter(
            steps,
            [published[s] for s in steps],
            color="black",
            marker="*",
            s=90,
            zorder=5,
            label="Young & Tian DQN",
        )
        ax.set_xlim(0, args.steps)
        ax.set_title(game)
        ax.set_xlabel("agent steps (= frames)")
        ax.set_ylabel("training return (100-episode average)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = args.tag or args.preset
    games = [g.strip() for g in args.games.split(",") if g.strip()]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.report:
        # Seed by seed over all games, so an interrupted benchmark has every game at n seeds.
        keys = [RunKey(tag, a, g, s) for s in seeds for a in algos for g in games]
        for key in keys:
            if not train(args, key):
                print("stopped by a signal: run the same command again to resume", flush=True)
                return 143
    print(report(args, tag, algos, games))
    if args.plot:
        plot(args, tag, algos, games)
    return 0


if __name__ == "__main__":
    sys.exit(main())
