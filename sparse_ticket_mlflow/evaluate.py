"""The ``evaluate`` entry point: from a study's MLflow runs to tables and figures.

A *study* is an experiment name, a parent run id (its nested runs), or a ``search_runs``
filter. Every training run (``train-dense``, ``transfer``) is put in a *condition* by its
lineage tags: algo x source x target x mask method x sparsity x weights x adapt x mask sparsity
(baselines and dense runs have their own conditions). ``sparsity`` is the final sparsity a run
ends at, ``mask_sparsity`` the realised sparsity of the mask it starts from (they differ for a
transfer that prunes on, ``adapt=gmp``; a run without the tag started at its final sparsity).

Every statistic below, with the paper that defines it, is listed in docs/protocol.md. The
per-seed score is one number everywhere: the mean return over the episodes of a run's final
evaluation (``eval/score_mean`` at its last step; ``final_eval_mean`` of a ticket). Per
condition, over seeds:

* IQM of the final evaluation score with a 95% stratified-bootstrap CI (rliable);
* the IQM sample-efficiency curve with CIs, on a common step grid (truncation is reported);
* IQM of the final *training* return (``train/episode_score``) with a CI, and its IQM curve:
  per run, the mean return of the training episodes that ended in each window of the run's
  logging grid (see :func:`sparse_ticket_mlflow.study_data.windowed_episode_curve`);
* the area ratio against the dense-from-scratch runs of the same target and algo, with a
  bootstrap CI and a significance mark, and the probability of improvement over them. The area
  ratio is that of the prior study's ``generate_area_ratio``: the areas under the per-step IQM
  curves over runs (``aggregate="mean"``: the mean curves), after adding the target game's fixed
  offset (``game_offset``: 21 for Pong, 0 for games with non-negative scores) to every return;
  the ``area_aggregate`` and ``area_offset`` columns say which were used;
* with ``--baselines``, the same comparison of every transfer against each named sparse
  baseline (``gmp``, ``set``, ``rigl``, ``random``: the ``baseline-<name>`` runs of the same
  algo and target game at the same final sparsity, compared rounded to 2 decimals), in
  ``area_ratio_vs_<name>*`` / ``significant_vs_<name>`` / ``p_improvement_vs_<name>`` columns,
  with the baseline's sparsity in ``sparsity_vs_<name>``.

Outputs (written to ``--output-dir`` and logged as artifacts of the evaluate run):
``conditions.csv`` / ``conditions.md`` and figures (PNG and PDF): transfer grids of area ratios
(``grid_*`` vs dense, ``grid_vs-<name>_*`` vs each named sparse baseline), learning curves per
target game of the evaluation score (``curves_<target>``) and of the training return
(``train_curves_<target>``), winning-ticket curves (``tickets_<algo>_<game>``: tickets and the
random control against the dense level, as Frankle & Carbin 2019), plasticity over training;
``study.json`` records the aggregate and the offsets.

The parts, in the order the data flows: :mod:`sparse_ticket_mlflow.conditions` (what a run trained),
:mod:`sparse_ticket_mlflow.study_data` (the runs and curves, read from the tracking store),
:mod:`sparse_ticket_mlflow.summaries` (the statistics per condition),
:mod:`sparse_ticket_mlflow.study_outputs` (tables and figures); this module runs them in order and
logs the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from sparse_ticket.stats.area_ratios import game_offset
from sparse_ticket_mlflow.conditions import DEFAULT_BASELINES, parse_baselines
from sparse_ticket_mlflow.contracts import EVALUATE, EVALUATION, Tag
from sparse_ticket_mlflow.study_data import (
    EVAL_METRIC,
    PLASTICITY_METRIC,
    metric_curves,
    scope_runs,
    study_runs,
    ticket_levels,
    training_curves,
)
from sparse_ticket_mlflow.study_outputs import (
    dense_final_scores,
    ticket_figures,
    write_figures,
    write_tables,
    write_ticket_figures,
)
from sparse_ticket_mlflow.summaries import DEFAULT_AGGREGATE, check_aggregate, summarise

ENTRY_POINT = EVALUATE


def evaluate_study(
    study: str,
    folder: Path,
    reps: int = 10_000,
    seed: int = 0,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    aggregate: str = DEFAULT_AGGREGATE,
) -> list[Path]:
    """Gather, summarise, write tables (and figures when available); returns the files.

    ``aggregate``: ``"iqm"`` (default) or ``"mean"``, the curve over runs whose area the area
    ratios compare (see ``sparse_ticket.stats.area_ratios.area_ratio``).
    """
    name = check_aggregate(aggregate)
    folder.mkdir(parents=True, exist_ok=True)
    everything = scope_runs(study)
    runs = study_runs(study, everything)
    evaluation = metric_curves(runs, EVAL_METRIC)
    train = training_curves(runs, evaluation)
    summaries = summarise(evaluation, reps, seed, train, baselines, name)
    files = write_tables(summaries, folder)
    plasticity = metric_curves(runs, PLASTICITY_METRIC)
    files += write_figures(summaries, plasticity, folder, reps, seed, baselines)
    tickets = ticket_figures(ticket_levels(everything), dense_final_scores(evaluation), reps, seed)
    files += write_ticket_figures(tickets, folder)
    record = {"study": study, "runs": len(runs), "conditions": len(summaries)}
    record["baselines"] = list(baselines)
    record["area_aggregate"] = name
    targets = sorted({s.condition.target for s in summaries})
    record["area_offset"] = {game: game_offset(game) for game in targets}
    record["per_seed_score"] = f"{EVAL_METRIC} of the final evaluation (tickets: final_eval_mean)"
    (folder / "study.json").write_text(json.dumps(record, indent=2))
    files.append(folder / "study.json")
    return files


def evaluate(
    study: str,
    output_dir: str,
    reps: str,
    seed: str,
    baselines: str = "dense",
    aggregate: str = DEFAULT_AGGREGATE,
) -> int:
    """The entry point: evaluate ``study`` inside an MLflow run and log every output file."""
    from sparse_ticket_mlflow.errors import parse_int
    from sparse_ticket_mlflow.tracking import log_provenance

    repetitions = parse_int(reps, "reps", minimum=100)
    rng_seed = parse_int(seed, "seed", minimum=0)
    names = parse_baselines(baselines)
    curve = check_aggregate(aggregate)
    runs = study_runs(study)  # validate before a run opens
    with mlflow.start_run() as run:
        folder = Path(output_dir or f"evaluation/{run.info.run_id}").resolve()
        params = {"study": study, "reps": repetitions, "baselines": ",".join(names)}
        params["aggregate"] = curve
        log_provenance(params, {Tag.ENTRY_POINT: ENTRY_POINT})
        files = evaluate_study(study, folder, repetitions, rng_seed, names, curve)
        for path in files:
            mlflow.log_artifact(str(path), EVALUATION)
        print(f"evaluate: {len(runs)} runs; tables and figures in {folder}")
    return 0
