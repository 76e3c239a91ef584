"""``agent.precision``: what bf16 changes (the forward's arithmetic) and what it must not.

The contract (``docs/protocol.md``, "Precision"): a bf16 network computes its convolutions and
matrix products in bfloat16 and nothing else; its parameters, gradients, Adam moments, outputs,
TD targets and losses are float32; fp32 is today's arithmetic exactly. And the glibc tuning of
``run.tune_malloc`` is applied by the runner.
"""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

from sparse_ticket.agents import make_agent
from sparse_ticket.config import AgentConfig, ConfigError, TrainConfig, apply_overrides, validate
from sparse_ticket.malloc import tune_malloc
from sparse_ticket.nets import build_network
from sparse_ticket.replay import ReplayBatch

ATARI = (4, 84, 84)
MINATAR = (10, 10, 10)


def nature_reference(net, obs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The Nature network's forward written out with every operand cast to ``dtype`` by hand."""
    enc = net.encoder

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype)

    x = obs.to(dtype) * (1.0 / 255.0)
    for conv, stride in ((enc.conv1, 4), (enc.conv2, 2), (enc.conv3, 1)):
        x = F.relu(F.conv2d(x, cast(conv.weight), cast(conv.bias), stride=stride))
    x = F.relu(F.linear(x.flatten(1), cast(enc.fc.weight), cast(enc.fc.bias)))
    return F.linear(x, cast(net.head.weight), cast(net.head.bias)).float()


def test_fp32_forward_is_the_float32_network_exactly():
    torch.manual_seed(0)
    net = build_network("nature", ATARI, 6, "fp32")
    obs = torch.randint(0, 256, (5, *ATARI), dtype=torch.uint8)
    with torch.no_grad():
        out = net(obs)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, nature_reference(net, obs, torch.float32))


def test_bf16_forward_computes_in_bf16_and_returns_float32():
    torch.manual_seed(0)
    net = build_network("nature", ATARI, 6, "bf16")
    obs = torch.randint(0, 256, (5, *ATARI), dtype=torch.uint8)
    with torch.no_grad():
        out = net(obs)
        bf16 = nature_reference(net, obs, torch.bfloat16)
        fp32 = nature_reference(net, obs, torch.float32)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in net.parameters())
    # bf16 arithmetic, not fp32 relabelled: it differs from fp32 by bf16's rounding (8 bits of
    # mantissa, ~0.4% per operand) and matches the hand-cast bf16 forward far more closely.
    gap_fp32 = (out - fp32).abs().max().item()
    gap_bf16 = (out - bf16).abs().max().item()
    scale = fp32.abs().max().item()
    assert 1e-4 * scale < gap_fp32 < 5e-2 * scale
    assert gap_bf16 < gap_fp32 / 4


def test_bf16_features_are_float32():
    net = build_network("minatar", MINATAR, 6, "bf16")
    obs = torch.randint(0, 2, (3, *MINATAR), dtype=torch.uint8)
    assert net.features(obs).dtype == torch.float32


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        build_network("minatar", MINATAR, 6, "fp16")
    config = TrainConfig()
    apply_overrides(config, {"agent.precision": "fp16"})
    with pytest.raises(ConfigError, match=r"agent\.precision must be fp32 or bf16"):
        validate(config)


def minatar_batch(size: int = 16) -> ReplayBatch:
    gen = torch.Generator().manual_seed(1)
    return ReplayBatch(
        obs=torch.randint(0, 2, (size, *MINATAR), dtype=torch.uint8, generator=gen),
        actions=torch.randint(0, 6, (size,), generator=gen),
        rewards=torch.randn(size, generator=gen),
        next_obs=torch.randint(0, 2, (size, *MINATAR), dtype=torch.uint8, generator=gen),
        terminals=torch.zeros(size),
    )


@pytest.mark.parametrize("algo", ["ddqn", "dqv", "dqv-max"])
def test_bf16_agent_keeps_losses_gradients_and_adam_in_float32(algo):
    config = AgentConfig(algo=algo, encoder="minatar", precision="bf16")
    agent = make_agent(config, MINATAR, 6, "cpu", init_seed=0)
    losses, metrics = agent.losses(minatar_batch())
    assert all(loss.dtype == torch.float32 for loss in losses.values())
    assert all(value.dtype == torch.float32 for value in metrics.values())
    agent.update(minatar_batch())
    for role, optimizer in agent.optimizers().items():
        for param in agent.networks()[role].parameters():
            assert param.dtype == param.grad.dtype == torch.float32
            state = optimizer.state[param]
            assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    for target in agent.target_networks().values():
        assert all(p.dtype == torch.float32 for p in target.parameters())


def test_bf16_and_fp32_agents_start_from_the_same_weights_and_diverge_slightly():
    """Precision changes the arithmetic, not the initialisation: rewinding and tickets see the
    same init in either mode; one update apart, the weights differ by bf16 rounding only."""
    agents = {
        p: make_agent(AgentConfig(encoder="minatar", precision=p), MINATAR, 6, "cpu", 0)
        for p in ("fp32", "bf16")
    }
    before = {p: a.weights_state_dict() for p, a in agents.items()}
    for name, tensor in before["fp32"]["q"].items():
        assert torch.equal(tensor, before["bf16"]["q"][name]), name
    for agent in agents.values():
        agent.update(minatar_batch())
    after = {p: a.weights_state_dict()["q"] for p, a in agents.items()}
    step = (after["fp32"]["encoder.fc.weight"] - before["fp32"]["q"]["encoder.fc.weight"]).abs()
    gap = (after["fp32"]["encoder.fc.weight"] - after["bf16"]["encoder.fc.weight"]).abs()
    assert gap.max() > 0  # bf16 did run
    assert gap.max() <= step.max() * 2.5  # Adam's first step is +-lr wherever the sign agrees


def test_tune_malloc_is_accepted_by_glibc():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert tune_malloc() is True
    assert tune_malloc() is True  # idempotent


def test_plasticity_activations_are_the_bf16_networks_own():
    """The dormant-unit metrics see what a bf16 network computes, not an fp32 re-run of it."""
    from sparse_ticket.metrics.plasticity import encoder_activations

    torch.manual_seed(0)
    net = build_network("nature", ATARI, 6, "bf16")
    obs = torch.randint(0, 256, (4, *ATARI), dtype=torch.uint8)
    activations = encoder_activations(net, obs)
    assert all(a.dtype == torch.float32 for a in activations.values())
    assert torch.equal(activations["fc"], net.features(obs))
    torch.manual_seed(0)
    fp32_net = build_network("nature", ATARI, 6, "fp32")
    assert torch.equal(fp32_net.encoder.fc.weight, net.encoder.fc.weight)  # the same weights
    fp32 = encoder_activations(fp32_net, obs)
    assert not torch.equal(activations["fc"], fp32["fc"])  # in other arithmetic
    torch.testing.assert_close(activations["fc"], fp32["fc"], rtol=0.05, atol=0.05)
