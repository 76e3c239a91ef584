"""evaluate on a small synthetic study logged to a temporary tracking store (exact values)."""

from __future__ import annotations

import csv

import mlflow
import numpy as np
import pytest

from mlproject.cli import main
from mlproject.evaluate import evaluate_study, windowed_episode_curve
from tests.test_cli_errors import _assert_clean_failure

STEPS = (0, 100, 200)


def experiment_id(name: str) -> str:
    """Get or create an experiment without making it the process's active one."""
    found = mlflow.get_experiment_by_name(name)
    return found.experiment_id if found else mlflow.create_experiment(name)


def log_run(experiment: str, entry_point: str, curve, tags=None, game="breakout", episodes=()):
    """A finished run with ``eval/score_mean`` at STEPS (none if ``curve`` is None) and
    ``train/episode_score`` for each ``(step, score)`` of ``episodes``."""
    with mlflow.start_run(experiment_id=experiment_id(experiment)):
        mlflow.set_tags({"sparse_ticket.entry_point": entry_point, **(tags or {})})
        mlflow.log_params({"game": game, "agent.algo": "ddqn", "run.log_every": "100"})
        for step, value in zip(STEPS, curve or (), strict=curve is not None):
            mlflow.log_metric("eval/score_mean", value, step=step)
        for step, score in episodes:
            mlflow.log_metric("train/episode_score", score, step=step)


def read_rows(folder) -> dict[str, dict[str, str]]:
    """conditions.csv keyed by ``condition`` (or ``condition@sparsity`` for transfers)."""
    with (folder / "conditions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {
        f"{r['condition']}@{r['sparsity']}" if r["weights"] else r["condition"]: r for r in rows
    }


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
        (["--study", "x", "--baselines", "dense,bogus"], "unknown baseline 'bogus'"),
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


# ------------------------------------------------------------------------------ training return
def test_windowed_episode_curve_by_hand():
    grid = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
    # Unordered; two episodes end at step 100 (the window's right edge counts), one after the grid.
    ends = np.array([150, 100, 380, 100, 200, 450])
    scores = np.array([4.0, 1.0, -2.0, 3.0, 8.0, 99.0])
    steps, values = windowed_episode_curve(grid, ends, scores)
    # (-inf, 0]: no episode, skipped; (0, 100]: (1 + 3) / 2; (100, 200]: (4 + 8) / 2;
    # (200, 300]: empty, carries 6; (300, 400]: -2; 450 lies after the grid.
    assert steps.tolist() == [100.0, 200.0, 300.0, 400.0]
    assert values.tolist() == [2.0, 6.0, 6.0, -2.0]


def test_windowed_episode_curve_without_episodes_in_the_grid():
    for ends in (np.array([]), np.array([500.0])):
        steps, values = windowed_episode_curve(np.array([100.0, 200.0]), ends, np.ones(ends.size))
        assert steps.size == 0 and values.size == 0


def test_final_training_return_iqm_by_hand(tracking, tmp_path):
    # On the eval grid (0, 100, 200), the last window (100, 200] gives: mean(0, 2) = 1 (both at
    # step 200), 2, mean(3, 3) = 3 (same step), and 10 carried from (0, 100] (empty last window).
    # IQM of [1, 2, 3, 10] = mean(2, 3) = 2.5. Run 0's first window is empty and skipped.
    episodes = (
        [(200, 0.0), (200, 2.0)],
        [(50, 7.0), (150, 2.0)],
        [(100, 1.0), (120, 3.0), (200, 3.0)],
        [(60, 10.0)],
    )
    for seed_episodes in episodes:
        log_run("train", "train-dense", [0, 1, 2], episodes=seed_episodes)
    files = evaluate_study("train", tmp_path / "out", reps=500)
    dense = read_rows(tmp_path / "out")["dense"]
    assert float(dense["final_train_iqm"]) == pytest.approx(2.5)
    assert float(dense["final_train_iqm_low"]) <= 2.5 <= float(dense["final_train_iqm_high"])
    assert float(dense["final_iqm"]) == pytest.approx(2.0)
    assert {"train_curves_breakout.png", "train_curves_breakout.pdf"} <= {p.name for p in files}


def test_training_return_without_evaluations_uses_log_every(tracking, tmp_path):
    # No eval history: windows every run.log_every = 100 steps; the last one, (100, 200], holds
    # mean(4, 6) = 5 and 7; IQM over two runs = their mean, 6.
    log_run("noeval", "train-dense", [0, 1, 2])
    for last in ([(200, 4.0), (200, 6.0)], [(170, 7.0)]):
        log_run("noeval", "transfer", None, TRANSFER, episodes=[(30, 1.0), *last])
    evaluate_study("noeval", tmp_path / "out", reps=200)
    transfer = read_rows(tmp_path / "out")["transfer@0.8"]
    assert float(transfer["final_train_iqm"]) == pytest.approx(6.0)
    assert transfer["final_iqm"] == "" and transfer.get("area_ratio", "") == ""


# ------------------------------------------------------------------------------ named baselines
def gmp_baseline(sparsity: str) -> dict[str, str]:
    return {
        "sparse_ticket.condition": "baseline-gmp",
        "sparse_ticket.algo": "ddqn",
        "sparse_ticket.target_game": "breakout",
        "sparse_ticket.sparsity": sparsity,
        "sparse_ticket.weights": "reinit",
        "sparse_ticket.adapt": "gmp",
    }


def log_gmp_study(name: str) -> None:
    """Dense [0, 1, 2], gmp at a realised 0.800123 [0, 1, 1], transfers at 0.8 and 0.9."""
    for _ in range(2):
        log_run(name, "train-dense", [0, 1, 2])
        log_run(name, "transfer", [0, 1, 1], gmp_baseline("0.800123"))
        log_run(name, "transfer", [0, 2, 2], TRANSFER)
        log_run(name, "transfer", [0, 2, 2], {**TRANSFER, "sparse_ticket.sparsity": "0.9"})


def test_area_ratio_vs_a_named_sparse_baseline(tracking, tmp_path):
    log_gmp_study("gmp")
    files = evaluate_study("gmp", tmp_path / "out", reps=200, baselines=("dense", "gmp"))
    transfer = read_rows(tmp_path / "out")["transfer@0.8"]
    # gmp area 100 * (0 + 1) / 2 + 100 * (1 + 1) / 2 = 150, transfer 300: r = (300 - 150) / 150.
    assert float(transfer["area_ratio_vs_gmp"]) == pytest.approx(1.0)
    assert float(transfer["area_ratio_vs_gmp_low"]) == pytest.approx(1.0)
    assert float(transfer["area_ratio_vs_gmp_high"]) == pytest.approx(1.0)
    assert transfer["significant_vs_gmp"] == "True"
    assert float(transfer["p_improvement_vs_gmp"]) == pytest.approx(1.0)  # 2 > 1 in every pair
    assert float(transfer["area_ratio"]) == pytest.approx(0.5)  # vs dense, unchanged
    assert {"grid_vs-gmp_ddqn_imp_0.8_ticket_set.png", "grid_ddqn_imp_0.8_ticket_set.png"} <= {
        p.name for p in files
    }


def test_transfer_without_a_matching_sparsity_baseline_gets_a_note(tracking, tmp_path):
    log_gmp_study("gmp")
    evaluate_study("gmp", tmp_path / "out", reps=200, baselines=("dense", "gmp"))
    transfer = read_rows(tmp_path / "out")["transfer@0.9"]
    assert transfer["area_ratio_vs_gmp"] == "" and transfer["p_improvement_vs_gmp"] == ""
    assert "no baseline-gmp runs on breakout at s=0.9" in transfer["note"]
    assert float(transfer["area_ratio"]) == pytest.approx(0.5)


def test_baselines_through_the_entry_point(tracking, tmp_path):
    log_gmp_study("cli")
    out = tmp_path / "o"
    args = ["--study", "cli", "--output-dir", str(out), "--reps", "200", "--baselines", "gmp"]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *args])
    assert exit_info.value.code == 0
    transfer = read_rows(out)["transfer@0.8"]
    assert float(transfer["area_ratio_vs_gmp"]) == pytest.approx(1.0)
    assert transfer.get("area_ratio", "") == ""  # dense not named: no comparison against it
