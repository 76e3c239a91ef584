"""Sparsity masks on the agents: masked steps, Adam state, dense gradients, checkpoints.

A mask is ``dict[str, torch.Tensor]``, flat parameter name ``"{role}.{param}"`` -> bool tensor (True
= active), kept apart from the networks; the agent enforces it in every optimiser step.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch

from sparse_ticket.agents import Agent, make_agent
from sparse_ticket.agents.masking import ADAM_MOMENTS
from sparse_ticket.config import AgentConfig
from sparse_ticket.replay import ReplayBatch
from tests.test_agents import make_batch as agents_batch

ALGOS = ("ddqn", "dqv", "dqv-max")
MINATAR = (10, 10, 10)
NUM_ACTIONS = 6
BATCH = 32
# The weights a ticket prunes in these tests: the encoder's and one head layer.
MASKED = ("encoder.conv1.weight", "encoder.fc.weight", "head.weight")


def build(algo: str, seed: int = 0, **overrides: Any) -> Agent:
    """A MinAtar-sized agent, weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    config = AgentConfig(**{"algo": algo, "encoder": "minatar", "lr": 1e-3, **overrides})
    return make_agent(config, MINATAR, NUM_ACTIONS, "cpu")


def make_batch(seed: int = 0, size: int = BATCH, reward_scale: float = 1.0) -> ReplayBatch:
    """Random 0/1 MinAtar transitions (the shared test helper, at this file's batch size)."""
    return agents_batch(seed, size, reward_scale)


def random_mask(agent: Agent, sparsity: float = 0.8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random mask with ``sparsity`` of each ``MASKED`` weight of every role inactive."""
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(param.shape, generator=gen) >= sparsity
        for name, param in agent.named_parameters().items()
        if name.split(".", 1)[1] in MASKED
    }


def target_parameters(agent: Agent) -> dict[str, torch.Tensor]:
    """Target-network parameters by flat name, as :meth:`Agent.named_parameters` names them."""
    return {
        f"{role}.{name}": param
        for role, network in agent.target_networks().items()
        for name, param in network.named_parameters()
    }


def adam_state(agent: Agent, flat: str) -> dict[str, torch.Tensor]:
    """The Adam state of the online parameter ``flat`` (empty before the first step)."""
    role = flat.split(".", 1)[0]
    return agent.optimizers()[role].state.get(agent.named_parameters()[flat], {})


def snapshot(agent: Agent) -> dict[str, torch.Tensor]:
    """Clones of every online and target parameter and every Adam state tensor."""
    out = {f"online.{k}": v.detach().clone() for k, v in agent.named_parameters().items()}
    out |= {f"target.{k}": v.detach().clone() for k, v in target_parameters(agent).items()}
    for flat in agent.named_parameters():
        for key, value in adam_state(agent, flat).items():
            out[f"adam.{flat}.{key}"] = value.clone()
    return out


def parameter_of(key: str) -> str:
    """The flat parameter name of a :func:`snapshot` key (``adam.{name}.{moment}`` etc.)."""
    kind, rest = key.split(".", 1)
    return rest.rsplit(".", 1)[0] if kind == "adam" else rest


def assert_same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def assert_masked_zero(agent: Agent, mask: dict[str, torch.Tensor]) -> None:
    """Masked weights exactly zero online and in targets, and their Adam moments exactly zero."""
    online, targets = agent.named_parameters(), target_parameters(agent)
    for name, active in mask.items():
        assert torch.all(online[name].detach()[~active] == 0), name
        if name in targets:
            assert torch.all(targets[name][~active] == 0), f"target {name}"
        for key, moment in adam_state(agent, name).items():
            if key in ADAM_MOMENTS:
                assert torch.all(moment[~active] == 0), f"{key} of {name}"


def roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def record_step_grads(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Wrap every optimiser's ``step`` to record (clones of) the gradients it is handed."""
    seen: dict[str, list[dict[str, torch.Tensor]]] = {role: [] for role in agent.optimizers()}
    for role, optimizer in agent.optimizers().items():
        names = {id(p): f"{role}.{n}" for n, p in agent.networks()[role].named_parameters()}
        original = optimizer.step

        def step(
            *args: Any, _role: str = role, _names: Any = names, _orig: Any = original, **kw: Any
        ) -> Any:
            groups = agent.optimizers()[_role].param_groups
            params = [p for group in groups for p in group["params"]]
            seen[_role].append({_names[id(p)]: p.grad.clone() for p in params})
            return _orig(*args, **kw)

        monkeypatch.setattr(optimizer, "step", step)
    return seen


# ----------------------------------------------------------------------------------- the API
@pytest.mark.parametrize("algo", ALGOS)
def test_named_parameters_are_the_live_online_parameters_by_flat_name(algo: str) -> None:
    agent = build(algo)
    named = agent.named_parameters()
    expected = {
        f"{role}.{name}": param
        for role, network in agent.networks().items()
        for name, param in network.named_parameters()
    }
    assert list(named) == list(expected)
    assert all(named[key] is expected[key] for key in expected)
    assert "q.encoder.conv1.weight" in named and "q.head.bias" in named
    assert agent.masks is None


def test_masks_property_is_a_device_copy_of_what_was_set() -> None:
    agent = build("dqv")
    mask = random_mask(agent)
    agent.set_masks(mask)
    masks = agent.masks
    assert masks is not None and masks.keys() == mask.keys()
    for name, value in masks.items():
        assert value.dtype == torch.bool and value.device == agent.device
        assert torch.equal(value, mask[name])
    # The agent copied the masks: the caller's later edits do not reach it.
    mask["q.head.weight"].fill_(False)
    assert agent.masks is not None and agent.masks["q.head.weight"].any()


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("q.encoder.conv9.weight", torch.ones(3, dtype=torch.bool), r"q\.encoder\.conv9\.weight"),
        ("encoder.fc.weight", torch.ones(128, 1024, dtype=torch.bool), r"'encoder\.fc\.weight'"),
        ("v.head.weight", torch.ones(1, 128, dtype=torch.bool), r"v\.head\.weight"),
        ("q.head.weight", torch.ones(128, 6, dtype=torch.bool), r"q\.head\.weight.*shape"),
        ("q.encoder.fc.weight", torch.ones(128, 1024), r"q\.encoder\.fc\.weight.*bool"),
        ("q.head.bias", [True] * NUM_ACTIONS, r"q\.head\.bias.*tensor"),
    ],
)
def test_set_masks_errors_name_the_parameter(name: str, value: Any, match: str) -> None:
    agent = build("ddqn")  # no "v" role: "v.head.weight" is unknown
    good = random_mask(agent)
    agent.set_masks(good)
    before = snapshot(agent)
    with pytest.raises(ValueError, match=match):
        agent.set_masks({**good, name: value})
    with pytest.raises(ValueError, match=match):
        agent.reset_optimizer_state({name: value})
    # Checked in full first: a rejected mask changes nothing.
    assert_same(before, snapshot(agent))
    masks = agent.masks
    assert masks is not None and masks.keys() == good.keys()
    assert all(torch.equal(masks[key], good[key]) for key in good)


@pytest.mark.parametrize("algo", ALGOS)
def test_set_masks_zeroes_weights_targets_and_moments_at_once(algo: str) -> None:
    agent = build(algo)
    for step in range(3):  # nonzero Adam moments everywhere
        agent.update(make_batch(seed=step))
    agent.sync_target()
    before = snapshot(agent)
    mask = random_mask(agent)
    agent.set_masks(mask)
    assert_masked_zero(agent, mask)
    after = snapshot(agent)
    # Active positions, unmasked parameters (biases, ...) and step counters are left as they were.
    assert before.keys() == after.keys()
    for key, value in before.items():
        name = parameter_of(key)
        if name in mask and value.dim() > 0:
            assert torch.equal(after[key][mask[name]], value[mask[name]]), key
        else:
            assert torch.equal(after[key], value), key


def test_set_masks_zeroes_amsgrad_max_moment() -> None:
    agent = build("ddqn")
    agent.q_optimizer = torch.optim.Adam(agent.q.parameters(), lr=1e-3, amsgrad=True, fused=True)
    agent.update(make_batch())
    mask = random_mask(agent)
    assert adam_state(agent, "q.head.weight")["max_exp_avg_sq"][~mask["q.head.weight"]].any()
    agent.set_masks(mask)
    assert_masked_zero(agent, mask)
    for _ in range(5):
        agent.update(make_batch())
    assert_masked_zero(agent, mask)


# ------------------------------------------------------------------------------ masked steps
@pytest.mark.parametrize("algo", ALGOS)
def test_masked_training_keeps_pruned_weights_and_moments_exactly_zero(algo: str) -> None:
    """1,000 Adam updates with syncs every 100: pruned weights and their moments stay 0."""
    agent = build(algo)
    mask = random_mask(agent)
    agent.set_masks(mask)
    start = {name: param.detach().clone() for name, param in agent.named_parameters().items()}
    for step in range(1000):
        if step % 100 == 0:
            agent.sync_target()
        agent.update(make_batch(seed=step, reward_scale=3.0))
    assert_masked_zero(agent, mask)
    online = agent.named_parameters()
    for name, active in mask.items():
        # The active weights did train (a frozen network would pass the zero checks trivially).
        assert not torch.equal(online[name].detach()[active], start[name][active]), name
        assert adam_state(agent, name)["exp_avg_sq"][active].gt(0).any(), name


@pytest.mark.parametrize("algo", ALGOS)
def test_grad_norm_is_the_norm_of_the_masked_gradient(
    algo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    max_norm = 1e-3  # clipping active: the metric is the pre-clip norm
    agent = build(algo, max_grad_norm=max_norm, clip_rewards=False)
    mask = random_mask(agent)
    agent.set_masks(mask)
    batch = make_batch(reward_scale=100.0)
    # Manual computation on a copy: backward, mask the gradient, take the global norm.
    reference = copy.deepcopy(agent)
    losses, _ = reference.losses(batch)
    expected: dict[str, torch.Tensor] = {}
    dense: dict[str, torch.Tensor] = {}
    for role, loss in losses.items():
        loss.backward()
        grads = {f"{role}.{n}": p.grad for n, p in reference.networks()[role].named_parameters()}
        norms = [
            torch.linalg.vector_norm(g * mask[k] if k in mask else g) for k, g in grads.items()
        ]
        expected[role] = torch.linalg.vector_norm(torch.stack(norms))
        dense[role] = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])
        )
    seen = record_step_grads(agent, monkeypatch)
    metrics = agent.update(batch)
    per_role = (
        {"q": metrics["grad_norm"]}
        if algo == "ddqn"
        else {"q": metrics["q_grad_norm"], "v": metrics["v_grad_norm"]}
    )
    for role, norm in per_role.items():
        torch.testing.assert_close(norm, expected[role], rtol=1e-5, atol=0)
        assert norm < 0.99 * dense[role], role  # the pruned weights' gradient is not counted
        # The optimiser saw the masked gradient, clipped to max_norm.
        handed = seen[role][0]
        for name, active in mask.items():
            if name in handed:
                assert torch.all(handed[name][~active] == 0), name
        total = torch.linalg.vector_norm(torch.stack([g.norm() for g in handed.values()]))
        assert total <= max_norm * (1 + 1e-5), role


@pytest.mark.parametrize("algo", ALGOS)
def test_set_masks_none_lets_pruned_weights_grow_again(algo: str) -> None:
    agent = build(algo)
    mask = random_mask(agent)
    agent.set_masks(mask)
    for step in range(5):
        agent.update(make_batch(seed=step))
    before = {k: v.detach().clone() for k, v in agent.named_parameters().items()}
    agent.set_masks(None)
    assert agent.masks is None
    assert_same(before, {k: v.detach().clone() for k, v in agent.named_parameters().items()})
    for step in range(5):
        agent.update(make_batch(seed=step))
    online = agent.named_parameters()
    for name, active in mask.items():
        # Most, not all: weights into or out of a ReLU unit that never fires get no gradient.
        assert (online[name].detach()[~active] != 0).float().mean() > 0.25, name


@pytest.mark.parametrize("algo", ALGOS)
def test_update_without_masks_is_bit_identical_to_a_never_masked_agent(algo: str) -> None:
    reference, cleared, empty = build(algo), build(algo), build(algo)
    cleared.set_masks(None)
    empty.set_masks({})  # masks on no parameter: the unmasked step as well
    for step in range(30):
        if step % 10 == 0:
            for agent in (reference, cleared, empty):
                agent.sync_target()
        batch = make_batch(seed=step, reward_scale=3.0)
        expected = reference.update(batch)
        for agent in (cleared, empty):
            got = agent.update(batch)
            assert list(got) == list(expected)
            for key, value in expected.items():
                assert torch.equal(got[key], value), key
    assert_same(snapshot(reference), snapshot(cleared))
    assert_same(snapshot(reference), snapshot(empty))


def test_an_unmasked_network_steps_as_if_nothing_were_masked() -> None:
    """Masks on Q only: V's step is the dense one, bit for bit (an unmasked role pays nothing).

    In DQV, V's loss reads only V and V_target (Sabatelli et al. 2018), so masking Q must leave
    V's trajectory untouched. (DQV-Max's V reads Q_target, which the mask changes.)
    """
    reference, agent = build("dqv"), build("dqv")
    agent.set_masks({k: v for k, v in random_mask(agent).items() if k.startswith("q.")})
    for step in range(20):
        batch = make_batch(seed=step, reward_scale=3.0)
        expected, got = reference.update(batch), agent.update(batch)
        for key in ("v_loss", "v_mean", "v_grad_norm"):
            assert torch.equal(got[key], expected[key]), (step, key)
    v_params = {k: v for k, v in snapshot(reference).items() if parameter_of(k).startswith("v.")}
    assert_same(v_params, {k: snapshot(agent)[k] for k in v_params})


# -------------------------------------------------------------------- masks after a change
@pytest.mark.parametrize("algo", ALGOS)
def test_apply_masks_after_an_in_place_prune(algo: str) -> None:
    """A magnitude prune that edits the agent's mask in place, then ``apply_masks``."""
    agent = build(algo)
    agent.set_masks(random_mask(agent, sparsity=0.5))
    for step in range(3):
        agent.update(make_batch(seed=step))
    agent.sync_target()
    masks = agent.masks
    assert masks is not None
    online = agent.named_parameters()
    for name, active in masks.items():
        magnitude = online[name].detach().abs()
        threshold = magnitude[active].median()
        active &= magnitude > threshold  # in place: the agent's own tensor
    agent.apply_masks()
    assert_masked_zero(agent, masks)
    for step in range(3, 20):
        agent.update(make_batch(seed=step))
    assert_masked_zero(agent, masks)


@pytest.mark.parametrize("algo", ALGOS)
def test_reset_optimizer_state_zeroes_exactly_the_given_positions(algo: str) -> None:
    agent = build(algo)
    for step in range(3):
        agent.update(make_batch(seed=step))
    before = snapshot(agent)
    named = agent.named_parameters()
    last_role = list(agent.networks())[-1]
    chosen = ("q.encoder.fc.weight", "q.head.bias", f"{last_role}.encoder.conv1.weight")
    positions = {
        name: (torch.arange(named[name].numel()) % 3 == 0).reshape(named[name].shape)
        for name in chosen
    }
    agent.reset_optimizer_state(positions)
    after = snapshot(agent)
    assert before.keys() == after.keys()
    for key in before:
        moment = key.rsplit(".", 1)[1]
        if key.startswith("adam.") and parameter_of(key) in positions and moment in ADAM_MOMENTS:
            where = positions[parameter_of(key)]
            assert torch.all(after[key][where] == 0), key
            assert torch.equal(after[key][~where], before[key][~where]), key
            assert before[key][where].ne(0).any(), key  # the reset did something
        else:  # weights, targets, other moments and Adam's per-tensor step counter
            assert torch.equal(after[key], before[key]), key


def test_reset_optimizer_state_before_any_step_is_a_no_op() -> None:
    agent = build("ddqn")
    agent.reset_optimizer_state({"q.head.weight": torch.ones(NUM_ACTIONS, 128, dtype=torch.bool)})
    assert not agent.optimizers()["q"].state


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("algo", ALGOS)
def test_gradients_are_dense_and_change_nothing(algo: str) -> None:
    agent = build(algo)
    mask = random_mask(agent)
    agent.set_masks(mask)
    for step in range(3):
        agent.update(make_batch(seed=step))
    before = snapshot(agent)
    grads = agent.gradients(make_batch(seed=10))
    named = agent.named_parameters()
    assert list(grads) == list(named)
    for name, grad in grads.items():
        assert grad.shape == named[name].shape and not grad.requires_grad, name
    for name, active in mask.items():
        # Pruned weights are zero, but their gradient is not: what RigL regrows by.
        assert grads[name][~active].ne(0).any(), name
    assert_same(before, snapshot(agent))
    assert all(param.grad is None for param in named.values())


@pytest.mark.parametrize("algo", ALGOS)
def test_gradients_equal_what_update_masks_and_steps_on(
    algo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = build(algo, max_grad_norm=0.0)  # no clipping: the step sees the masked gradient
    mask = random_mask(agent)
    agent.set_masks(mask)
    agent.update(make_batch(seed=0))
    batch = make_batch(seed=1, reward_scale=3.0)
    grads = agent.gradients(batch)
    seen = record_step_grads(agent, monkeypatch)
    agent.update(batch)
    handed = {name: grad for per_role in seen.values() for name, grad in per_role[0].items()}
    assert handed.keys() == grads.keys()
    for name, grad in grads.items():
        expected = grad * mask[name] if name in mask else grad
        assert torch.equal(handed[name], expected), name


def test_ddqn_gradients_are_those_of_the_double_dqn_loss() -> None:
    """Against a manual backward of the loss written out from van Hasselt et al. (2016)."""
    agent = build("ddqn", gamma=0.9)
    agent.set_masks(random_mask(agent))
    batch = make_batch(reward_scale=5.0)
    reference = copy.deepcopy(agent)
    q, q_target = reference.networks()["q"], reference.target_networks()["q"]
    with torch.no_grad():
        best = q(batch.next_obs).argmax(1, keepdim=True)
        next_q = q_target(batch.next_obs).gather(1, best).squeeze(1)
        target = torch.sign(batch.rewards) + 0.9 * (1.0 - batch.terminals) * next_q
    q_taken = q(batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
    torch.nn.functional.smooth_l1_loss(q_taken, target).backward()
    grads = agent.gradients(batch)
    for name, param in q.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(grads[f"q.{name}"], param.grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("algo", ALGOS)
def test_masks_stay_out_of_checkpoints_and_loading_keeps_them_applied(algo: str) -> None:
    dense = build(algo, seed=1)
    for step in range(3):
        dense.update(make_batch(seed=step))
    agent = build(algo)
    mask = random_mask(agent)
    agent.set_masks(mask)
    state = agent.state_dict()
    assert set(state) == {"algo", "networks", "targets", "optimizers"}
    # A dense checkpoint loaded into a masked agent: masks stay, and stay applied.
    agent.load_state_dict(roundtrip(dense.state_dict()))
    masks = agent.masks
    assert masks is not None and all(torch.equal(masks[k], mask[k]) for k in mask)
    assert_masked_zero(agent, mask)
    # Rewinding a ticket to dense initial weights prunes them again (online and targets).
    agent.load_weights_state_dict(roundtrip(build(algo, seed=2).weights_state_dict()))
    assert_masked_zero(agent, mask)
    agent.load_weights_state_dict(dense.weights_state_dict(), sync_target=False)
    assert_masked_zero(agent, mask)


@pytest.mark.parametrize("algo", ALGOS)
def test_masked_resume_is_exact(algo: str) -> None:
    """Checkpoint + masks saved apart, restored in either order: the same updates follow."""
    trained = build(algo)
    trained.set_masks(random_mask(trained))
    for step in range(3):
        trained.update(make_batch(seed=step))
    state, masks = roundtrip(trained.state_dict()), roundtrip(trained.masks)
    masks_first, state_first = build(algo, seed=5), build(algo, seed=6)
    masks_first.set_masks(masks)
    masks_first.load_state_dict(state)
    state_first.load_state_dict(state)
    state_first.set_masks(masks)
    for step in range(3, 8):
        batch = make_batch(seed=step)
        expected = trained.update(batch)
        for resumed in (masks_first, state_first):
            got = resumed.update(batch)
            assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert_same(snapshot(trained), snapshot(masks_first))
    assert_same(snapshot(trained), snapshot(state_first))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("algo", ALGOS)
def test_masked_update_does_not_synchronise_cuda(algo: str) -> None:
    torch.manual_seed(0)
    config = AgentConfig(algo=algo, encoder="minatar", lr=1e-3)
    agent = make_agent(config, MINATAR, NUM_ACTIONS, "cuda")
    mask = random_mask(agent)
    agent.set_masks(mask)
    batch = ReplayBatch(*(tensor.to("cuda") for tensor in make_batch()))
    agent.update(batch)  # warm-up: lazy state and kernel initialisation may synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            agent.update(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    agent.sync_target()
    assert_masked_zero(agent, mask)
