"""evaluate on a small synthetic study logged to a temporary tracking store (exact values)."""

from __future__ import annotations

import csv

import mlflow
import pytest

from mlproject.cli import main
from mlproject.evaluate import evaluate_study
from tests.test_cli_errors import _assert_clean_failure

STEPS = (0, 100, 200)


def experiment_id(name: str) -> str:
    """Get or create an experiment without making it the process's active one."""
    found = mlflow.get_experiment_by_name(name)
    return found.experiment_id if found else mlflow.create_experiment(name)


def log_run(experiment: str, entry_point: str, curve, tags=None, game="breakout"):
    with mlflow.start_run(experiment_id=experiment_id(experiment)):
        mlflow.set_tags({"sparse_ticket.entry_point": entry_point, **(tags or {})})
        mlflow.log_params({"game": game, "agent.algo": "ddqn"})
        for step, value in zip(STEPS, curve, strict=True):
            mlflow.log_metric("eval/score_mean", value, step=step)


TRANSFER = {
    "sparse_ticket.condition": "transfer",
    "sparse_ticket.algo": "ddqn",
    "sparse_ticket.source_game": "pong",
    "sparse_ticket.target_game": "breakout",
    "sparse_ticket.mask_method": "imp",
    "sparse_ticket.sparsity": "0.8",
    "sparse_ticket.weights": "ticket",
    "sparse_ticket.adapt": "set",
}


def test_area_ratio_and_final_iqm_by_hand(tracking, tmp_path):
    for seed_curve in ([0, 1, 2], [0, 1, 2], [0, 1, 2]):
        log_run("study", "train-dense", seed_curve)
    for seed_curve in ([0, 2, 2], [0, 2, 2], [0, 2, 2]):
        log_run("study", "transfer", seed_curve, TRANSFER)
    evaluate_study("study", tmp_path / "out", reps=500)
    with (tmp_path / "out" / "conditions.csv").open() as handle:
        rows = {row["condition"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"dense", "transfer"}
    transfer = rows["transfer"]
    # scratch area: 100 * (0 + 1) / 2 + 100 * (1 + 2) / 2 = 200; transfer 100 + 200 = 300.
    assert float(transfer["area_ratio"]) == pytest.approx(0.5)
    assert float(transfer["area_ratio_low"]) == pytest.approx(0.5)
    assert transfer["significant"] == "True"
    assert float(transfer["final_iqm"]) == pytest.approx(2.0)
    assert float(transfer["p_improvement"]) == pytest.approx(0.5)  # equal final scores
    assert transfer["seeds"] == "3" and rows["dense"]["area_ratio"] == ""
    assert (tmp_path / "out" / "conditions.md").read_text().count("\n") == 4


def test_negative_returns_use_the_offset(tracking, tmp_path):
    # Pong-like negative scores: c = 2 shifts scratch [-2, 0, 2] -> [0, 2, 4] (area 400) and
    # transfer [-2, 2, 2] -> [0, 4, 4] (area 600): r = 0.5.
    for _ in range(2):
        log_run("neg", "train-dense", [-2, 0, 2])
        log_run("neg", "transfer", [-2, 2, 2], TRANSFER)
    evaluate_study("neg", tmp_path / "out", reps=200)
    with (tmp_path / "out" / "conditions.csv").open() as handle:
        rows = {row["condition"]: row for row in csv.DictReader(handle)}
    assert float(rows["transfer"]["area_ratio"]) == pytest.approx(0.5)


def test_evaluate_entry_point_logs_its_outputs(tracking, tmp_path):
    for _ in range(2):
        log_run("study", "train-dense", [0, 1, 2])
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--study", "study", "--output-dir", str(tmp_path / "o"), "--reps", "200"])
    assert exit_info.value.code == 0
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`sparse_ticket.entry_point` = 'evaluate'",
        output_format="list",
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = {
        a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "evaluation")
    }
    assert {"evaluation/conditions.csv", "evaluation/conditions.md"} <= logged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "no such thing"], "is no experiment, run id or filter"),
        (["--study", "params.game = 'pong'"], "has no finished train-dense or transfer runs"),
        (["--study", "x", "--reps", "many"], "reps must be an integer"),
    ],
)
def test_evaluate_bad_input(tracking, capsys, args, message):
    _assert_clean_failure(["evaluate", *args], message, capsys)


def test_figures_are_written(tracking, tmp_path):
    for _ in range(2):
        log_run("figs", "train-dense", [0, 1, 2])
        log_run("figs", "transfer", [0, 2, 2], TRANSFER)
    files = evaluate_study("figs", tmp_path / "out", reps=200)
    names = {path.name for path in files}
    assert {"grid_ddqn_imp_0.8_ticket_set.png", "grid_ddqn_imp_0.8_ticket_set.pdf"} <= names
    assert {"curves_breakout.png", "curves_breakout.pdf"} <= names
    assert all(path.stat().st_size > 0 for path in files)


def test_winning_ticket_curves_from_find_mask_runs(tracking, tmp_path):
    log_run("tickets", "train-dense", [0, 1, 2])
    for method, scores in (("imp", (5.0, 4.0)), ("random", (3.0, 1.0))):
        for seed in range(2):
            with mlflow.start_run(experiment_id=experiment_id("tickets")):
                mlflow.set_tags(
                    {"sparse_ticket.entry_point": "find-mask", "sparse_ticket.method": method}
                )
                mlflow.log_params({"game": "breakout", "agent.algo": "ddqn"})
                rows = [
                    {"sparsity_target": 0.6, "final_eval_iqm": scores[0] + seed},
                    {"sparsity_target": 0.8, "final_eval_iqm": scores[1] + seed},
                ]
                mlflow.log_dict(rows, "tickets.json")
    files = evaluate_study("tickets", tmp_path / "out", reps=200)
    assert {"tickets_ddqn_breakout.png", "tickets_ddqn_breakout.pdf"} <= {p.name for p in files}
