"""Population training: K members in one process equal the same runs trained alone.

``loop`` batching is bit-identical to training alone (metrics, evaluation, checkpoints, final
weights, optimiser state), for every algorithm and with per-member masks that change during
training. ``vmap`` batching (stacked parameters, grouped convolutions and batched matmuls)
changes the summation order inside kernels, so it is held to a stated tolerance instead.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from sparse_ticket.agents import make_agent
from sparse_ticket.agents.population import Population, resolve_batching
from sparse_ticket.checkpoint import load_checkpoint
from sparse_ticket.config import AgentConfig, TrainConfig, apply_overrides
from sparse_ticket.population_runner import PopulationRunner
from sparse_ticket.runner import Runner
from sparse_ticket.types import Metric
from sparse_ticket_mlflow.presets import load_preset
from tests.test_agents import make_batch

MINATAR = (10, 10, 10)
NUM_ACTIONS = 6
TIMED = ("perf/steps_per_sec",)  # wall-clock figures: the only metrics allowed to differ

VMAP_METRIC_RTOL = 1e-4
"""Relative tolerance of ``vmap`` metrics (losses, Q means, gradient norms) against alone."""
VMAP_WEIGHT_ATOL_PER_UPDATE = 0.02
"""``vmap`` weights may differ from alone by this fraction of the learning rate per update.

Adam divides each gradient by its own running RMS, so an element whose gradient is ~1e-8 (a
dead unit) turns a last-bit difference of the summation order into a visible share of a step;
measured: at most 0.006 * lr per update over 5 updates of every algorithm.
"""


class Recorder:
    """A metric sink that keeps everything (a stand-in for the MLflow sink)."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []
        self.checkpoints: list[int] = []

    def write(self, metrics: list[Metric]) -> None:
        self.metrics.extend(metrics)

    def on_checkpoint(self, path, step) -> None:
        self.checkpoints.append(step)

    def on_evaluation(self, history) -> None:
        pass

    def untimed(self) -> list[Metric]:
        return [m for m in self.metrics if m[0] not in TIMED]


def config(seed: int, algo: str = "ddqn", **overrides: Any) -> TrainConfig:
    cfg = apply_overrides(TrainConfig(), load_preset("minatar-smoke"))
    cfg.game = "breakout"
    cfg.seed = seed
    cfg.agent.algo = algo
    base = {
        "run.total_steps": 600,
        "run.learning_starts": 200,
        "run.eval_every": 300,
        "run.eval_episodes": 2,
        "run.eval_envs": 1,
        "run.log_every": 100,
        "run.checkpoint_every": 300,
        "run.plasticity_every": 300,
        "agent.target_update": 100,
    }
    return apply_overrides(cfg, {**base, **overrides})


def weights(runner: Runner) -> dict[str, dict[str, torch.Tensor]]:
    return runner.agent.weights_state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for role in a:
        for name in a[role]:
            assert torch.equal(a[role][name], b[role][name]), f"{role}.{name}"


def train_alone(cfg: TrainConfig, tmp_path, **kwargs: Any) -> tuple[Runner, Recorder]:
    sink = Recorder()
    runner = Runner(cfg, tmp_path / f"alone-{cfg.seed}", sink, progress=False, **kwargs)
    assert runner.train() == "finished"
    runner.close()
    return runner, sink


def build_population(
    configs: list[TrainConfig], tmp_path, batching: str = "loop", **kwargs: Any
) -> tuple[PopulationRunner, list[Recorder]]:
    sinks = [Recorder() for _ in configs]
    runners = [
        Runner(cfg, tmp_path / f"member-{cfg.seed}", sink, progress=False, **kwargs)
        for cfg, sink in zip(configs, sinks, strict=True)
    ]
    return PopulationRunner(runners, batching), sinks


@pytest.mark.parametrize(
    ("algo", "overrides"),
    [
        ("ddqn", {}),
        ("dqv", {"sparsity.regime": "set", "sparsity.sparsity": 0.7, "sparsity.update_every": 100}),
        (
            "dqv-max",
            {"sparsity.regime": "gmp", "sparsity.sparsity": 0.6, "sparsity.update_every": 50},
        ),
    ],
)
def test_loop_population_member_is_bit_identical_to_training_alone(algo, overrides, tmp_path):
    seeds = [3, 0, 7]
    configs = [config(seed, algo, **overrides) for seed in seeds]
    population, sinks = build_population(configs, tmp_path)
    assert population.population.batching == "loop"
    assert population.train() == ["finished"] * 3
    population.close()
    for cfg, member, sink in zip(configs, population.runners, sinks, strict=True):
        alone, alone_sink = train_alone(cfg, tmp_path)
        assert sink.untimed() == alone_sink.untimed(), f"metrics of seed {cfg.seed}"
        assert sink.checkpoints == alone_sink.checkpoints == [300, 600]
        assert member.eval_history == alone.eval_history
        assert member.episode_scores == alone.episode_scores
        assert_same_weights(weights(member), weights(alone))
        ours, theirs = member.agent.state_dict(), alone.agent.state_dict()
        assert_same_nested(ours["optimizers"], theirs["optimizers"])
        assert_same_nested(ours["targets"], theirs["targets"])
        if overrides:
            assert torch.equal(
                torch.cat([m.flatten() for m in member.sparsity.mask.values()]),
                torch.cat([m.flatten() for m in alone.sparsity.mask.values()]),
            )
    # The members really differ from one another (the test would pass vacuously otherwise).
    first, second = (weights(r)["q"]["head.weight"] for r in population.runners[:2])
    assert not torch.equal(first, second)


def assert_same_nested(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_nested(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_member_with_initial_weights_and_mask_matches_alone(tmp_path):
    """A transfer-shaped member: its own starting weights and a static mask."""
    base = config(0, **{"sparsity.regime": "static"})
    donor = Runner(config(11), tmp_path / "donor", progress=False)
    start = {"q": {k: v for k, v in donor.initial_weights()["q"].items() if "encoder" in k}}
    gen = torch.Generator().manual_seed(5)
    mask = {
        name: torch.rand(p.shape, generator=gen) > 0.8
        for name, p in donor.agent.named_parameters().items()
        if "encoder" in name and name.endswith("weight")
    }
    donor.close()
    configs = [base, replace(base, seed=1)]
    population, sinks = build_population(
        configs, tmp_path, initial_weights=start, initial_mask=mask
    )
    population.train()
    population.close()
    alone, alone_sink = train_alone(base, tmp_path, initial_weights=start, initial_mask=mask)
    assert sinks[0].untimed() == alone_sink.untimed()
    assert_same_weights(weights(population.runners[0]), weights(alone))
    pruned = ~mask["q.encoder.conv1.weight"]
    assert (
        population.runners[1].agent.named_parameters()["q.encoder.conv1.weight"][pruned] == 0
    ).all()


def test_population_resumes_bit_exactly_after_preemption(tmp_path):
    configs = [config(seed) for seed in (0, 1)]
    population, _ = build_population(configs, tmp_path / "a")
    for runner in population.runners:
        runner.begin()
    while population.step < 300:
        population.iterate()
    population._stop["stop"] = True
    assert [r.end() for r in population.runners] == ["preempted"] * 2
    population.close()
    resumed, _ = build_population(configs, tmp_path / "a")
    assert resumed.resume([None, None]) == 300
    assert resumed.train() == ["finished"] * 2
    resumed.close()
    straight, _ = build_population(configs, tmp_path / "b")
    straight.train()
    straight.close()
    for a, b in zip(resumed.runners, straight.runners, strict=True):
        assert_same_weights(weights(a), weights(b))
        assert a.eval_history == b.eval_history


def test_members_checkpoint_on_their_own(tmp_path):
    configs = [config(seed, **{"run.total_steps": 300}) for seed in (0, 1)]
    population, _ = build_population(configs, tmp_path)
    population.train()
    population.close()
    for cfg, runner in zip(configs, population.runners, strict=True):
        _, state, _ = load_checkpoint(runner.checkpoints.latest())
        assert state["config"]["seed"] == cfg.seed
        assert state["step"] == 300


def test_members_must_share_their_config(tmp_path):
    runners = [
        Runner(config(0), tmp_path / "a", progress=False),
        Runner(config(1, **{"agent.lr": 0.01}), tmp_path / "b", progress=False),
    ]
    with pytest.raises(ValueError, match=r"member 1 differs from member 0 in agent\.lr"):
        PopulationRunner(runners)
    for runner in runners:
        runner.close()


# ------------------------------------------------------------------ vmap: stated tolerance
def agent_config(algo: str) -> AgentConfig:
    return AgentConfig(algo=algo, encoder="minatar", lr=1e-3, max_grad_norm=0.5)


def build_agent(algo: str, seed: int):
    torch.manual_seed(seed)
    return make_agent(agent_config(algo), MINATAR, NUM_ACTIONS, "cpu")


@pytest.mark.parametrize("algo", ["ddqn", "dqv", "dqv-max"])
@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_population_update_matches_each_agent_alone(algo, batching):
    """Five updates of K=3 (one member masked) against three agents stepping alone."""
    alone = [build_agent(algo, seed) for seed in range(3)]
    members = [build_agent(algo, seed) for seed in range(3)]
    gen = torch.Generator().manual_seed(1)
    mask = {
        name: torch.rand(p.shape, generator=gen) > 0.5
        for name, p in alone[1].named_parameters().items()
        if name.endswith("weight")
    }
    alone[1].set_masks(mask)
    members[1].set_masks(mask)
    population = Population(members, batching)
    updates = 5
    for t in range(updates):
        batches = [make_batch(10 * t + k, size=16) for k in range(3)]
        expected = [agent.update(batch) for agent, batch in zip(alone, batches, strict=True)]
        got = population.update(batches)
        for e, g in zip(expected, got, strict=True):
            assert e.keys() == g.keys()
            for key in e:
                if batching == "loop":
                    assert torch.equal(e[key], g[key]), key
                else:
                    torch.testing.assert_close(g[key], e[key], rtol=VMAP_METRIC_RTOL, atol=1e-6)
    for a, m in zip(alone, members, strict=True):
        ours, theirs = m.named_parameters(), a.named_parameters()
        for name in theirs:
            if batching == "loop":
                assert torch.equal(ours[name], theirs[name]), name
            else:
                bound = VMAP_WEIGHT_ATOL_PER_UPDATE * 1e-3 * updates
                assert (ours[name] - theirs[name]).abs().max() <= bound, name
    masked = members[1].named_parameters()
    for name, keep in mask.items():
        assert (masked[name][~keep] == 0).all(), name  # exactly zero, in both batchings
    # Each member's optimiser state is its own and reachable through the member.
    for a, m in zip(alone, members, strict=True):
        state = m.state_dict()["optimizers"]
        assert [len(s["state"]) for s in state.values()] == [
            len(s["state"]) for s in a.state_dict()["optimizers"].values()
        ]


def test_vmap_acting_matches_each_member():
    members = [build_agent("ddqn", seed) for seed in range(4)]
    reference = copy.deepcopy(members)
    population = Population(members, "vmap")
    obs = [np.random.default_rng(k).integers(0, 2, (5, *MINATAR), dtype=np.uint8) for k in range(4)]
    rngs = [np.random.default_rng(k) for k in range(4)]
    ref_rngs = [np.random.default_rng(k) for k in range(4)]
    got = population.act(obs, [0.3] * 4, rngs)
    expected = [a.act(o, 0.3, r) for a, o, r in zip(reference, obs, ref_rngs, strict=True)]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    for r, ref in zip(rngs, ref_rngs, strict=True):
        assert r.bit_generator.state == ref.bit_generator.state


def test_vmap_population_trains_close_to_alone(tmp_path):
    """Whole runs: vmap members stay within tolerance of the loop members over 101 updates."""
    configs = [config(seed, **{"run.total_steps": 600, "run.eval_every": 0}) for seed in (0, 1)]
    loop, loop_sinks = build_population(configs, tmp_path / "loop", "loop")
    vmapped, vmap_sinks = build_population(configs, tmp_path / "vmap", "vmap")
    loop.train(), vmapped.train()
    loop.close(), vmapped.close()
    for a, b in zip(loop_sinks, vmap_sinks, strict=True):
        losses_a = [v for k, v, _ in a.untimed() if k == "train/td_loss"]
        losses_b = [v for k, v, _ in b.untimed() if k == "train/td_loss"]
        assert len(losses_a) == len(losses_b) > 0
        np.testing.assert_allclose(losses_b, losses_a, rtol=1e-3)
    for a, b in zip(loop.runners, vmapped.runners, strict=True):
        assert a.updates == b.updates == 101
        bound = VMAP_WEIGHT_ATOL_PER_UPDATE * a.config.agent.lr * a.updates
        for role, tensors in weights(a).items():
            for name, tensor in tensors.items():
                assert (weights(b)[role][name] - tensor).abs().max() <= bound, f"{role}.{name}"


def test_batching_is_resolved_by_device():
    assert resolve_batching("auto", "cpu") == "loop"
    assert resolve_batching("auto", "cuda") == "vmap"
    assert resolve_batching("vmap", "cpu") == "vmap"
    with pytest.raises(ValueError, match="unknown batching"):
        resolve_batching("threads", "cpu")


def test_bf16_population_update_matches_each_agent_alone():
    """agent.precision=bf16 reaches every member's forward bit for bit with loop batching; vmap
    (where autocast does not reach the stacked weights) is refused instead of running fp32."""

    def build(seed: int):
        torch.manual_seed(seed)
        return make_agent(replace(agent_config("ddqn"), precision="bf16"), MINATAR, NUM_ACTIONS)

    with pytest.raises(ValueError, match="needs batching=loop"):
        Population([build(seed) for seed in range(2)], "vmap")
    alone = [build(seed) for seed in range(2)]
    population = Population([build(seed) for seed in range(2)], "loop")
    batches = [make_batch(k, size=16) for k in range(2)]
    expected = [agent.update(batch) for agent, batch in zip(alone, batches, strict=True)]
    got = population.update(batches)
    for e, g in zip(expected, got, strict=True):
        for key in e:
            assert torch.equal(e[key], g[key]), key
