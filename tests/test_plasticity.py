"""Plasticity metrics: exact values on hand-built tensors, and the probe on real small agents."""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sparse_ticket.agents import Agent, make_agent
from sparse_ticket.config import AgentConfig
from sparse_ticket.metrics import (
    PlasticityProbe,
    dormant_ratio,
    dormant_ratios,
    encoder_activations,
    gradient_norm,
    parameter_norm,
    srank,
    unit_scores,
)
from sparse_ticket.nets import build_network
from sparse_ticket.replay import ReplayBatch

MINATAR = (10, 10, 10)
NUM_ACTIONS = 6
TAU_KEYS = ("tau_0", "tau_0.025", "tau_0.1")


# ------------------------------------------------------------------------------- helpers
def build(algo: str, seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    config = AgentConfig(algo=algo, encoder="minatar", lr=1e-3)
    return make_agent(config, MINATAR, NUM_ACTIONS, "cpu")


def make_batch(seed: int = 0, size: int = 16) -> ReplayBatch:
    gen = torch.Generator().manual_seed(seed)
    terminals = torch.zeros(size)
    terminals[-1] = 1.0
    return ReplayBatch(
        obs=torch.randint(0, 2, (size, *MINATAR), dtype=torch.uint8, generator=gen),
        actions=torch.randint(0, NUM_ACTIONS, (size,), generator=gen),
        rewards=torch.randn(size, generator=gen),
        next_obs=torch.randint(0, 2, (size, *MINATAR), dtype=torch.uint8, generator=gen),
        terminals=terminals,
    )


def trained(algo: str) -> Agent:
    """An agent after two updates: optimiser state exists and every ``.grad`` is populated."""
    agent = build(algo)
    for seed in (1, 2):
        agent.update(make_batch(seed, size=8))
    return agent


def roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def expected_keys(roles: tuple[str, ...]) -> set[str]:
    keys = {"q/q_mean", "q/q_var"}
    for role in roles:
        keys |= {f"{role}/srank", f"{role}/param_norm", f"{role}/grad_norm"}
        for layer in ("conv1", "fc", "overall"):
            keys |= {f"{role}/dormant/{layer}/{tau}" for tau in TAU_KEYS}
    return keys


# ----------------------------------------------------------------------- dormant units
LINEAR = torch.tensor([[0.0, 1.0, 2.0, 5.0], [0.0, 1.0, 2.0, 3.0]])  # per-unit means 0, 1, 2, 4


def test_unit_scores_of_a_linear_layer() -> None:
    # Layer mean of (0, 1, 2, 4) is 1.75.
    expected = torch.tensor([0.0, 1.0, 2.0, 4.0]) / 1.75
    torch.testing.assert_close(unit_scores(LINEAR), expected)
    torch.testing.assert_close(unit_scores(-LINEAR), expected)  # |activation|


def test_dormant_ratio_thresholds() -> None:
    # Scores 0, 0.571, 1.143, 2.286.
    assert dormant_ratio(LINEAR, 0.0) == 0.25
    assert dormant_ratio(LINEAR, 0.6) == 0.5
    assert dormant_ratio(LINEAR, 0.5) == 0.25
    assert dormant_ratio(LINEAR, 1.2) == 0.75
    assert dormant_ratio(LINEAR, 1 / 1.75) == 0.5  # <= tau, not < tau


def test_unit_scores_of_a_conv_map_average_over_batch_and_space() -> None:
    act = torch.zeros(2, 3, 2, 2)
    act[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # channel 0: sum 10 + 6 -> mean 16/8 = 2
    act[1, 0] = torch.tensor([[0.0, 0.0], [0.0, 6.0]])
    act[1, 1] = torch.tensor([[8.0, 0.0], [0.0, 0.0]])  # channel 1: 8/8 = 1; channel 2: 0
    # Layer mean (2 + 1 + 0) / 3 = 1.
    torch.testing.assert_close(unit_scores(act), torch.tensor([2.0, 1.0, 0.0]))
    assert dormant_ratio(act, 0.0) == pytest.approx(1 / 3)
    assert dormant_ratio(act, 1.0) == pytest.approx(2 / 3)


def test_silent_layer_scores_zero_and_is_all_dormant() -> None:
    scores = unit_scores(torch.zeros(4, 5))
    assert torch.equal(scores, torch.zeros(5))
    assert dormant_ratio(torch.zeros(4, 5), 0.0) == 1.0


def test_unit_scores_rejects_a_vector() -> None:
    with pytest.raises(ValueError, match="units"):
        unit_scores(torch.ones(3))


def test_dormant_ratios_per_layer_and_unit_weighted_overall() -> None:
    conv = torch.zeros(1, 2, 1, 1)
    conv[0, 1] = 3.0  # channel scores 0, 2 -> one of 2 dead
    ratios = dormant_ratios({"conv1": conv, "fc": LINEAR}, taus=(0.0, 0.6))
    assert ratios == pytest.approx(
        {
            "conv1/tau_0": 0.5,
            "conv1/tau_0.6": 0.5,
            "fc/tau_0": 0.25,
            "fc/tau_0.6": 0.5,
            # Unit-weighted over 2 + 4 units: (1 + 1) / 6 and (1 + 2) / 6.
            "overall/tau_0": 2 / 6,
            "overall/tau_0.6": 3 / 6,
        }
    )
    assert list(dormant_ratios({"fc": LINEAR})) == [
        "fc/tau_0",
        "fc/tau_0.025",
        "fc/tau_0.1",
        "overall/tau_0",
        "overall/tau_0.025",
        "overall/tau_0.1",
    ]


def test_dormant_ratios_rejects_empty_and_reserved_names() -> None:
    with pytest.raises(ValueError, match="empty"):
        dormant_ratios({})
    with pytest.raises(ValueError, match="overall"):
        dormant_ratios({"overall": LINEAR})


# ------------------------------------------------------------------------------- srank
def test_srank_on_hand_built_matrices() -> None:
    # Cumulative 3/6.001 = 0.4999, 5/6.001 = 0.833, 6/6.001 = 0.99983 >= 0.99 -> 3.
    assert srank(torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.001]))) == 3
    # 0.75 < 0.99, 1.0 >= 0.99 -> 4; with delta 0.3: 0.75 >= 0.7 -> 3.
    assert srank(torch.eye(4)) == 4
    assert srank(torch.eye(4), delta=0.3) == 3
    rank_one = torch.outer(torch.arange(1.0, 9.0), torch.tensor([1.0, -2.0, 0.5]))
    assert srank(rank_one) == 1
    assert srank(torch.zeros(5, 3)) == 0
    # Rows permuted and signs flipped: singular values, hence srank, unchanged.
    assert srank(-torch.diag(torch.tensor([1.0, 0.001, 2.0, 3.0]))[[2, 0, 3, 1]]) == 3


def test_srank_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="features"):
        srank(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="delta"):
        srank(torch.eye(2), delta=1.0)


# ------------------------------------------------------------------------------- norms
def test_parameter_and_gradient_norms_by_hand() -> None:
    named = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0], [12.0]])}
    assert parameter_norm(named) == pytest.approx(13.0)  # sqrt(9 + 16 + 144)
    assert parameter_norm(list(named.items())) == pytest.approx(13.0)
    assert gradient_norm({"g": torch.tensor([1.0, 2.0, 2.0])}) == pytest.approx(3.0)
    assert parameter_norm({}) == 0.0
    net = torch.nn.Linear(3, 2)
    by_hand = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in net.parameters()))
    assert parameter_norm(net.named_parameters()) == pytest.approx(by_hand)


# ------------------------------------------------------------------------- activations
def test_minatar_activations_are_the_forward_computation() -> None:
    torch.manual_seed(0)
    net = build_network("minatar", MINATAR, NUM_ACTIONS)
    obs = make_batch().obs
    acts = encoder_activations(net, obs)
    assert list(acts) == ["conv1", "fc"]
    # The encoder's forward by hand: bitwise the same operations.
    conv1 = F.relu(net.encoder.conv1(obs.float()))
    assert torch.equal(acts["conv1"], conv1)
    assert torch.equal(acts["fc"], F.relu(net.encoder.fc(conv1.flatten(1))))
    assert torch.equal(acts["fc"], net.features(obs))
    assert not net.encoder.conv1._forward_hooks and not net.encoder.fc._forward_hooks


def test_nature_activations_match_features_and_shapes() -> None:
    torch.manual_seed(0)
    net = build_network("nature", (4, 84, 84), NUM_ACTIONS)
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    acts = encoder_activations(net, obs)
    shapes = {name: tuple(a.shape) for name, a in acts.items()}
    assert shapes == {
        "conv1": (2, 32, 20, 20),
        "conv2": (2, 64, 9, 9),
        "conv3": (2, 64, 7, 7),
        "fc": (2, 512),
    }
    assert torch.equal(acts["fc"], net.features(obs))
    # The hand computation differs only in memory layout (NHWC on CPU), hence close, not equal.
    torch.testing.assert_close(acts["conv1"], F.relu(net.encoder.conv1(obs.float() / 255.0)))


def test_activations_detect_an_encoder_without_final_relu() -> None:
    torch.manual_seed(0)
    net = build_network("minatar", MINATAR, NUM_ACTIONS)
    net.encoder.forward = lambda obs: net.encoder.fc(  # type: ignore[method-assign]
        F.relu(net.encoder.conv1(obs.float())).flatten(1)
    )
    with pytest.raises(RuntimeError, match="ReLU"):
        encoder_activations(net, make_batch().obs)
    assert not net.encoder.fc._forward_hooks


# ------------------------------------------------------------------------------- probe
@pytest.mark.parametrize(("algo", "roles"), [("ddqn", ("q",)), ("dqv", ("q", "v"))])
def test_probe_measures_every_metric(algo: str, roles: tuple[str, ...]) -> None:
    agent = trained(algo)
    probe = PlasticityProbe(make_batch(7))
    metrics = probe.measure(agent)
    assert set(metrics) == expected_keys(roles)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    obs = probe.batch.obs
    for role, net in agent.networks().items():
        acts = encoder_activations(net, obs)
        assert torch.equal(acts["fc"], net.features(obs))
        assert metrics[f"{role}/srank"] == srank(net.features(obs))
        assert 1 <= metrics[f"{role}/srank"] <= 16
        assert metrics[f"{role}/param_norm"] == pytest.approx(
            parameter_norm(net.named_parameters())
        )
        for key, ratio in dormant_ratios(acts).items():
            assert metrics[f"{role}/dormant/{key}"] == ratio
    grads = agent.gradients(probe.batch)
    for role in roles:
        own = {n: g for n, g in grads.items() if n.startswith(f"{role}.")}
        assert metrics[f"{role}/grad_norm"] == pytest.approx(gradient_norm(own))
        assert metrics[f"{role}/grad_norm"] > 0
    q = agent.networks()["q"](obs)
    assert metrics["q/q_mean"] == pytest.approx(q.mean().item(), rel=1e-5)
    assert metrics["q/q_var"] == pytest.approx(q.var(correction=0).item(), rel=1e-5)


@pytest.mark.parametrize("algo", ["ddqn", "dqv"])
def test_probe_leaves_the_agent_unchanged(algo: str) -> None:
    agent = trained(algo)
    params = agent.named_parameters()
    weights = {n: p.detach().clone() for n, p in params.items()}
    grad_ids = {n: id(p.grad) for n, p in params.items()}
    grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    assert len(grads) == len(params)  # the updates left every .grad populated
    optim = copy.deepcopy({r: o.state_dict() for r, o in agent.optimizers().items()})
    modes = {r: net.training for r, net in agent.networks().items()}

    PlasticityProbe(make_batch(3)).measure(agent)

    for name, param in agent.named_parameters().items():
        assert torch.equal(param, weights[name]), name
        assert id(param.grad) == grad_ids[name] and torch.equal(param.grad, grads[name]), name
    for role, opt in agent.optimizers().items():
        state = opt.state_dict()
        assert state["param_groups"] == optim[role]["param_groups"]
        for index, moments in optim[role]["state"].items():
            for key, value in moments.items():
                assert torch.equal(state["state"][index][key], value), (role, index, key)
    assert {r: net.training for r, net in agent.networks().items()} == modes
    for net in agent.networks().values():
        assert all(not m._forward_hooks for m in net.modules())


def test_probe_keeps_grad_none_when_it_was_none() -> None:
    agent = build("ddqn")
    PlasticityProbe(make_batch()).measure(agent)
    assert all(p.grad is None for p in agent.named_parameters().values())


def test_probe_keeps_clones_of_the_batch() -> None:
    agent = build("ddqn")
    batch = make_batch()
    probe = PlasticityProbe(batch)
    before = probe.measure(agent)
    for tensor in batch:
        tensor.zero_()  # what the replay's next sample does to its scratch views
    assert probe.measure(agent) == before


@pytest.mark.parametrize("algo", ["ddqn", "dqv"])
def test_probe_state_dict_roundtrip_gives_identical_measurements(algo: str) -> None:
    agent = trained(algo)
    probe = PlasticityProbe(make_batch(5))
    state = roundtrip(probe.state_dict())
    assert set(state) == set(ReplayBatch._fields)
    restored = PlasticityProbe.from_state_dict(state)
    assert restored.size == probe.size == 16
    assert restored.measure(agent) == probe.measure(agent)


def test_probe_rejects_bad_batches_and_states() -> None:
    batch = make_batch()
    with pytest.raises(ValueError, match="B >= 1"):
        PlasticityProbe(batch._replace(actions=batch.actions[:3]))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        PlasticityProbe(batch._replace(obs=batch.obs[0]))
    state = PlasticityProbe(batch).state_dict()
    del state["terminals"]
    with pytest.raises(ValueError, match="expected keys"):
        PlasticityProbe.from_state_dict(state)


def test_a_dead_fc_unit_counts_as_dormant_at_tau_zero() -> None:
    agent = build("ddqn")
    probe = PlasticityProbe(make_batch())
    fc_units = agent.q.encoder.fc.out_features
    before = probe.measure(agent)
    scores = unit_scores(encoder_activations(agent.q, probe.batch.obs)["fc"])
    unit = int(scores.argmax())  # a unit that is certainly alive
    with torch.no_grad():
        agent.q.encoder.fc.weight[unit] = 0.0
        agent.q.encoder.fc.bias[unit] = 0.0
    after = probe.measure(agent)
    acts = encoder_activations(agent.q, probe.batch.obs)
    assert torch.equal(acts["fc"][:, unit], torch.zeros(probe.size))
    assert unit_scores(acts["fc"])[unit] == 0.0
    dead = round(before["q/dormant/fc/tau_0"] * fc_units) + 1
    assert after["q/dormant/fc/tau_0"] == pytest.approx(dead / fc_units)
    conv_channels = agent.q.encoder.conv1.out_channels
    overall_dead = dead + round(after["q/dormant/conv1/tau_0"] * conv_channels)
    assert after["q/dormant/overall/tau_0"] == pytest.approx(
        overall_dead / (fc_units + conv_channels)
    )
