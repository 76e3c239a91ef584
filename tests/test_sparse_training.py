"""Sparsity regimes inside the real training loop (MinAtar, tiny budgets, in process)."""

from __future__ import annotations

import pytest
import torch

from sparse_ticket.config import TrainConfig, apply_overrides
from sparse_ticket.runner import Runner
from sparse_ticket.sparsity.masks import sparsity_report
from sparse_ticket.types import Metric
from sparse_ticket_mlflow.presets import load_preset


class Recorder:
    """A metric sink that keeps everything."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def write(self, metrics):
        self.metrics.extend(metrics)

    def on_checkpoint(self, path, step):
        pass

    def on_evaluation(self, history):
        pass

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, value) for name, value, step in self.metrics if name == key]


def config(**overrides) -> TrainConfig:
    cfg = apply_overrides(TrainConfig(), load_preset("minatar-smoke"))
    cfg.game = "breakout"
    base = {
        "run.total_steps": 1000,
        "run.learning_starts": 100,
        "run.eval_every": 0,
        "run.eval_episodes": 1,
        "run.eval_envs": 1,
        "run.checkpoint_every": 0,
    }
    return apply_overrides(cfg, {**base, **overrides})


def train(cfg: TrainConfig, tmp_path, **kwargs) -> tuple[Runner, Recorder]:
    sink = Recorder()
    runner = Runner(cfg, tmp_path / "ckpt", sink, progress=False, **kwargs)
    assert runner.train() == "finished"
    runner.close()
    return runner, sink


def masked_weights_are_zero(runner: Runner) -> bool:
    params = runner.agent.named_parameters()
    targets = {
        f"{role}.{name}": t
        for role, net in runner.agent.target_networks().items()
        for name, t in net.state_dict().items()
    }
    return all(
        not params[n][~m].any() and (n not in targets or not targets[n][~m].any())
        for n, m in runner.sparsity.mask.items()
    )


def test_static_mask_never_changes(tmp_path):
    runner, sink = train(
        config(**{"sparsity.regime": "static", "sparsity.sparsity": 0.8}), tmp_path
    )
    assert runner.sparsity.updates == 0
    assert sparsity_report(runner.sparsity.mask)["overall"] == pytest.approx(0.8, abs=1e-3)
    assert masked_weights_are_zero(runner)
    assert all(v == 0.0 for _, v in sink.series("sparsity/mask_change"))


def test_gmp_follows_the_cubic_schedule(tmp_path):
    cfg = config(
        **{
            "sparsity.regime": "gmp",
            "sparsity.sparsity": 0.8,
            "sparsity.update_every": 100,
            "sparsity.gmp_start": 0.2,
            "sparsity.gmp_end": 0.8,
        }
    )
    runner, sink = train(cfg, tmp_path)
    got = dict(sink.series("sparsity/overall"))
    # s(t) = 0.8 (1 - (1 - (t - 200) / 600)^3): t=500 -> 0.8 * (1 - 0.125) = 0.7
    assert got[500] == pytest.approx(0.7, abs=2e-3)
    assert got[800] == pytest.approx(0.8, abs=2e-3)
    assert min(got) == 300 and max(got) == 800  # no pruning before start, none after end
    assert masked_weights_are_zero(runner)


@pytest.mark.parametrize("regime", ["set", "rigl"])
def test_dynamic_regimes_keep_sparsity_and_change_the_mask(tmp_path, regime):
    cfg = config(
        **{
            "sparsity.regime": regime,
            "sparsity.sparsity": 0.7,
            "sparsity.update_every": 200,
            "sparsity.drop_decay": "constant",
        }
    )
    runner, sink = train(cfg, tmp_path)
    overall = [v for _, v in sink.series("sparsity/overall")]
    assert len(overall) >= 5 and max(overall) - min(overall) < 1e-9
    assert all(v > 0 for _, v in sink.series("sparsity/mask_change")[1:])
    # Rewired every 200 steps counted from learning_starts = 100: at 300, 500, 700, 900.
    assert runner.sparsity.updates == 4
    assert masked_weights_are_zero(runner)


def test_transferred_mask_and_weights_start_the_run(tmp_path):
    first, _ = train(
        config(**{"sparsity.regime": "static", "sparsity.sparsity": 0.6}), tmp_path / "a"
    )
    second, sink = train(
        config(),
        tmp_path / "b",
        initial_mask=first.sparsity.mask,
        initial_weights=first.agent.weights_state_dict(),
    )
    assert second.sparsity.mask.keys() == first.sparsity.mask.keys()
    assert all(torch.equal(second.sparsity.mask[n], m) for n, m in first.sparsity.mask.items())
    assert sink.series("sparsity/overlap_initial")[-1][1] == 1.0


def test_resume_mid_set_run_is_exact(tmp_path):
    cfg = config(
        **{
            "sparsity.regime": "set",
            "sparsity.sparsity": 0.7,
            "sparsity.update_every": 200,
            "run.checkpoint_every": 500,
            "run.keep_checkpoints": 3,
        }
    )
    full, _ = train(cfg, tmp_path)
    resumed = Runner(cfg, tmp_path / "other", progress=False)
    assert resumed.resume(tmp_path / "ckpt" / "step_000000000500") == 500
    assert resumed.train() == "finished"
    resumed.close()
    for name, tensor in full.agent.named_parameters().items():
        assert torch.equal(tensor, resumed.agent.named_parameters()[name]), name
    assert all(torch.equal(full.sparsity.mask[n], m) for n, m in resumed.sparsity.mask.items())


def test_plasticity_is_logged_and_never_perturbs_training(tmp_path):
    measured, sink = train(config(**{"run.plasticity_every": 250}), tmp_path / "a")
    plain, _ = train(config(**{"run.plasticity_every": 0}), tmp_path / "b")
    keys = {name for name, _, _ in sink.metrics if name.startswith("plasticity/")}
    for key in (
        "q/dormant/overall/tau_0",
        "q/dormant/overall/tau_0.1",
        "q/srank",
        "q/param_norm",
        "q/grad_norm",
        "q/q_mean",
        "q/q_var",
    ):
        assert f"plasticity/{key}" in keys, key
    assert [step for step, _ in sink.series("plasticity/q/srank")] == [
        252,
        500,
        752,
        1000,
    ]  # 4 envs: first step past each boundary
    for name, tensor in measured.agent.named_parameters().items():
        assert torch.equal(tensor, plain.agent.named_parameters()[name]), name
