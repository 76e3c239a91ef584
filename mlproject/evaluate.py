"""The ``evaluate`` entry point: from a study's MLflow runs to tables and figures.

A *study* is an experiment name, a parent run id (its nested runs), or a ``search_runs``
filter. Every training run (``train-dense``, ``transfer``) is put in a *condition* by its
lineage tags: algo x source x target x mask method x sparsity x weights x adapt (baselines and
dense runs have their own conditions). Per condition, over seeds:

* IQM of the final evaluation score with a 95% stratified-bootstrap CI (rliable);
* the IQM sample-efficiency curve with CIs, on a common step grid (truncation is reported);
* the area ratio against the dense-from-scratch runs of the same target and algo, with a
  bootstrap CI and a significance mark, and the probability of improvement over them.

Outputs (written to ``--output-dir`` and logged as artifacts of the evaluate run):
``conditions.csv`` / ``conditions.md`` and figures (PNG and PDF): transfer grids of area ratios,
learning curves per target game, winning-ticket curves, plasticity over training.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from mlproject import figures
from mlproject.errors import InputError
from sparse_ticket.metrics.aggregate import (
    align_curves,
    area_ratio_ci,
    iqm_curve_with_ci,
    iqm_with_ci,
    probability_of_improvement,
)

ENTRY_POINT = "evaluate"
TAG = "sparse_ticket."
TRAINING_ENTRY_POINTS = ("train-dense", "transfer")
EVAL_METRIC = "eval/score_mean"
PLASTICITY_METRIC = "plasticity/q/dormant/overall/tau_0.025"
FIELDS = ("algo", "source", "target", "method", "sparsity", "weights", "adapt", "condition")


@dataclass(frozen=True)
class Condition:
    """What a run trained: the grid coordinates of the study."""

    algo: str
    source: str
    target: str
    method: str
    sparsity: str
    weights: str
    adapt: str
    condition: str

    @property
    def label(self) -> str:
        if self.condition in ("dense", "baseline-dense"):
            return f"{self.algo} dense from scratch"
        if self.condition.startswith("baseline-"):
            return f"{self.algo} {self.condition[9:]} on target, s={self.sparsity}"
        return (
            f"{self.algo} {self.method} {self.source}->{self.target} s={self.sparsity} "
            f"{self.weights}/{self.adapt}"
        )

    @property
    def is_scratch(self) -> bool:
        return self.condition in ("dense", "baseline-dense")


@dataclass
class Curves:
    """One condition's runs: (steps, values) per run."""

    run_ids: list[str] = field(default_factory=list)
    steps: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


def condition_of(run: Any) -> Condition:
    """The condition of a training run, from its tags and params."""
    tags, params = run.data.tags, run.data.params
    game = params.get("game", "")
    if tags.get(f"{TAG}entry_point") == "train-dense":
        algo = params.get("agent.algo", "")
        return Condition(algo, game, game, "", "0", "", "", "dense")
    return Condition(
        algo=tags.get(f"{TAG}algo", params.get("agent.algo", "")),
        source=tags.get(f"{TAG}source_game", "") or "-",
        target=tags.get(f"{TAG}target_game", game),
        method=tags.get(f"{TAG}mask_method", "") or "-",
        sparsity=tags.get(f"{TAG}sparsity", "0"),
        weights=tags.get(f"{TAG}weights", ""),
        adapt=tags.get(f"{TAG}adapt", ""),
        condition=tags.get(f"{TAG}condition", "transfer"),
    )


# ------------------------------------------------------------------------------ gathering
def scope_runs(study: str) -> list[Any]:
    """Every run of a study: an experiment's runs, a parent's nested runs, or a filter's."""
    client = mlflow.MlflowClient()
    text = study.strip()
    if not text:
        raise InputError("study must be an experiment name, a parent run id or a filter")
    experiment = client.get_experiment_by_name(text)
    if experiment is not None:
        return mlflow.search_runs([experiment.experiment_id], output_format="list")
    if _is_run_id(client, text):
        return mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.mlflow.parentRunId = '{text}'",
            output_format="list",
        )
    try:
        return mlflow.search_runs(
            search_all_experiments=True, filter_string=text, output_format="list"
        )
    except mlflow.exceptions.MlflowException as error:
        first = str(error).splitlines()[0]
        raise InputError(f"study {text!r} is no experiment, run id or filter: {first}") from None


def finished(runs: list[Any], *entry_points: str) -> list[Any]:
    """The FINISHED runs of the given entry points."""
    return [
        r
        for r in runs
        if r.data.tags.get(f"{TAG}entry_point") in entry_points and r.info.status == "FINISHED"
    ]


def study_runs(study: str, scope: list[Any] | None = None) -> list[Any]:
    """The finished training runs of a study (InputError if there are none)."""
    runs = finished(scope if scope is not None else scope_runs(study), *TRAINING_ENTRY_POINTS)
    if not runs:
        raise InputError(f"study {study.strip()!r} has no finished train-dense or transfer runs")
    return runs


def ticket_levels(runs: list[Any]) -> dict[tuple[str, str, str], dict[float, list[float]]]:
    """Winning-ticket data of the study's find-mask runs: per (algo, game, method), per
    sparsity level, the final evaluation IQM of the trained ticket of every seed."""
    out: dict[tuple[str, str, str], dict[float, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run in finished(runs, "find-mask"):
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="tickets.json"
            )
        except mlflow.exceptions.MlflowException:
            continue
        key = (
            run.data.params.get("agent.algo", ""),
            run.data.params.get("game", ""),
            run.data.tags.get(f"{TAG}method", ""),
        )
        for row in json.loads(Path(path).read_text()):
            if row.get("final_eval_iqm") is not None:
                out[key][round(row["sparsity_target"], 4)].append(row["final_eval_iqm"])
    return out


def write_ticket_figures(
    levels: dict[tuple[str, str, str], dict[float, list[float]]],
    folder: Path,
    reps: int,
    seed: int,
) -> list[Path]:
    """IQM vs sparsity per game: tickets of each method against the random control."""
    files: list[Path] = []
    for algo, game in sorted({(a, g) for a, g, _ in levels}):
        series = {}
        for (a, g, method), by_level in sorted(levels.items()):
            if (a, g) != (algo, game):
                continue
            xs = sorted(by_level)
            cis = [
                iqm_with_ci({"x": np.array(by_level[x])[:, None]}, reps, seed=seed)["x"] for x in xs
            ]
            series[method] = tuple(np.array(v) for v in (xs, *zip(*cis, strict=True)))
        title = f"winning tickets: {algo} on {game}"
        files += figures.winning_ticket_curves(series, folder / _slug("tickets", algo, game), title)
    return files


def _is_run_id(client: mlflow.MlflowClient, text: str) -> bool:
    if not text.isalnum():
        return False
    try:
        client.get_run(text)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def metric_curves(runs: Iterable[Any], key: str) -> dict[Condition, Curves]:
    """Per condition, the history of ``key`` of every run (the last value at each step)."""
    client = mlflow.MlflowClient()
    grouped: dict[Condition, Curves] = defaultdict(Curves)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, key)
        if not history:
            continue
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
        steps = np.array(sorted(by_step), dtype=np.float64)
        curves = grouped[condition_of(run)]
        curves.run_ids.append(run.info.run_id)
        curves.steps.append(steps)
        curves.values.append(np.array([by_step[s] for s in sorted(by_step)], dtype=np.float64))
    return dict(grouped)


# ------------------------------------------------------------------------------ statistics
@dataclass
class Summary:
    """One row of the conditions table."""

    condition: Condition
    seeds: int
    final: tuple[float, float, float]
    area_ratio: tuple[float, float, float, bool] | None = None
    improvement: tuple[float, float, float] | None = None
    note: str = ""
    curve: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    matrix: np.ndarray | None = None

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(self.condition, name) for name in FIELDS}
        row["seeds"] = self.seeds
        row["final_iqm"], row["final_iqm_low"], row["final_iqm_high"] = self.final
        if self.area_ratio is not None:
            point, low, high, significant = self.area_ratio
            row.update(area_ratio=point, area_ratio_low=low, area_ratio_high=high)
            row["significant"] = significant
        if self.improvement is not None:
            row["p_improvement"], row["p_improvement_low"], row["p_improvement_high"] = (
                self.improvement
            )
        row["note"] = self.note
        return row


def summarise(curves: dict[Condition, Curves], reps: int, seed: int) -> list[Summary]:
    """Final IQM, curve, and comparisons against the scratch runs of the same target."""
    summaries: dict[Condition, Summary] = {}
    for condition, runs in curves.items():
        grid, matrix, info = align_curves(runs.steps, runs.values)
        note = _truncation_note(info)
        final = iqm_with_ci({"x": matrix[:, -1:]}, reps=reps, seed=seed)["x"]
        curve = iqm_curve_with_ci({"x": matrix}, reps=reps, seed=seed)["x"]
        summaries[condition] = Summary(
            condition, len(runs.run_ids), final, note=note, curve=(grid, *curve), matrix=matrix
        )
    for condition, summary in summaries.items():
        scratch = _scratch_for(condition, summaries)
        if scratch is None or condition.is_scratch:
            continue
        _compare(summary, scratch, reps, seed)
    return list(summaries.values())


def _truncation_note(info: dict[str, Any]) -> str:
    if info.get("dropped_steps"):
        dropped, end = info["dropped_steps"], info.get("truncated_to")
        return f"curves truncated to step {end} ({dropped} grid steps dropped)"
    return ""


def _scratch_for(condition: Condition, summaries: dict[Condition, Summary]) -> Summary | None:
    """The dense-from-scratch runs of the same algo on the same target game."""
    for other, summary in summaries.items():
        if other.is_scratch and other.algo == condition.algo and other.target == condition.target:
            return summary
    return None


def _compare(summary: Summary, scratch: Summary, reps: int, seed: int) -> None:
    """Area ratio and probability of improvement against ``scratch`` on a shared grid."""
    grid_a, grid_b = summary.curve[0], scratch.curve[0]
    end = min(grid_a[-1], grid_b[-1])
    grid = np.union1d(grid_a[grid_a <= end], grid_b[grid_b <= end])
    if len(grid) < 2:
        summary.note = (summary.note + "; " if summary.note else "") + "too few steps for an area"
        return
    ours = np.stack([np.interp(grid, grid_a, row) for row in summary.matrix])
    theirs = np.stack([np.interp(grid, grid_b, row) for row in scratch.matrix])
    try:
        summary.area_ratio = area_ratio_ci(ours, theirs, grid, reps=reps, seed=seed)
    except ValueError as error:
        summary.note = (summary.note + "; " if summary.note else "") + str(error)
    summary.improvement = probability_of_improvement(
        summary.matrix[:, -1:], scratch.matrix[:, -1:], reps=min(reps, 2000), seed=seed
    )


# ------------------------------------------------------------------------------ tables
def write_tables(summaries: list[Summary], folder: Path) -> list[Path]:
    """``conditions.csv`` and ``conditions.md``, one row per condition."""
    rows = [s.row() for s in sorted(summaries, key=lambda s: tuple(map(str, s.row().values())))]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    csv_path, md_path = folder / "conditions.csv", folder / "conditions.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _slug(*parts: str) -> str:
    return "_".join(p.replace("/", "-").replace(" ", "") for p in parts if p)


def write_figures(
    summaries: list[Summary],
    plasticity: dict[Condition, Curves],
    folder: Path,
    reps: int,
    seed: int,
) -> list[Path]:
    """Transfer grids, learning curves per target game, and plasticity over training."""
    files: list[Path] = []
    grids: dict[tuple[str, ...], dict[tuple[str, str], Any]] = defaultdict(dict)
    for s in summaries:
        c = s.condition
        if c.condition == "transfer" and s.area_ratio is not None:
            grids[(c.algo, c.method, c.sparsity, c.weights, c.adapt)][(c.source, c.target)] = (
                s.area_ratio
            )
    for key, cells in sorted(grids.items()):
        games = sorted({g for pair in cells for g in pair})
        title = f"area ratio vs dense from scratch: {' '.join(key)}"
        files += figures.transfer_grid(cells, games, folder / _slug("grid", *key), title)
    for target in sorted({s.condition.target for s in summaries}):
        curves = {s.condition.label: s.curve for s in summaries if s.condition.target == target}
        files += figures.learning_curves(curves, folder / _slug("curves", target), target)
    panels: dict[str, dict[str, Any]] = defaultdict(dict)
    for condition, runs in plasticity.items():
        grid, matrix, _ = align_curves(runs.steps, runs.values)
        curve = iqm_curve_with_ci({"x": matrix}, reps=reps, seed=seed)["x"]
        panels[condition.target][condition.label] = (grid, *curve)
    if panels:
        files += figures.small_multiples(
            panels,
            folder / "plasticity",
            "dormant units (tau 0.025) over training",
            "dormant ratio",
        )
    return files


def evaluate_study(study: str, folder: Path, reps: int = 10_000, seed: int = 0) -> list[Path]:
    """Gather, summarise, write tables (and figures when available); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    everything = scope_runs(study)
    runs = study_runs(study, everything)
    summaries = summarise(metric_curves(runs, EVAL_METRIC), reps, seed)
    files = write_tables(summaries, folder)
    files += write_figures(summaries, metric_curves(runs, PLASTICITY_METRIC), folder, reps, seed)
    files += write_ticket_figures(ticket_levels(everything), folder, reps, seed)
    (folder / "study.json").write_text(
        json.dumps({"study": study, "runs": len(runs), "conditions": len(summaries)}, indent=2)
    )
    files.append(folder / "study.json")
    return files


def evaluate(study: str, output_dir: str, reps: str, seed: str) -> int:
    """The entry point: evaluate ``study`` inside an MLflow run and log every output file."""
    from mlproject.errors import parse_int
    from mlproject.tracking import log_provenance

    repetitions = parse_int(reps, "reps", minimum=100)
    rng_seed = parse_int(seed, "seed", minimum=0)
    runs = study_runs(study)  # validate before a run opens
    with mlflow.start_run() as run:
        folder = Path(output_dir or f"evaluation/{run.info.run_id}").resolve()
        log_provenance({"study": study, "reps": repetitions}, {f"{TAG}entry_point": ENTRY_POINT})
        files = evaluate_study(study, folder, repetitions, rng_seed)
        for path in files:
            mlflow.log_artifact(str(path), "evaluation")
        print(f"evaluate: {len(runs)} runs; tables and figures in {folder}")
    return 0
