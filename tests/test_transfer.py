"""Transfer: the encoder and its mask from a source game, a fresh head for the target."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from sparse_ticket.config import TrainConfig
from sparse_ticket.runner import Runner
from sparse_ticket.sparsity.masks import overlap, save_mask, sparsity_report
from sparse_ticket.sparsity.schedules import gmp_sparsity
from sparse_ticket.transfer import adapt_config, encoder_mask, encoder_weights
from tests.conftest import run_cli
from tests.test_cli_errors import _assert_clean_failure
from tests.test_find_mask import _parent
from tests.test_sparse_training import config, train
from tests.test_train_dense import mlflow_run

SMOKE_BREAKOUT = ("--game", "breakout", "--preset", "minatar-smoke")
"""Game and preset of the integration runs below: MinAtar Breakout, smoke-sized."""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained MinAtar Breakout (3 actions) agent under a 60% encoder mask."""
    tmp = tmp_path_factory.mktemp("source")
    runner, _ = train(config(**{"sparsity.regime": "static", "sparsity.sparsity": 0.6}), tmp)
    return runner.agent.weights_state_dict(), runner.sparsity.mask


def target_config(adapt: str, mask, final: float | None = None, **overrides) -> TrainConfig:
    cfg = config(**{"sparsity.update_every": 100, **overrides})
    cfg.game = "space_invaders"  # 4 actions
    adapt_config(cfg.sparsity, adapt, mask, final)
    return cfg


def test_head_is_fresh_and_encoder_survivors_equal_the_source(source, tmp_path):
    weights, mask = source
    cfg = target_config("none", mask)
    transferred = Runner(
        cfg,
        tmp_path / "a",
        initial_weights=encoder_weights(weights),
        initial_mask=encoder_mask(mask),
        progress=False,
    )
    scratch = Runner(cfg, tmp_path / "b", progress=False)  # same seed, no transfer
    got = transferred.agent.weights_state_dict()["q"]
    assert got["head.weight"].shape == (4, 128) and weights["q"]["head.weight"].shape == (3, 128)
    assert torch.equal(got["head.weight"], scratch.agent.weights_state_dict()["q"]["head.weight"])
    for name, keep in mask.items():
        param = name.split(".", 1)[1]
        assert torch.equal(got[param], weights["q"][param] * keep), param
    for r in (transferred, scratch):
        r.close()


def test_adapt_none_keeps_the_mask(source, tmp_path):
    _, mask = source
    runner, sink = train(target_config("none", mask), tmp_path, initial_mask=mask)
    assert all(torch.equal(runner.sparsity.mask[n], m) for n, m in mask.items())
    assert [v for _, v in sink.series("sparsity/overlap_initial")] == [1.0]


def test_adapt_gmp_prunes_on_from_the_mask_along_the_schedule(source, tmp_path):
    _, mask = source
    start = sparsity_report(mask)["overall"]
    runner, sink = train(target_config("gmp", mask, final=0.8), tmp_path, initial_mask=mask)
    for step, value in sink.series("sparsity/overall")[1:]:
        expected = gmp_sparsity(step, final=0.8, initial=start, start_step=200, end_step=800)
        assert value == pytest.approx(expected, abs=1e-3), step
    assert sparsity_report(runner.sparsity.mask)["overall"] == pytest.approx(0.8, abs=1e-3)
    assert all(not (runner.sparsity.mask[n] & ~m).any() for n, m in mask.items())  # only prunes


def test_adapt_set_keeps_sparsity_and_moves_the_mask(source, tmp_path):
    _, mask = source
    cfg = target_config("set", mask, **{"sparsity.drop_decay": "constant"})
    _runner, sink = train(cfg, tmp_path, initial_mask=mask)
    levels = {round(v, 9) for _, v in sink.series("sparsity/overall")}
    assert levels == {round(sparsity_report(mask)["overall"], 9)}
    assert sink.series("sparsity/overlap_initial")[-1][1] < 1.0


def test_gmp_target_below_the_mask_is_refused(source):
    _, mask = source
    with pytest.raises(ValueError, match="below the transferred mask's sparsity"):
        adapt_config(TrainConfig().sparsity, "gmp", mask, 0.5)


# ------------------------------------------------------------------ through the entry points
@pytest.mark.integration
def test_train_dense_find_mask_transfer_chain_through_mlflow_run(tracking):
    """Real Atari, source Pong != target Breakout, only runs:/ URIs between the steps."""
    tiny = "learning_starts=100 eval_every=0 eval_episodes=1 eval_envs=1 eval_max_frames=200"
    mlflow_run(
        "train-dense",
        "-P",
        "game=pong",
        "-P",
        "preset=smoke",
        "-P",
        "total_steps=300",
        "-P",
        f"overrides={tiny}",
    )
    dense = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    mlflow_run(
        "find-mask",
        "-P",
        "method=imp",
        "-P",
        "game=pong",
        "-P",
        "preset=smoke",
        "-P",
        "sparsities=0.7",
        "-P",
        "total_steps=300",
        "-P",
        f"dense_run=runs:/{dense.info.run_id}",
        "-P",
        f"overrides={tiny} imp_prune_fraction=0.7",
    )
    mask_uri = f"runs:/{_parent('imp').info.run_id}/sparsity_0.70/mask.pt"
    mlflow_run(
        "transfer",
        "-P",
        f"mask={mask_uri}",
        "-P",
        "game=breakout",
        "-P",
        "adapt=set",
        "-P",
        "weights=trained",
        "-P",
        "preset=smoke",
        "-P",
        "total_steps=300",
        "-P",
        f"overrides={tiny} update_every=100",
    )
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`sparse_ticket.entry_point` = 'transfer'",
        output_format="list",
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    tags = runs[0].data.tags
    assert tags["sparse_ticket.source_game"] == "pong"
    assert tags["sparse_ticket.target_game"] == "breakout"
    assert tags["sparse_ticket.mask_method"] == "imp"
    assert tags["sparse_ticket.source_run_id"] == _parent("imp").info.run_id
    assert (tags["sparse_ticket.weights"], tags["sparse_ticket.adapt"]) == ("trained", "set")
    assert float(tags["sparse_ticket.sparsity"]) == pytest.approx(0.7, abs=1e-4)
    assert runs[0].data.metrics["sparsity/overall"] == pytest.approx(0.7, abs=1e-4)
    init = torch.load(
        mlflow.artifacts.download_artifacts(f"runs:/{runs[0].info.run_id}/checkpoints/init.pt"),
        weights_only=True,
    )
    assert init["q"]["head.weight"].shape == (4, 512)  # Breakout's action set, not Pong's 6


@pytest.mark.integration
def test_baselines_are_tagged_like_transfers(tracking):
    run_cli(
        "transfer",
        "--baseline",
        "dense",
        *SMOKE_BREAKOUT,
        "--total-steps",
        "200",
        "--overrides",
        "learning_starts=100 eval_every=0",
    )
    run_cli(
        "transfer",
        "--baseline",
        "set",
        "--final-sparsity",
        "0.8",
        *SMOKE_BREAKOUT,
        "--total-steps",
        "200",
        "--overrides",
        "learning_starts=100 eval_every=0",
    )
    conditions = {
        r.data.tags["sparse_ticket.condition"]: r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    }
    assert set(conditions) == {"baseline-dense", "baseline-set"}
    assert conditions["baseline-set"].data.metrics["sparsity/overall"] == pytest.approx(
        0.8, abs=1e-3
    )
    assert "sparsity/overall" not in conditions["baseline-dense"].data.metrics


# ------------------------------------------------------------------------------ bad input
@pytest.fixture
def minatar_mask_uri(tracking, tmp_path):
    """A 60% MinAtar encoder mask logged like find-mask logs one (without training for it)."""
    generator = torch.Generator().manual_seed(0)
    mask = {
        name: torch.rand(shape, generator=generator) >= 0.6
        for name, shape in (
            ("q.encoder.conv1.weight", (16, 10, 3, 3)),
            ("q.encoder.fc.weight", (128, 1024)),
        )
    }
    folder = tmp_path / "sparsity_0.60"
    folder.mkdir()
    save_mask(mask, folder / "mask.pt")
    (folder / "mask.json").write_text(json.dumps({"method": "imp", "source_game": "breakout"}))
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), folder.name)
    return f"runs:/{run.info.run_id}/sparsity_0.60/mask.pt"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--game", "pong"], "has shape (16, 10, 3, 3), the model's parameter has (32, 4, 8, 8)"),
        (["--adapt", "grow"], "unknown adapt regime 'grow'"),
        (["--adapt", "gmp", "--final-sparsity", "0.55"], "below the transferred mask's sparsity"),
        (["--weights", "best"], "unknown weights 'best'"),
    ],
)
def test_bad_transfer_input(minatar_mask_uri, capsys, args, message):
    base = [
        "transfer",
        "--mask",
        minatar_mask_uri,
        "--game",
        "space_invaders",
        "--preset",
        "minatar-smoke",
    ]
    if "--game" in args:
        base = ["transfer", "--mask", minatar_mask_uri, "--preset", "smoke"]
    _assert_clean_failure([*base, *args], message, capsys)


def test_missing_mask_uri(tracking, capsys):
    _assert_clean_failure(
        ["transfer", "--mask", "runs:/0123456789abcdef/sparsity_0.60/mask.pt", "--preset", "smoke"],
        "cannot be downloaded",
        capsys,
    )


@pytest.mark.parametrize("regime", ["set", "rigl"])
def test_rewiring_waits_for_the_first_gradient_update(source, tmp_path, regime):
    """RigL (Evci et al. 2020) and sparse DQN (Graesser et al. 2022) update masks on the clock
    of the training updates. The transferred mask is exactly the ticket's (Jaccard 1.0) at the
    first gradient update; the first rewiring comes update_every steps later, with the full
    cosine-decayed drop fraction of that point of the *training* schedule."""
    weights, mask = source
    cfg = target_config(regime, mask, **{"run.learning_starts": 400})
    runner = Runner(
        cfg, tmp_path, initial_weights=encoder_weights(weights), initial_mask=mask, progress=False
    )
    runner.begin()
    first_update = first_rewire = None
    while runner.running() and first_rewire is None:
        in_effect = overlap(runner.sparsity.mask, mask)["overall"]  # during this iteration
        updates = runner.updates
        runner.iterate()
        if updates == 0 and runner.updates > 0:
            first_update = (runner.step, in_effect)
        if runner.sparsity.updates:
            first_rewire = (runner.step, overlap(runner.sparsity.mask, mask)["overall"])
            change = runner.sparsity.last_change
    runner.close()
    assert first_update == (400, 1.0)
    assert first_rewire[0] == 500 and first_rewire[1] < 1.0  # learning_starts + update_every
    # Drop fraction 0.3 * (1 + cos(pi * 100 / 600)) / 2 = 0.27990 of each layer's active weights;
    # mask_change counts the dropped and the regrown positions: 2 * 0.2799 = 0.5598.
    assert change == pytest.approx(0.5598, abs=0.01)


def test_baseline_config_sets_each_regime_and_draws_the_random_mask_from_the_seed():
    from sparse_ticket.config import SparsityConfig
    from sparse_ticket.transfer import baseline_config

    template = {"q.encoder.conv1.weight": torch.tensor([[True, False, False, True, False]])}
    dense, gmp, random = SparsityConfig(), SparsityConfig(), SparsityConfig()
    assert baseline_config(dense, "dense", None, None, seed=0) is None
    assert dense.regime == "dense"
    assert baseline_config(gmp, "gmp", 0.8, template, seed=0) is None
    assert (gmp.regime, gmp.sparsity) == ("gmp", 0.8)
    mask = baseline_config(random, "random", 0.6, template, seed=3)
    assert (random.regime, random.sparsity) == ("static", 0.6)
    # The template's active count (2 of 5) at positions drawn from torch.Generator(seed 3).
    expected = torch.zeros(5, dtype=torch.bool)
    expected[torch.randperm(5, generator=torch.Generator().manual_seed(3))[:2]] = True
    assert torch.equal(mask["q.encoder.conv1.weight"], expected.reshape(1, 5))
    with pytest.raises(ValueError, match="needs a mask or a final sparsity"):
        baseline_config(SparsityConfig(), "set", None, None, seed=0)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_config(SparsityConfig(), "lottery", 0.8, None, seed=0)
