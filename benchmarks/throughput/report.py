"""The human-readable reports: the setup as ``key  value`` lines, then an aligned table.

Both read only the JSON-ready result (what ``--json`` prints), so a stored result can be formatted
again later.
"""

from __future__ import annotations

from typing import Any

from benchmarks.throughput.timing import NOISY

Row = tuple[str, ...]
"""One table row: a cell per column, already formatted."""


# ------------------------------------------------------------------------------------ shared


def versions_text(versions: dict[str, str]) -> str:
    """The setup table's ``versions`` line."""
    return (
        f"python {versions['python']}, torch {versions['torch']}, "
        f"ale-py {versions['ale_py']}, numpy {versions['numpy']}"
    )


def aligned(setup: list[tuple[str, str]]) -> list[str]:
    """``key  value`` lines with the keys padded to one width."""
    width = max(len(key) for key, _ in setup)
    return [f"{key:<{width}}  {value}" for key, value in setup]


def setup_lines(result: dict[str, Any], game: str, budget: str, each: str = "") -> list[str]:
    """The setup of either report; ``each`` (`` per member``) follows what is per member."""
    eps = result["epsilon"]
    eps_text = (
        f"{eps:g}"
        if eps == result["epsilon_at_end"]
        else f"{eps:g} -> {result['epsilon_at_end']:g}"
    )
    setup = [
        ("game / algo", f"{game} / {result['algo']}"),
        ("device", result["device"] + (f" ({result['gpu']})" if result["gpu"] else "")),
        ("precision", result["precision"]),
        ("cpu", f"{result['cpu_model']} ({result['cpu_count']} logical CPUs)"),
        ("threads", f"torch {result['threads']}, emulator {result['env_threads']}{each}"),
        ("num_envs", f"{result['num_envs']}{each}"),
        (
            "loop",
            f"epsilon {eps_text}, 1 update of {result['batch_size']} per "
            f"{result['train_freq']} agent steps{each}, replay {result['replay_fill']:,} / "
            f"{result['replay_capacity']:,}{each}",
        ),
        ("budget", budget),
        ("versions", versions_text(result["versions"])),
    ]
    return aligned(setup)


def table_lines(rows: list[Row], left: set[int]) -> list[str]:
    """``rows`` (the header first) in columns two spaces apart: the columns in ``left``
    left-aligned, the others right-aligned, trailing blanks stripped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def noisy_lines(names: list[str]) -> list[str]:
    """The closing warning about noisy figures (nothing when there are none)."""
    if not names:
        return []
    return [
        "",
        f"noisy: {', '.join(names)} (max/min > {NOISY:g}); "
        "rerun on a quiet machine before quoting these",
    ]


# ------------------------------------------------------------------------------- single run


def figure_row(result: dict[str, Any], key: str, unit: str, digits: int = 1) -> Row:
    """``key``'s median, min and max (blank for derived figures, which have no repeats)."""

    def text(x: float) -> str:
        return f"{x:,.{digits}f}"

    values = result["values"]
    if key in values:
        low, high = text(min(values[key])), text(max(values[key]))
    else:
        low = high = ""
    return (key, text(result[key]), low, high, unit)


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report: the setup, then an aligned table of the figures."""
    budget = (
        f"{result['repeats']} x ({result['loop_steps_per_run']:,} loop steps, "
        f"{result['updates_per_run']:,} updates), {result['wall_s']:.0f} s in all"
    )
    lines = setup_lines(result, result["game"], budget)
    batch_size, num_envs = result["batch_size"], result["num_envs"]
    gb_per_million = result["replay_gb_per_million"]
    figures = [
        ("loop_steps_per_s", "agent steps/s"),
        ("env_steps_per_s", "agent steps/s"),
        ("updates_per_s", "updates/s"),
        ("replay_sample_ms", f"ms per sample({batch_size})", 3),
        ("act_ms", f"ms per act({num_envs} obs)", 3),
        ("limit_steps_per_s", "agent steps/s: env + updates only"),
        ("ratio_to_limit", "loop / limit", 3),
        ("accounted_steps_per_s", "agent steps/s: + acting and sampling"),
        ("ratio_to_accounted", "loop / accounted", 3),
        ("replay_bytes_per_transition", f"bytes ({gb_per_million:.2f} GB per 1M)"),
    ]
    if "masked_loop_steps_per_s" in result:
        figures += [
            (
                "masked_loop_steps_per_s",
                f"agent steps/s, static {result['masked_sparsity']:.0%} mask",
            ),
            ("masking_overhead", "1 - masked/dense loop (median of paired repeats)", 3),
        ]
    header = ("figure", "median", "min", "max", "unit")
    rows = [header, *(figure_row(result, *figure) for figure in figures)]
    lines += ["", *table_lines(rows, left={0, 4})]
    return "\n".join(lines + noisy_lines(result["noisy"]))


# ------------------------------------------------------------------------------- population


def population_row(row: dict[str, Any]) -> Row:
    """One (K, batching) of ``result["population"]`` as table cells."""
    speedup = row["speedup_vs_k1"]
    return (
        str(row["members"]),
        row["batching"],
        row["replay"],
        f"{row['per_member_steps_per_s']:,.1f}",
        f"{min(row['values']):,.1f}",
        f"{max(row['values']):,.1f}",
        f"{row['aggregate_steps_per_s']:,.1f}",
        "" if speedup is None else f"{speedup:.2f}",
        f"{row['study_device_hours']:,.0f}",
    )


def format_population_report(result: dict[str, Any]) -> str:
    """The human-readable population report: the setup, then one row per (K, batching)."""
    study, unit = result["study"], result["device_hours_unit"]
    budget = (
        f"{result['repeats']} x {result['steps_per_member_per_run']:,} agent steps per member "
        f"per population (interleaved), {result['wall_s']:.0f} s in all"
    )
    game = f"{result['game']} ({result['suite']})"
    lines = setup_lines(result, game, budget, each=" per member")
    header = (
        "K",
        "batching",
        "replay",
        "per-member",
        "min",
        "max",
        "aggregate",
        "speedup_vs_k1",
        f"{study['name']} {unit}",
    )
    rows = [header, *(population_row(row) for row in result["population"])]
    lines += ["", *table_lines(rows, left={1, 2})]  # batching and replay are words
    lines += [
        "",
        "per-member, min, max: agent steps/s of one member (median, min and max of the repeats);",
        "aggregate = K x per-member; speedup_vs_k1 = aggregate / aggregate at K=1, same batching",
        f"{unit}: the {study['name']} study's {study['agent_steps']:,} agent steps "
        f"({study['training_runs']:,} training runs) / aggregate / 3600,",
        "  assuming every run trains in a full population of K at this rate",
    ]
    noisy = [f"K={r['members']} {r['batching']}" for r in result["population"] if r["noisy"]]
    return "\n".join(lines + noisy_lines(noisy))
