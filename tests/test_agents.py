"""DDQN, DQV and DQV-Max agents: acting, updates, target copies, checkpoints, gradient clipping."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from sparse_ticket.agents import DDQN, DQV, Agent, DQVMax, make_agent
from sparse_ticket.agents.targets import td_loss
from sparse_ticket.config import AgentConfig
from sparse_ticket.replay import ReplayBatch

ALGOS = ("ddqn", "dqv", "dqv-max")
MINATAR = (10, 10, 10)
NUM_ACTIONS = 6


def make_config(algo: str, **overrides: Any) -> AgentConfig:
    """A MinAtar-sized config; ``overrides`` replace fields."""
    return AgentConfig(**{"algo": algo, "encoder": "minatar", "lr": 1e-3, **overrides})


def build(algo: str, seed: int = 0, **overrides: Any) -> Agent:
    torch.manual_seed(seed)
    return make_agent(make_config(algo, **overrides), MINATAR, NUM_ACTIONS, "cpu")


def make_batch(seed: int = 0, size: int = 8, reward_scale: float = 1.0) -> ReplayBatch:
    """Random MinAtar transitions; the last one is terminal."""
    gen = torch.Generator().manual_seed(seed)
    terminals = torch.zeros(size)
    terminals[-1] = 1.0
    return ReplayBatch(
        obs=torch.randint(0, 2, (size, *MINATAR), dtype=torch.uint8, generator=gen),
        actions=torch.randint(0, NUM_ACTIONS, (size,), generator=gen),
        rewards=reward_scale * torch.randn(size, generator=gen),
        next_obs=torch.randint(0, 2, (size, *MINATAR), dtype=torch.uint8, generator=gen),
        terminals=terminals,
    )


def params_of(nets: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {
        f"{role}.{name}": p.detach().clone()
        for role, net in nets.items()
        for name, p in net.state_dict().items()
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    ("algo", "cls", "roles", "target_roles"),
    [
        ("ddqn", DDQN, {"q"}, {"q"}),
        ("dqv", DQV, {"q", "v"}, {"v"}),
        ("dqv-max", DQVMax, {"q", "v"}, {"q"}),
    ],
)
def test_make_agent_builds_each_algo(
    algo: str, cls: type[Agent], roles: set[str], target_roles: set[str]
) -> None:
    agent = build(algo)
    assert type(agent) is cls
    assert set(agent.networks()) == roles == set(agent.optimizers())
    assert set(agent.target_networks()) == target_roles
    assert agent.networks()["q"].num_outputs == NUM_ACTIONS
    if "v" in roles:
        assert agent.networks()["v"].num_outputs == 1
    for role, target in agent.target_networks().items():
        assert all(not p.requires_grad for p in target.parameters())
        assert same(params_of({role: target}), params_of({role: agent.networks()[role]}))
    for role, optimizer in agent.optimizers().items():
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.defaults["fused"] is True
        params = list(agent.networks()[role].parameters())
        assert [p for g in optimizer.param_groups for p in g["params"]] == params


def test_make_agent_rejects_unknown_algo() -> None:
    with pytest.raises(ValueError, match="ppo"):
        make_agent(make_config("ppo"), MINATAR, NUM_ACTIONS, "cpu")


def test_agent_rejects_unknown_loss() -> None:
    with pytest.raises(ValueError, match="l1"):
        build("ddqn", loss="l1")


@pytest.mark.parametrize("algo", ALGOS)
def test_greedy_act_is_argmax_of_q(algo: str) -> None:
    agent = build(algo)
    obs = make_batch(size=16).obs.numpy()
    actions = agent.act(obs, 0.0, np.random.default_rng(0))
    expected = agent.networks()["q"](torch.from_numpy(obs)).argmax(dim=1).numpy()
    assert actions.dtype == np.int64
    assert actions.shape == (16,)
    np.testing.assert_array_equal(actions, expected)


def test_random_act_is_uniform_and_skips_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = build("ddqn")

    def forbidden(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("the Q network must not run when every env explores")

    monkeypatch.setattr(agent.networks()["q"], "forward", forbidden)
    obs = np.zeros((6000, *MINATAR), dtype=np.uint8)
    actions = agent.act(obs, 1.0, np.random.default_rng(0))
    counts = np.bincount(actions, minlength=NUM_ACTIONS)
    assert actions.dtype == np.int64
    assert counts.sum() == 6000
    # 1000 expected per action, std ~29: 5 sigma is a generous but meaningful bound.
    assert np.all(np.abs(counts - 1000) < 150)
    np.testing.assert_array_equal(actions, agent.act(obs, 1.0, np.random.default_rng(0)))


def test_mixed_act_uses_greedy_actions_for_non_exploring_rows() -> None:
    agent = build("ddqn")
    obs = make_batch(size=64).obs.numpy()
    greedy = agent.act(obs, 0.0, np.random.default_rng(1))
    mixed = agent.act(obs, 0.5, np.random.default_rng(1))
    # Same rng stream: rows that did not explore must take the greedy action.
    explore = np.random.default_rng(1).random(64) < 0.5
    np.testing.assert_array_equal(mixed[~explore], greedy[~explore])


def test_act_rejects_wrong_observation_shape() -> None:
    agent = build("ddqn")
    with pytest.raises(ValueError, match="shape"):
        agent.act(np.zeros((2, 4, 10, 10), dtype=np.uint8), 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("algo", ALGOS)
def test_update_moves_online_networks_only(algo: str) -> None:
    agent = build(algo)
    online, targets = params_of(agent.networks()), params_of(agent.target_networks())
    metrics = agent.update(make_batch())
    expected_keys = {"td_loss", "q_mean", "grad_norm"}
    if algo != "ddqn":
        expected_keys |= {"v_loss", "q_loss", "v_mean", "v_grad_norm", "q_grad_norm"}
    assert set(metrics) == expected_keys
    for value in metrics.values():
        assert isinstance(value, torch.Tensor)
        assert value.dim() == 0
        assert not value.requires_grad
    after = params_of(agent.networks())
    for key in online:
        assert not torch.equal(online[key], after[key]), f"{key} did not change"
    assert same(targets, params_of(agent.target_networks()))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("clip_rewards", [True, False])
def test_update_losses_match_the_paper_targets(algo: str, clip_rewards: bool) -> None:
    """Recompute each loss from the pre-update networks with the formulas of the papers."""
    agent = build(algo, gamma=0.9, clip_rewards=clip_rewards)
    batch = make_batch(reward_scale=5.0)
    rewards = torch.sign(batch.rewards) if clip_rewards else batch.rewards
    not_done = 1.0 - batch.terminals
    with torch.no_grad():
        q_taken = agent.networks()["q"](batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
        if algo == "ddqn":
            best = agent.networks()["q"](batch.next_obs).argmax(1, keepdim=True)
            next_q = agent.target_networks()["q"](batch.next_obs).gather(1, best).squeeze(1)
            expected = {"td_loss": td_loss(q_taken, rewards + 0.9 * not_done * next_q, "huber")}
        else:
            v = agent.networks()["v"](batch.obs).squeeze(1)
            if algo == "dqv":
                next_v = agent.target_networks()["v"](batch.next_obs).squeeze(1)
                v_target = q_target = rewards + 0.9 * not_done * next_v
            else:
                next_max = agent.target_networks()["q"](batch.next_obs).amax(1)
                next_v = agent.networks()["v"](batch.next_obs).squeeze(1)  # online V
                v_target = rewards + 0.9 * not_done * next_max
                q_target = rewards + 0.9 * not_done * next_v
            expected = {
                "v_loss": td_loss(v, v_target, "huber"),
                "q_loss": td_loss(q_taken, q_target, "huber"),
                "v_mean": v.mean(),
            }
            expected["td_loss"] = expected["v_loss"] + expected["q_loss"]
    metrics = agent.update(batch)
    for key, value in {**expected, "q_mean": q_taken.mean()}.items():
        assert torch.allclose(metrics[key], value, rtol=1e-5, atol=1e-6), key


@pytest.mark.parametrize("algo", ALGOS)
def test_sync_target_copies_online_weights(algo: str) -> None:
    agent = build(algo)
    agent.update(make_batch())
    online = agent.networks()
    assert not same(params_of(agent.target_networks()), params_of(online))
    agent.sync_target()
    for role, target in agent.target_networks().items():
        assert same(params_of({role: target}), params_of({role: online[role]}))
        assert all(not p.requires_grad for p in target.parameters())


@pytest.mark.parametrize("algo", ALGOS)
def test_state_dict_roundtrip_reproduces_updates(algo: str) -> None:
    trained = build(algo, seed=0)
    for step in range(3):
        trained.update(make_batch(seed=step))
    state = roundtrip(trained.state_dict())
    resumed = build(algo, seed=99)
    assert not same(params_of(resumed.networks()), params_of(trained.networks()))
    resumed.load_state_dict(state)
    for step in range(3, 6):
        batch = make_batch(seed=step)
        expected, got = trained.update(batch), resumed.update(batch)
        for key in expected:
            assert torch.equal(expected[key], got[key]), key
    assert same(params_of(trained.networks()), params_of(resumed.networks()))
    assert same(params_of(trained.target_networks()), params_of(resumed.target_networks()))


@pytest.mark.parametrize("algo", ALGOS)
def test_load_state_dict_does_not_alias_the_checkpoint(algo: str) -> None:
    """Torch's optimiser loader keeps fitting tensors as given: the agent must copy them."""
    source = build(algo)
    source.update(make_batch())
    state = roundtrip(source.state_dict())
    pristine = roundtrip(state)
    first, second = build(algo, seed=1), build(algo, seed=2)
    first.load_state_dict(state)
    second.load_state_dict(state)
    first.update(make_batch(seed=1))  # must move neither the checkpoint nor the other agent
    for role, optimizer_state in pristine["optimizers"].items():
        for index, moments in optimizer_state["state"].items():
            for key, value in moments.items():
                assert torch.equal(state["optimizers"][role]["state"][index][key], value), key
    batch = make_batch(seed=2)
    source_metrics, second_metrics = source.update(batch), second.update(batch)
    for key, value in source_metrics.items():
        assert torch.equal(second_metrics[key], value), key


def test_state_dict_is_a_snapshot_not_an_alias() -> None:
    agent = build("ddqn")
    state = agent.state_dict()
    weights = agent.weights_state_dict()
    before = state["networks"]["q"]["head.weight"].clone()
    agent.update(make_batch())
    assert torch.equal(state["networks"]["q"]["head.weight"], before)
    assert torch.equal(weights["q"]["head.weight"], before)


def test_load_state_dict_rejects_mismatched_architecture() -> None:
    agent = build("ddqn")
    torch.manual_seed(0)
    other = make_agent(make_config("ddqn"), (4, 10, 10), NUM_ACTIONS, "cpu")
    before = params_of(agent.networks())
    with pytest.raises(ValueError, match=r"encoder\.conv1\.weight"):
        agent.load_state_dict(roundtrip(other.state_dict()))
    assert same(before, params_of(agent.networks()))  # nothing was half-loaded
    with pytest.raises(ValueError, match="dqv"):
        agent.load_state_dict(build("dqv").state_dict())


@pytest.mark.parametrize("algo", ALGOS)
def test_weights_state_dict_roundtrip_and_target_sync(algo: str) -> None:
    source = build(algo, seed=0)
    source.update(make_batch())
    weights = roundtrip(source.weights_state_dict())
    assert set(weights) == set(source.networks())
    agent = build(algo, seed=1)
    agent.load_weights_state_dict(weights)
    assert same(params_of(agent.networks()), params_of(source.networks()))
    for role, target in agent.target_networks().items():
        assert same(params_of({role: target}), params_of({role: source.networks()[role]}))
    bad = {role: {**sd, "head.weight": torch.zeros(2, 2)} for role, sd in weights.items()}
    with pytest.raises(ValueError, match=r"head\.weight"):
        agent.load_weights_state_dict(bad)


def record_step_norms(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    """Wrap every optimizer's ``step`` to record the global gradient norm it is handed."""
    seen: dict[str, list[float]] = {role: [] for role in agent.optimizers()}
    for role, optimizer in agent.optimizers().items():
        original = optimizer.step

        def step(
            *args: Any,
            _role: str = role,
            _opt: Any = optimizer,
            _orig: Any = original,
            **kwargs: Any,
        ) -> Any:
            grads = [p.grad for g in _opt.param_groups for p in g["params"] if p.grad is not None]
            seen[_role].append(
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g) for g in grads])
                ).item()
            )
            return _orig(*args, **kwargs)

        monkeypatch.setattr(optimizer, "step", step)
    return seen


@pytest.mark.parametrize("algo", ALGOS)
def test_gradient_clipping_is_applied_before_the_step(
    algo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    max_norm = 1e-3
    agent = build(algo, max_grad_norm=max_norm, clip_rewards=False)
    seen = record_step_norms(agent, monkeypatch)
    metrics = agent.update(make_batch(reward_scale=1000.0))
    assert metrics["grad_norm"].item() > 100 * max_norm
    for role, norms in seen.items():
        assert len(norms) == 1, role
        assert norms[0] <= max_norm * (1 + 1e-5), role
    if algo != "ddqn":
        assert metrics["grad_norm"] == torch.maximum(metrics["v_grad_norm"], metrics["q_grad_norm"])


@pytest.mark.parametrize("algo", ALGOS)
def test_zero_max_grad_norm_disables_clipping(algo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = build(algo, max_grad_norm=0.0, clip_rewards=False)
    seen = record_step_norms(agent, monkeypatch)
    metrics = agent.update(make_batch(reward_scale=1000.0))
    per_role = (
        {"q": metrics["grad_norm"]}
        if algo == "ddqn"
        else {"q": metrics["q_grad_norm"], "v": metrics["v_grad_norm"]}
    )
    for role, norm in per_role.items():
        assert norm.item() > 1.0
        assert seen[role][0] == pytest.approx(norm.item(), rel=1e-5)


def test_ddqn_reduces_td_loss_on_a_fixed_batch() -> None:
    agent = build("ddqn", loss="mse")
    batch = make_batch(size=32)
    losses = [agent.update(batch)["td_loss"] for _ in range(50)]
    first, last = losses[0].item(), torch.stack(losses[-5:]).mean().item()
    assert last < 0.2 * first, (first, last)


@pytest.mark.parametrize("algo", ["dqv", "dqv-max"])
def test_each_roles_encoder_init_is_independent_of_the_action_count(algo):
    """Each network draws its init from its own stream (derive_seed(init_seed, role)): the V
    encoder of a 4-action game equals that of a 6-action game at one seed. Drawing V after Q from
    one generator made it depend on the size of Q's head, so DQV pairs across games differed."""
    four = make_agent(make_config(algo), MINATAR, 4, "cpu", init_seed=7)
    six = make_agent(make_config(algo), MINATAR, 6, "cpu", init_seed=7)
    for role in ("q", "v"):
        a, b = four.weights_state_dict()[role], six.weights_state_dict()[role]
        for name in a:
            if name.startswith("encoder."):
                assert torch.equal(a[name], b[name]), (role, name)
    other = make_agent(make_config(algo), MINATAR, 4, "cpu", init_seed=8)
    w = "encoder.conv1.weight"
    assert not torch.equal(four.weights_state_dict()["v"][w], other.weights_state_dict()["v"][w])
    # The two roles are different draws, not one init copied.
    assert not torch.equal(four.weights_state_dict()["q"][w], four.weights_state_dict()["v"][w])
