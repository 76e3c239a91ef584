"""The command line: the options, their checks, and :func:`main`, which runs and prints one run.

A bad option exits with argparse's usage line and status 2; a config the library refuses
(``ConfigError``: an unknown game, algorithm or study) with one ``error:`` line and status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.throughput.ab import format_ab, run_ab
from benchmarks.throughput.build import DEFAULT_BUDGET, QUICK_BUDGET
from benchmarks.throughput.population import run_population_benchmark
from benchmarks.throughput.report import format_population_report, format_report
from benchmarks.throughput.single_run import run_benchmark
from sparse_ticket.agents.population import BATCHING
from sparse_ticket.config import ALGOS, PRECISIONS, ConfigError

PROG = "throughput"
"""The name in usage lines (``python -m`` would otherwise show ``__main__.py``)."""


# ----------------------------------------------------------------------------------- options


def build_parser() -> argparse.ArgumentParser:
    """Every option, with its default and help."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Training-loop throughput against the env and update limits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--game",
        default="pong",
        help="game (snake_case): ALE, or MinAtar with env.suite=minatar in --overrides",
    )
    add("--algo", default="ddqn", choices=ALGOS)
    add("--device", default="cpu", help="cpu, cuda or cuda:N")
    add("--num-envs", type=int, default=4, help="parallel training envs")
    add(
        "--steps",
        type=int,
        default=None,
        help=f"agent steps per timed loop run (default {DEFAULT_BUDGET.loop_steps}, "
        f"--quick {QUICK_BUDGET.loop_steps}); the update block does as many updates as the loop",
    )
    add("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    add("--repeats", type=int, default=3, help="timed runs per block (median)")
    add(
        "--masked",
        type=float,
        default=0.8,
        help="also time the loop under a static encoder mask of this sparsity, interleaved with "
        "the dense loop in the same run (0 disables)",
    )
    add("--seed", type=int, default=0)
    add("--quick", action="store_true", help="a smaller budget (~15 s on 2 CPUs)")
    add("--overrides", default="", help='extra config overrides, e.g. "target_update=10000"')
    add("--json", action="store_true", help="print one JSON object only")
    add("--profile", action="store_true", help="cProfile one more loop run (top costs to stderr)")
    add(
        "--members",
        default="",
        help="population sizes K to measure instead of the single run, e.g. 1,2,4,8,16 "
        "(see 'Population figures' in the package docstring)",
    )
    add(
        "--batching",
        default="auto",
        help=f"population batching, one or more of {','.join(BATCHING)} (comma-separated; "
        "several are interleaved in one run); with --members only",
    )
    add(
        "--study",
        default="paper",
        help="study preset whose device-hours are reported at each population's rate",
    )
    add(
        "--ab",
        default="",
        metavar="REF",
        help="interleaved A/B instead: the single-run benchmark of git REF (today's code path) "
        "against this checkout in each of --modes, one process per run, --repeats rounds",
    )
    add(
        "--modes",
        default="fp32,bf16",
        help=f"with --ab: this checkout's agent.precision modes ({','.join(PRECISIONS)})",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``argv`` (default ``sys.argv[1:]``), checked; exits 2 on a bad one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.members = parse_members(args.members)
        args.batching = parse_batching(args.batching)
        args.modes = parse_modes(args.modes)
    except ValueError as error:
        parser.error(str(error))
    if args.ab and (args.members or args.profile):
        parser.error("--ab compares single runs: leave out --members and --profile")
    if args.members and args.profile:
        parser.error("--profile profiles the single-run loop: leave out --members")
    if not args.members and args.batching != ["auto"]:
        parser.error("--batching is for populations: give --members too")
    for name in ("num_envs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    return args


def parse_members(text: str) -> list[int]:
    """Population sizes ``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, each once; ``""`` -> ``[]``)."""
    if not text.strip():
        return []
    sizes = []
    for word in text.split(","):
        try:
            size = int(word)
        except ValueError:
            raise ValueError(f"--members: {word.strip()!r} is not an integer") from None
        if size < 1:
            raise ValueError(f"--members: sizes must be >= 1, got {size}")
        sizes.append(size)
    return sorted(set(sizes))


def parse_modes(text: str) -> list[str]:
    """Precision modes ``"fp32,bf16"`` -> ``["fp32", "bf16"]`` (in order, each once)."""
    return parse_choices(text, PRECISIONS, "--modes")


def parse_batching(text: str) -> list[str]:
    """Requested batchings ``"loop,vmap"`` -> ``["loop", "vmap"]`` (in order, each once)."""
    return parse_choices(text, BATCHING, "--batching")


def parse_choices(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """Comma-separated words of ``allowed``, in order, each once; ValueError naming ``option``."""
    words = [word.strip() for word in text.split(",")]
    for word in words:
        if word not in allowed:
            raise ValueError(f"{option}: {word!r} is not one of {', '.join(allowed)}")
    return list(dict.fromkeys(words))


# -------------------------------------------------------------------------------------- main


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr (C++ libraries included), so --json stays clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark ``argv`` asks for; print its report (or JSON) and return the status."""
    args = parse_args(argv)
    if args.ab:
        result = run_ab(args)
        print(json.dumps(result) if args.json else format_ab(result))
        return 0
    benchmark = run_population_benchmark if args.members else run_benchmark
    try:
        if args.json:
            with stdout_to_stderr():
                result = benchmark(args)
        else:
            result = benchmark(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    profile = result.pop("profile", None)
    if profile is not None:
        print(profile, file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    elif args.members:
        print(format_population_report(result))
    else:
        print(format_report(result))
    return 0
