"""bf16 against fp32: do ``agent.precision=bf16`` runs learn as the fp32 runs of the same seeds do?

Reads the episode records :mod:`benchmarks.learning` stores (``<results>/<tag>/<algo>/<game>/
s<seed>.json``) for two tags, the fp32 runs (default ``minatar-500k``) and the bf16 runs (default
``minatar-bf16``), made with the same budget (``--steps``: the epsilon schedule is a fraction of
it, so runs of another budget are not comparable) and the same seeds::

    python benchmarks/learning.py --games breakout,space_invaders --seeds 0,1 --steps 500000 \
        --tag minatar-500k
    python benchmarks/learning.py --games breakout,space_invaders --seeds 0,1 --steps 500000 \
        --set agent.precision=bf16 --tag minatar-bf16

and compares per game, over the seeds each holds up to ``--steps``:

- the training return (the mean of the last 100 episodes ended by a step, as Young & Tian plot)
  at each of ``--checkpoints``, per seed and as the mean over seeds;
- the area under that curve from 0 to ``--steps`` (the mean over an 80-point grid), per seed.

The verdict, per game: bf16 *agrees within seed noise* when the mean over seeds of the bf16 area
lies within the fp32 seeds' range widened by the seed spread (``[min - spread, max + spread]``,
``spread`` the larger of the two sides' ``max - min`` over seeds): with two to four seeds per
side nothing finer is honest. A bf16 run is
never the fp32 run of its seed (bf16 rounding diverges the trajectory after the first update), so
the comparison is distributional, seed sets against seed sets. The table and the plot::

    python benchmarks/precision_curves.py --games breakout,space_invaders --steps 500000 \\
        --plot docs/validation/precision_minatar.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learning import ROOT, load_runs, moving_average_at

GRID_POINTS = 80
VERDICTS = {None: "-", True: "yes", False: "no"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default="breakout,space_invaders")
    parser.add_argument("--algo", default="ddqn")
    parser.add_argument("--fp32-tag", default="minatar-500k")
    parser.add_argument("--bf16-tag", default="minatar-bf16")
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--checkpoints", default="100000,250000,500000")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "learning")
    parser.add_argument("--plot", type=Path, default=None)
    return parser.parse_args(argv)


def curve(run: dict, grid: np.ndarray) -> np.ndarray:
    """The run's training return at each grid step ``(len(grid),)``."""
    episodes = np.asarray(run["episodes"], dtype=np.float64).reshape(-1, 2)
    return np.array([moving_average_at(episodes, int(s)) for s in grid])


def seed_runs(args: argparse.Namespace, tag: str, game: str) -> dict[int, dict]:
    """The runs of ``tag`` that reached ``--steps``, by seed."""
    runs = load_runs(args.results, tag, args.algo, game)
    return {int(r["config"]["seed"]): r for r in runs if r["step"] >= args.steps}


def compare_game(args: argparse.Namespace, game: str) -> dict:
    """Per side: seeds, per-seed values at the checkpoints and areas; and the verdict."""
    grid = np.linspace(0, args.steps, GRID_POINTS + 1)[1:]
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    sides = {}
    for side, tag in (("fp32", args.fp32_tag), ("bf16", args.bf16_tag)):
        runs = seed_runs(args, tag, game)
        curves = {seed: curve(run, grid) for seed, run in sorted(runs.items())}
        at = {c: [curve(r, np.array([c]))[0] for r in runs.values()] for c in checkpoints}
        sides[side] = {
            "seeds": sorted(runs),
            "at": at,
            "areas": {seed: float(np.nanmean(c)) for seed, c in curves.items()},
            "curves": curves,
        }
    fp32 = np.array(list(sides["fp32"]["areas"].values()))
    bf16 = np.array(list(sides["bf16"]["areas"].values()))
    agrees = None
    if len(fp32) and len(bf16):
        spread = max(np.ptp(fp32), np.ptp(bf16))
        agrees = bool(fp32.min() - spread <= bf16.mean() <= fp32.max() + spread)
    return {"game": game, "grid": grid, "sides": sides, "agrees": agrees}


def table(args: argparse.Namespace, results: list[dict]) -> str:
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    head = ["game", "precision", "seeds", *[f"{c / 1e3:g}k" for c in checkpoints]]
    head += [f"area 0-{args.steps / 1e3:g}k (per seed)", "agrees"]
    lines = [head, ["---"] * len(head)]
    for result in results:
        for side in ("fp32", "bf16"):
            data = result["sides"][side]
            cells = [
                f"{np.mean(v):.1f} [{min(v):.1f}, {max(v):.1f}]" if v else "-"
                for v in (data["at"][c] for c in checkpoints)
            ]
            areas = ", ".join(f"{a:.1f}" for a in data["areas"].values()) or "-"
            verdict = "" if side == "fp32" else VERDICTS[result["agrees"]]
            seeds = ",".join(map(str, data["seeds"])) or "-"
            lines.append([result["game"], side, seeds, *cells, areas, verdict])
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def plot(args: argparse.Namespace, results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        for side, colour in (("fp32", "tab:blue"), ("bf16", "tab:red")):
            curves = result["sides"][side]["curves"]
            for values in curves.values():
                ax.plot(result["grid"], values, color=colour, alpha=0.35, lw=0.8)
            if curves:
                mean = np.nanmean(np.stack(list(curves.values())), axis=0)
                ax.plot(result["grid"], mean, color=colour, lw=2, label=f"{side} ({len(curves)})")
        ax.set_title(result["game"])
        ax.set_xlabel("agent steps (= frames)")
        ax.set_ylabel("training return (100-episode avg)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = [compare_game(args, game) for game in args.games.split(",")]
    print(table(args, results))
    if args.plot:
        plot(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
