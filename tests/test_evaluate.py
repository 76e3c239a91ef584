"""evaluate on a small synthetic study logged to a temporary tracking store (exact values)."""

from __future__ import annotations

import csv
import json

import mlflow
import numpy as np
import pytest

from sparse_ticket_mlflow.cli import main
from sparse_ticket_mlflow.conditions import Condition
from sparse_ticket_mlflow.errors import InputError
from sparse_ticket_mlflow.evaluate import evaluate_study
from sparse_ticket_mlflow.figures import DENSE_LABEL
from sparse_ticket_mlflow.study_data import (
    metric_curves,
    scope_runs,
    ticket_levels,
    windowed_episode_curve,
)
from sparse_ticket_mlflow.study_outputs import dense_final_scores, ticket_figures, transfer_grids
from sparse_ticket_mlflow.summaries import Comparison, Summary
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


def rows_by_target(folder) -> dict[tuple[str, str], dict[str, str]]:
    """conditions.csv keyed by ``(condition, target)``."""
    with (folder / "conditions.csv").open() as handle:
        return {(r["condition"], r["target"]): r for r in csv.DictReader(handle)}


# Pong: 4 scratch (train-dense) and 4 transfer runs at steps 0, 100, 200; offset c = +21
# (Pong's minimum score is -21), IQM over 4 runs = mean of the middle 2 (1 cut per side).
#   scratch  step 0: -20 x 4 -> -20; step 100: -20 -19 -17 -10 -> (-19 - 17) / 2 = -18;
#            step 200: -15 -13 -11 5 -> (-13 - 11) / 2 = -12.  + 21: [1, 3, 9].
#   transfer step 0: -20 x 4 -> -20; step 100: -18 -16 -14 20 -> -15;
#            step 200: -19 -9 -7 0 -> -8.                    + 21: [1, 6, 13].
#   areas: scratch 100 * (1 + 3) / 2 + 100 * (3 + 9) / 2 = 200 + 600 = 800,
#          transfer 100 * (1 + 6) / 2 + 100 * (6 + 13) / 2 = 350 + 950 = 1300;
#   r = (1300 - 800) / 800 = 0.625.
# Mean curves instead, + 21: scratch [1, 4.5, 12.5] (area 275 + 850 = 1125), transfer
# [1, 14, 12.25] (750 + 1312.5 = 2062.5): r = 937.5 / 1125 = 5/6. (The old definition, mean
# curves shifted by -min = 20 over these runs, gives 937.5 / 925.)
PONG_SCRATCH = ([-20, -20, -15], [-20, -19, -13], [-20, -17, -11], [-20, -10, 5])
PONG_TRANSFER = ([-20, -18, -19], [-20, -16, -9], [-20, -14, -7], [-20, 20, 0])
# Breakout (minimum 0, offset 0), 4 + 4 runs:
#   scratch  step 0: 0 x 4; step 100: 0 1 3 9 -> 2; step 200: 1 2 4 50 -> 3. IQM [0, 2, 3],
#            area 100 * 2 / 2 + 100 * 5 / 2 = 350;
#   transfer step 0: 0 x 4; step 100: 2 3 5 6 -> 4; step 200: 0 6 8 9 -> 7. IQM [0, 4, 7],
#            area 200 + 550 = 750;
#   r = (750 - 350) / 350 = 8/7. (Mean curves [0, 3.25, 14.25] and [0, 4, 5.75] give a
#   negative ratio, (687.5 - 1037.5) / 1037.5.)
BREAKOUT_SCRATCH = ([0, 0, 1], [0, 1, 2], [0, 3, 4], [0, 9, 50])
BREAKOUT_TRANSFER = ([0, 2, 0], [0, 3, 6], [0, 5, 8], [0, 6, 9])
TO_PONG = {**TRANSFER, "sparse_ticket.source_game": "breakout", "sparse_ticket.target_game": "pong"}


def log_two_game_study(name: str) -> None:
    for curve in PONG_SCRATCH:
        log_run(name, "train-dense", list(curve), game="pong")
    for curve in PONG_TRANSFER:
        log_run(name, "transfer", list(curve), TO_PONG, game="pong")
    for curve in BREAKOUT_SCRATCH:
        log_run(name, "train-dense", list(curve))
    for curve in BREAKOUT_TRANSFER:
        log_run(name, "transfer", list(curve), TRANSFER)


def test_area_ratio_of_iqm_curves_with_the_game_offset_by_hand(tracking, tmp_path):
    log_two_game_study("iqm")
    evaluate_study("iqm", tmp_path / "out", reps=200)
    rows = rows_by_target(tmp_path / "out")
    pong, breakout = rows[("transfer", "pong")], rows[("transfer", "breakout")]
    assert float(pong["area_ratio"]) == 0.625
    assert float(breakout["area_ratio"]) == 8 / 7
    assert (pong["area_aggregate"], pong["area_offset"]) == ("iqm", "21.0")
    assert (breakout["area_aggregate"], breakout["area_offset"]) == ("iqm", "0.0")
    assert rows[("dense", "pong")]["area_offset"] == "21.0"  # the game's, on every row
    record = json.loads((tmp_path / "out" / "study.json").read_text())
    assert record["area_aggregate"] == "iqm"
    assert record["area_offset"] == {"breakout": 0.0, "pong": 21.0}

    evaluate_study("iqm", tmp_path / "mean", reps=200, aggregate="mean")
    rows = rows_by_target(tmp_path / "mean")
    assert float(rows[("transfer", "pong")]["area_ratio"]) == pytest.approx(5 / 6)
    assert float(rows[("transfer", "breakout")]["area_ratio"]) < 0
    assert rows[("transfer", "pong")]["area_aggregate"] == "mean"
    with pytest.raises(InputError, match="unknown aggregate 'median'"):
        evaluate_study("iqm", tmp_path / "x", reps=200, aggregate="median")


def test_returns_below_the_game_minimum_give_a_note(tracking, tmp_path):
    # Breakout's minimum score is 0 (offset 0): a return of -2 means the wrong offset, so no
    # area ratio is computed, the note says why; the probability of improvement still is.
    for _ in range(2):
        log_run("neg", "train-dense", [-2, 0, 2])
        log_run("neg", "transfer", [-2, 2, 2], TRANSFER)
    evaluate_study("neg", tmp_path / "out", reps=200)
    transfer = read_rows(tmp_path / "out")["transfer@0.8"]
    assert transfer.get("area_ratio", "") == ""  # no row has one: no column either
    assert transfer["note"] == (
        "no area ratio on breakout: a return of -2 lies below the minimum score 0 "
        "that offset 0 declares: the area ratio needs offset = -(the game's minimum score), "
        "see game_offset"
    )
    assert float(transfer["p_improvement"]) == 0.5


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


def log_find_mask(name: str, method: str, rows: list[dict], game: str = "breakout") -> None:
    with mlflow.start_run(experiment_id=experiment_id(name)):
        mlflow.set_tags({"sparse_ticket.entry_point": "find-mask", "sparse_ticket.method": method})
        mlflow.log_params({"game": game, "agent.algo": "ddqn"})
        mlflow.log_dict(rows, "tickets.json")


def test_winning_ticket_curves_from_find_mask_runs(tracking, tmp_path):
    # Dense: 4 train-dense runs whose final eval/score_mean are 1, 2, 4, 10: IQM = (2 + 4) / 2.
    for final in (1, 2, 4, 10):
        log_run("tickets", "train-dense", [0, 1, final])
    # Tickets (imp, gmp) and the random control, 2 seeds each: the IQM of 2 is their mean.
    # final_eval_iqm (IQM over a ticket's own final episodes) is another statistic: not used.
    for method, scores in (("random", (3.0, 1.0)), ("imp", (5.0, 4.0)), ("gmp", (6.0, 2.0))):
        for seed in range(2):
            rows = [
                {"sparsity_target": 0.6, "final_eval_mean": scores[0] + seed, "final_eval_iqm": 99},
                {"sparsity_target": 0.8, "final_eval_mean": scores[1] + seed, "final_eval_iqm": 99},
            ]
            log_find_mask("tickets", method, rows)
    log_find_mask("tickets", "imp", [{"sparsity_target": 0.6, "final_eval_mean": 7.0}], "pong")

    everything = scope_runs("tickets")
    levels = ticket_levels(everything)
    imp = levels[("ddqn", "breakout", "imp")]  # seeds in search order: newest first
    assert {level: sorted(scores) for level, scores in imp.items()} == {
        0.6: [5.0, 6.0],
        0.8: [4.0, 5.0],
    }
    dense = dense_final_scores(metric_curves(everything, "eval/score_mean"))
    assert list(dense) == [("ddqn", "breakout")]
    assert sorted(dense[("ddqn", "breakout")]) == [1.0, 2.0, 4.0, 10.0]
    data = ticket_figures(levels, dense, reps=200, seed=0)
    breakout = data[("ddqn", "breakout")]
    assert list(breakout.series) == ["gmp", "imp", "random"]  # tickets, then the control
    expected = {"gmp": [6.5, 2.5], "imp": [5.5, 4.5], "random": [3.5, 1.5]}
    for method, (sparsities, points, lows, highs) in breakout.series.items():
        assert sparsities.tolist() == [0.6, 0.8] and points.tolist() == expected[method]
        assert np.all(lows <= points) and np.all(points <= highs)
    point, low, high = breakout.dense
    assert point == 3.0 and low <= 3.0 <= high and low < high
    assert data[("ddqn", "pong")].dense is None  # no train-dense runs on pong

    files = evaluate_study("tickets", tmp_path / "out", reps=200)
    assert {"tickets_ddqn_breakout.png", "tickets_ddqn_breakout.pdf"} <= {p.name for p in files}
    assert DENSE_LABEL == "dense (0% sparsity)"


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
    assert transfer["sparsity_vs_gmp"] == "0.8" and transfer["mask_sparsity"] == "0.8"
    assert {"grid_vs-gmp_ddqn_imp_0.8_ticket_set.png", "grid_ddqn_imp_0.8_ticket_set.png"} <= {
        p.name for p in files
    }


def test_a_transfer_pruning_on_meets_the_baseline_at_its_final_sparsity(tracking, tmp_path):
    # adapt=gmp from a mask at 0.800004 to a final 0.9: compared with baseline-gmp at 0.900123.
    pruning_on = {
        **TRANSFER,
        "sparse_ticket.sparsity": "0.9",
        "sparse_ticket.mask_sparsity": "0.800004",
        "sparse_ticket.adapt": "gmp",
    }
    for _ in range(2):
        log_run("prune", "train-dense", [0, 1, 2])
        log_run("prune", "transfer", [0, 1, 1], gmp_baseline("0.900123"))  # no mask tag: 0.9
        log_run("prune", "transfer", [0, 2, 2], pruning_on)
    files = evaluate_study("prune", tmp_path / "out", reps=200, baselines=("dense", "gmp"))
    rows = read_rows(tmp_path / "out")
    transfer = rows["transfer@0.9"]
    assert (transfer["mask_sparsity"], transfer["sparsity"]) == ("0.8", "0.9")
    assert transfer["sparsity_vs_gmp"] == "0.9"
    assert float(transfer["area_ratio_vs_gmp"]) == pytest.approx(1.0)  # 300 vs 150, as above
    assert rows["baseline-gmp@0.9"]["mask_sparsity"] == "0.9"
    expected = {
        "grid_vs-gmp_ddqn_imp_0.8-0.9_ticket_gmp.png",
        "grid_ddqn_imp_0.8-0.9_ticket_gmp.png",
    }
    assert expected <= {p.name for p in files}


def _condition(condition: str, sparsity: str, mask_sparsity: str, adapt: str = "gmp") -> Condition:
    source, method, weights = (
        ("-", "-", "reinit") if condition != "transfer" else ("pong", "imp", "ticket")
    )
    return Condition(
        "ddqn", source, "breakout", method, sparsity, weights, adapt, condition, mask_sparsity
    )


def test_labels_and_grid_titles_state_both_sparsities():
    moving = _condition("transfer", "0.9", "0.8")
    assert moving.label == "ddqn imp pong->breakout s=0.80->0.90 ticket/gmp"
    assert _condition("transfer", "0.8", "0.8", "set").label.endswith("s=0.80 ticket/set")
    assert _condition("baseline-gmp", "0.9", "0.9").label == "ddqn gmp on target, s=0.90"
    ratio = (0.5, 0.1, 0.9, True)
    summary = Summary(moving, 2, area_ratio=ratio)
    summary.versus["gmp"] = Comparison(area_ratio=(1.0, 1.0, 1.0, True), sparsity="0.9")
    grids = transfer_grids([summary], "gmp")
    assert list(grids) == ["grid_vs-gmp_ddqn_imp_0.8-0.9_ticket_gmp"]
    grid = grids["grid_vs-gmp_ddqn_imp_0.8-0.9_ticket_gmp"]
    assert grid.title == (
        "area ratio (IQM curves) vs gmp on target at s=0.90\n"
        "transfer s=0.80->0.90: ddqn imp ticket/gmp"
    )
    assert grid.cells == {("pong", "breakout"): (1.0, 1.0, 1.0, True)}
    dense = transfer_grids([summary], "dense")["grid_ddqn_imp_0.8-0.9_ticket_gmp"]
    assert dense.title.startswith("area ratio (IQM curves) vs dense from scratch\n")
    assert dense.cells == {("pong", "breakout"): ratio}


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
