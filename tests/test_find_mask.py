"""The find-mask entry point on real Atari games with tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from sparse_ticket.sparsity.masks import content_hash, sparsity_report
from sparse_ticket_mlflow.runs import load_mask_uri
from tests.conftest import run_cli
from tests.test_train_dense import mlflow_run

SMOKE_BREAKOUT = ("--game", "breakout", "--preset", "minatar-smoke")
"""Game and preset of the integration runs below: MinAtar Breakout, smoke-sized."""

pytestmark = pytest.mark.integration

TINY = "learning_starts=100 eval_every=0 eval_episodes=1 eval_envs=1 eval_max_frames=200"


def _parent(method: str):
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`sparse_ticket.entry_point` = 'find-mask' "
        f"and tags.`sparse_ticket.method` = '{method}'",
        output_format="list",
    )
    assert len(runs) == 1
    return runs[0]


def _children(parent_id: str):
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
    )


@pytest.mark.parametrize("method", ["imp", "gmp"])
def test_find_mask_through_mlflow_run_and_load_by_uri(tracking, method):
    mlflow_run(
        "find-mask",
        "-P",
        f"method={method}",
        "-P",
        "game=pong",
        "-P",
        "preset=smoke",
        "-P",
        "sparsities=0.6",
        "-P",
        "total_steps=300",
        "-P",
        f"overrides={TINY} imp_prune_fraction=0.6 update_every=50",
    )
    parent = _parent(method)
    assert parent.info.status == "FINISHED"
    rounds = _children(parent.info.run_id)
    assert len(rounds) == (2 if method == "imp" else 1)  # IMP: dense round + one pruned round
    assert all(r.info.status == "FINISHED" for r in rounds)

    uri = f"runs:/{parent.info.run_id}/sparsity_0.60/mask.pt"
    mask, sidecar = load_mask_uri(uri)
    assert set(mask) == {f"q.encoder.{n}.weight" for n in ("conv1", "conv2", "conv3", "fc")}
    assert sparsity_report(mask)["overall"] == pytest.approx(0.6, abs=1e-6)
    assert sidecar["method"] == method and sidecar["source_game"] == "pong"
    assert sidecar["mask_hash"] == content_hash(mask)
    assert set(sidecar["per_layer"]) == set(mask)

    for kind in ("ticket", "trained"):
        path = mlflow.artifacts.download_artifacts(
            f"runs:/{parent.info.run_id}/sparsity_0.60/{kind}.pt"
        )
        weights = torch.load(path, weights_only=True)
        for name, keep in mask.items():
            role, param = name.split(".", 1)
            assert not weights[role][param][~keep].any(), f"{kind} {name} has pruned weights"
    summary_path = mlflow.artifacts.download_artifacts(f"runs:/{parent.info.run_id}/tickets.json")
    summary = json.loads(Path(summary_path).read_text())
    assert [row["sparsity_target"] for row in summary] == [0.6]


def test_random_control_matches_template_density(tracking):
    run_cli(
        "find-mask",
        "--method",
        "imp",
        *SMOKE_BREAKOUT,
        "--sparsities",
        "0.7",
        "--total-steps",
        "300",
        "--overrides",
        "learning_starts=100 eval_every=0 imp_prune_fraction=0.7",
    )
    template_uri = f"runs:/{_parent('imp').info.run_id}/sparsity_0.70/mask.pt"
    run_cli(
        "find-mask",
        "--method",
        "random",
        *SMOKE_BREAKOUT,
        "--total-steps",
        "300",
        "--template",
        template_uri,
        "--overrides",
        "learning_starts=100 eval_every=0",
    )
    template, _ = load_mask_uri(template_uri)
    control, sidecar = load_mask_uri(f"runs:/{_parent('random').info.run_id}/sparsity_0.70/mask.pt")
    assert sparsity_report(control) == sparsity_report(template)
    assert content_hash(control) != content_hash(template)
    assert sidecar["method"] == "random"


def test_imp_from_a_dense_run_rewinds_to_its_init(tracking):
    quick = "learning_starts=100 eval_every=0"
    run_cli(
        "train-dense",
        *SMOKE_BREAKOUT,
        "--total-steps",
        "300",
        "--overrides",
        quick,
    )
    dense = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    run_cli(
        "find-mask",
        "--method",
        "imp",
        *SMOKE_BREAKOUT,
        "--sparsities",
        "0.5",
        "--total-steps",
        "300",
        "--dense-run",
        f"runs:/{dense.info.run_id}",
        "--overrides",
        f"{quick} imp_prune_fraction=0.5",
    )
    parent = _parent("imp")
    assert len(_children(parent.info.run_id)) == 1  # the dense round was the train-dense run
    mask, _ = load_mask_uri(f"runs:/{parent.info.run_id}/sparsity_0.50/mask.pt")
    init = torch.load(
        mlflow.artifacts.download_artifacts(f"runs:/{dense.info.run_id}/checkpoints/init.pt"),
        weights_only=True,
    )
    ticket = torch.load(
        mlflow.artifacts.download_artifacts(f"runs:/{parent.info.run_id}/sparsity_0.50/ticket.pt"),
        weights_only=True,
    )
    for name, keep in mask.items():
        role, param = name.split(".", 1)
        assert torch.equal(ticket[role][param], init[role][param] * keep)
