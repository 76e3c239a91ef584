"""Interleaved A/B: today's code path (a git ref) against this checkout, in each precision mode.

``--ab REF --modes fp32,bf16`` checks ``REF`` out into a temporary git worktree and, per repeat,
runs one single-run benchmark (``--json --repeats 1``, the other options as given) of the
baseline and one of this checkout per mode (``agent.precision=MODE`` added to ``--overrides``),
each in a fresh process, alternating the order from repeat to repeat (A B1 B2, B2 B1 A, ...) so a
shared machine's drift hits every side alike. Every side builds, warms up and times the same
config; the baseline runs with the ref's defaults (before ``agent.precision`` existed it is
fp32). Reported: per side the median (min, max) of ``loop_steps_per_s`` and ``updates_per_s``
over the repeats, and each mode's ratio of medians to the baseline's.

A fresh process per run is the point: process-wide settings (glibc malloc tuning, torch's thread
pool) are then exactly what each side's own code sets up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
"""This checkout's repository root."""

FIGURES = ("loop_steps_per_s", "updates_per_s")
"""The figures compared side by side."""

BASELINE = "baseline"
"""The side name of the ref's code path."""


def side_command(args: argparse.Namespace, mode: str | None) -> list[str]:
    """The benchmark command line of one side (``mode`` None: the baseline, as the ref has it)."""
    overrides = args.overrides if mode is None else f"{args.overrides} agent.precision={mode}"
    command = [sys.executable, "-m", "benchmarks.throughput", "--json", "--repeats", "1"]
    command += ["--game", args.game, "--algo", args.algo, "--device", args.device]
    command += ["--num-envs", str(args.num_envs), "--threads", str(args.threads)]
    command += ["--masked", "0", "--seed", str(args.seed), "--overrides", overrides.strip()]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    if args.quick:
        command.append("--quick")
    return command


def run_side(command: list[str], root: Path) -> dict[str, Any]:
    """Run one side's benchmark with ``root``'s code (cwd and first on the path); its JSON."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        fail(f"benchmark in {root} failed ({done.returncode}): {tail[0]}")
    return json.loads(done.stdout)


def worktree(ref: str, into: Path) -> Path:
    """A detached worktree of ``ref`` at ``into``; SystemExit with one line if ``ref`` is bad."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), ref],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        fail(f"--ab {ref!r}: {done.stderr.strip().splitlines()[-1]}")
    return into


def fail(message: str) -> None:
    """One ``error:`` line on stderr and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_ab(args: argparse.Namespace) -> dict[str, Any]:
    """The interleaved A/B of ``args.ab`` against this checkout in ``args.modes``."""
    sides = [BASELINE, *args.modes]
    values: dict[str, dict[str, list[float]]] = {s: {f: [] for f in FIGURES} for s in sides}
    with tempfile.TemporaryDirectory(prefix="throughput-ab-") as scratch:
        base_root = worktree(args.ab, Path(scratch) / "baseline")
        try:
            for repeat in range(args.repeats):
                order = sides if repeat % 2 == 0 else sides[::-1]
                for side in order:
                    mode = None if side == BASELINE else side
                    root = base_root if side == BASELINE else ROOT
                    result = run_side(side_command(args, mode), root)
                    for figure in FIGURES:
                        values[side][figure].append(result[figure])
                    print(
                        f"repeat {repeat + 1} {side}: {result['loop_steps_per_s']:.1f} "
                        f"steps/s, {result['updates_per_s']:.1f} updates/s",
                        file=sys.stderr,
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_root)],
                capture_output=True,
            )
    return ab_result(args, values, f"{result.get('cpu_model')} ({result.get('cpu_count')} CPUs)")


def ab_result(
    args: argparse.Namespace, values: dict[str, dict[str, list[float]]], machine: Any
) -> dict[str, Any]:
    """Medians per side and ratios to the baseline, JSON-ready."""
    medians = {s: {f: statistics.median(v) for f, v in fig.items()} for s, fig in values.items()}
    base = medians[BASELINE]
    return {
        "ab": args.ab,
        "game": args.game,
        "overrides": args.overrides,
        "repeats": args.repeats,
        "machine": machine,
        "sides": {
            side: {
                **{f"{f}_median": medians[side][f] for f in FIGURES},
                **{f"{f}_all": values[side][f] for f in FIGURES},
                **{f"{f}_ratio": medians[side][f] / base[f] for f in FIGURES},
            }
            for side in values
        },
    }


def format_ab(result: dict[str, Any]) -> str:
    """The A/B table: per side the medians (min-max) and the ratios to the baseline."""
    lines = [
        f"A/B vs {result['ab']} ({result['game']}; {result['overrides'] or 'no overrides'}), "
        f"medians of {result['repeats']} interleaved repeats, one process each",
        f"{'side':>10} {'loop steps/s':>22} {'ratio':>6} {'updates/s':>22} {'ratio':>6}",
    ]
    for side, row in result["sides"].items():
        cells = []
        for figure in FIGURES:
            runs = row[f"{figure}_all"]
            cells.append(
                f"{row[f'{figure}_median']:>8.1f} ({min(runs):.1f}-{max(runs):.1f})"
                f" {row[f'{figure}_ratio']:>6.2f}"
            )
        lines.append(f"{side:>10} {cells[0]:>29} {cells[1]:>29}")
    if result.get("machine"):
        lines.append(f"machine: {result['machine']}")
    return "\n".join(lines)
