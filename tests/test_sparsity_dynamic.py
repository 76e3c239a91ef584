"""SET and RigL mask updates: exact drops, regrowth sets, constant counts, determinism."""

import pytest
import torch

from sparse_ticket.sparsity import MaskError, random_mask, rigl_update, set_update


def toy() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One layer of 10: active at even indices with |w| = 5, 1, 4, 2, 3 (order by index)."""
    w = torch.zeros(2, 5)
    w.view(-1)[[0, 2, 4, 6, 8]] = torch.tensor([5.0, -1.0, 4.0, 2.0, -3.0])
    return {"x": w}, {"x": w != 0}


def test_set_drops_the_smallest_and_regrows_previously_inactive():
    weights, mask = toy()
    new, regrown = set_update(weights, mask, 0.4, torch.Generator().manual_seed(0))
    before = mask["x"].reshape(-1)
    after = new["x"].reshape(-1)
    grown = regrown["x"].reshape(-1)
    # round(0.4 * 5) = 2 dropped: |w| = 1 (index 2) and 2 (index 6).
    assert not after[2] and not after[6]
    assert after[[0, 4, 8]].all()
    assert int(after.sum()) == 5
    assert int(grown.sum()) == 2
    assert not (grown & before).any()  # regrown among the previously inactive (odd) positions
    assert torch.equal(
        after, (before & ~torch.isin(torch.arange(10), torch.tensor([2, 6]))) | grown
    )
    assert mask["x"].sum() == 5  # inputs untouched
    assert new["x"].shape == (2, 5)


def test_set_is_deterministic_per_seed_and_keeps_counts():
    gen = torch.Generator().manual_seed(0)
    shapes = {"conv": (8, 4, 3, 3), "fc": (32, 64)}
    mask = random_mask(shapes, {"conv": 0.3, "fc": 0.1}, gen)
    weights = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    first = set_update(weights, mask, 0.3, torch.Generator().manual_seed(7))
    second = set_update(weights, mask, 0.3, torch.Generator().manual_seed(7))
    other = set_update(weights, mask, 0.3, torch.Generator().manual_seed(8))
    for name in shapes:
        assert torch.equal(first[0][name], second[0][name])
        assert torch.equal(first[1][name], second[1][name])
        assert int(first[0][name].sum()) == int(mask[name].sum())
        assert int(first[1][name].sum()) == round(0.3 * int(mask[name].sum()))
        assert not (first[1][name] & mask[name]).any()
        # The dropped ones are the smallest-|w| active weights.
        dropped = mask[name] & ~first[0][name]
        kept = mask[name] & first[0][name]
        assert weights[name].abs()[dropped].max() <= weights[name].abs()[kept].min()
    assert not torch.equal(first[1]["fc"], other[1]["fc"])


def test_set_falls_back_to_dropped_positions_in_a_nearly_dense_layer():
    # 9 of 10 active, drop 5: only 1 previously inactive position, so the other 4 regrown
    # come from the just-dropped ones and the active count stays 9.
    w = torch.arange(1.0, 11.0)
    mask = {"x": torch.ones(10, dtype=torch.bool)}
    mask["x"][0] = False
    new, regrown = set_update({"x": w}, mask, 5 / 9, torch.Generator().manual_seed(0))
    assert int(new["x"].sum()) == 9
    assert int(regrown["x"].sum()) == 5
    # Candidates: index 0 and the dropped |w| = 2..6 (indices 1..5); the large ones stay active.
    assert not regrown["x"][6:].any()
    assert new["x"][6:].all()


def test_zero_drop_is_identity():
    weights, mask = toy()
    new, regrown = set_update(weights, mask, 0.0, torch.Generator())
    assert torch.equal(new["x"], mask["x"])
    assert not regrown["x"].any()


def test_rigl_regrows_the_largest_gradients_among_inactive():
    weights, mask = toy()
    grads = torch.zeros(2, 5)
    # Inactive (odd) positions get |g| 0.1, 0.9, 0.5, 0.9, 0.2; active ones a huge gradient
    # that must be ignored. Ties (0.9 at 3 and 7) break by lower index: both are taken anyway.
    grads.view(-1)[[1, 3, 5, 7, 9]] = torch.tensor([0.1, -0.9, 0.5, 0.9, -0.2])
    grads.view(-1)[[0, 2, 4, 6, 8]] = 100.0
    new, regrown = rigl_update(weights, {"x": grads}, mask, 0.6)
    # round(0.6 * 5) = 3 dropped (|w| 1, 2, 3 at 2, 6, 8); regrow 3 of largest |g|: 3, 7, 5.
    assert regrown["x"].reshape(-1).nonzero().reshape(-1).tolist() == [3, 5, 7]
    assert new["x"].reshape(-1).nonzero().reshape(-1).tolist() == [0, 3, 4, 5, 7]


def test_rigl_tie_breaking_by_index():
    mask = {"x": torch.tensor([True, False, False, False, False])}
    new, regrown = rigl_update({"x": torch.ones(5)}, {"x": torch.ones(5)}, mask, 1.0)
    assert regrown["x"].tolist() == [False, True, False, False, False]
    assert new["x"].tolist() == [False, True, False, False, False]


def test_updates_reject_bad_input():
    weights, mask = toy()
    with pytest.raises(MaskError, match="drop_fraction"):
        set_update(weights, mask, 1.5, torch.Generator())
    with pytest.raises(MaskError, match="'x' has no weight"):
        set_update({}, mask, 0.3, torch.Generator())
    with pytest.raises(MaskError, match="gradient of 'x' has shape"):
        rigl_update(weights, {"x": torch.zeros(10)}, mask, 0.3)
    with pytest.raises(MaskError, match="contains NaN"):
        rigl_update(weights, {"x": torch.full((2, 5), float("nan"))}, mask, 0.3)
