"""Per-layer allocation (uniform, ERK), magnitude pruning and random masks, by hand."""

import math

import pytest
import torch

from sparse_ticket.sparsity import (
    MaskError,
    imp_levels,
    keep_counts,
    layer_densities,
    magnitude_prune,
    random_like,
    random_mask,
    role_sparsity,
    shapes_of,
    sparsity_report,
)

# ----------------------------------------------------------------------------- layer densities


def test_uniform_densities():
    assert layer_densities({"a": (3, 4), "b": (2, 2, 3, 3)}, 0.75, "uniform") == {
        "a": 0.25,
        "b": 0.25,
    }


def test_erk_without_capping_by_hand():
    # raw density sum/prod: conv (2, 1, 3, 3) -> 9 / 18 = 0.5; linear (8, 8) -> 16 / 64 = 0.25.
    # Keep (1 - 0.8) * (18 + 64) = 16.4 = eps * (0.5 * 18 + 0.25 * 64) = 25 eps -> eps = 0.656.
    densities = layer_densities({"conv": (2, 1, 3, 3), "fc": (8, 8)}, 0.8, "erk")
    assert densities["conv"] == pytest.approx(0.328)
    assert densities["fc"] == pytest.approx(0.164)


def test_erk_caps_a_small_layer_and_resolves_eps():
    shapes = {"a": (10, 10), "b": (2, 5), "c": (100, 100)}
    # raw: a 20/100 = 0.2, b 7/10 = 0.7, c 200/10000 = 0.02; N = 10110, keep 1011 at s = 0.9.
    # eps = 1011 / (20 + 7 + 200) = 4.45 -> b would be 3.1 > 1: dense. Re-solve without b:
    # eps = (1011 - 10) / (20 + 200) = 4.55 -> a 0.91, c 0.091 (a + b + c keeps 91 + 10 + 910).
    densities = layer_densities(shapes, 0.9, "erk")
    assert densities == pytest.approx({"a": 0.91, "b": 1.0, "c": 0.091})
    kept = sum(densities[n] * math.prod(s) for n, s in shapes.items())
    assert kept == pytest.approx(0.1 * 10110)


def test_erk_caps_twice():
    shapes = {"a": (10, 10), "b": (2, 5), "c": (100, 100)}
    # s = 0.5, keep 5055: first b is capped (eps 22.3), then a (eps 22.9 -> 0.2 eps > 1);
    # c keeps the rest: 5055 - 110 = 4945 of 10000.
    assert layer_densities(shapes, 0.5, "erk") == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.4945})


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_erk_total_kept_matches_on_the_nature_cnn(sparsity):
    shapes = {
        "conv1": (32, 4, 8, 8),
        "conv2": (64, 32, 4, 4),
        "conv3": (64, 64, 3, 3),
        "fc": (512, 3136),
        "head": (18, 512),
    }
    total = sum(math.prod(s) for s in shapes.values())
    densities = layer_densities(shapes, sparsity, "erk")
    assert all(0 < d <= 1 for d in densities.values())
    counts = keep_counts(shapes, densities)
    assert abs(sum(counts.values()) - (1 - sparsity) * total) <= len(shapes) / 2
    # ERK favours the small layers: the 512x3136 layer is the sparsest.
    if sparsity > 0:
        assert densities["fc"] == min(densities.values())


def test_layer_densities_rejects_bad_input():
    with pytest.raises(MaskError, match="unknown allocation 'er'"):
        layer_densities({"a": (2, 2)}, 0.5, "er")
    for bad in (1.0, -0.1):
        with pytest.raises(MaskError, match="sparsity must be in"):
            layer_densities({"a": (2, 2)}, bad, "uniform")


def test_keep_counts_rounding():
    # 0.25 * 10 = 2.5 rounds half to even -> 2; 0.35 * 10 = 3.5 -> 4; 0.5 * 3 = 1.5 -> 2.
    assert keep_counts({"a": (10,), "b": (2, 5), "c": (3,)}, {"a": 0.25, "b": 0.35, "c": 0.5}) == {
        "a": 2,
        "b": 4,
        "c": 2,
    }


# ----------------------------------------------------------------------------- magnitude prune


def toy_net() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Layer 'small' with |w| 0.01..0.10 and layer 'big' with |w| 1..10 (signs alternate)."""
    signs = torch.tensor([1.0, -1.0] * 5)
    weights = {
        "small": (torch.arange(1.0, 11.0) * 0.01 * signs).reshape(2, 5),
        "big": (torch.arange(1.0, 11.0) * signs).flip(0).reshape(5, 2),
    }
    return weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}


def test_global_prunes_the_small_magnitude_layer_first():
    weights, mask = toy_net()
    new = magnitude_prune(weights, mask, 0.6, "global")
    # 12 of 20 pruned: all 10 of 'small', then |w| = 1, 2 of 'big' (its last two flat entries).
    assert not new["small"].any()
    assert new["big"].reshape(-1).tolist() == [True] * 8 + [False] * 2
    assert mask["small"].all()  # the input is untouched


def test_uniform_prunes_each_layer_by_the_same_fraction():
    weights, mask = toy_net()
    new = magnitude_prune(weights, mask, 0.6, "uniform")
    assert new["small"].reshape(-1).tolist() == [False] * 6 + [True] * 4
    assert new["big"].reshape(-1).tolist() == [True] * 4 + [False] * 6


def test_erk_allocation_uses_the_erk_counts():
    weights = {"a": torch.randn(10, 10), "b": torch.randn(2, 5), "c": torch.randn(100, 100)}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    new = magnitude_prune(weights, mask, 0.9, "erk")
    assert {n: int(m.sum()) for n, m in new.items()} == {"a": 91, "b": 10, "c": 910}
    # The kept weights of 'c' are its 910 largest magnitudes.
    threshold = weights["c"].abs().flatten().sort().values[-910]
    assert torch.equal(new["c"], weights["c"].abs() >= threshold)


@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_imp_chain_realises_rounded_sparsities(allocation):
    # Layers of 10 and 30 weights, pruned along the IMP chain to 0.6, 0.7, 0.8 (20% per round).
    gen = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(2, 5, generator=gen), "b": torch.randn(3, 10, generator=gen)}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    for level in imp_levels([0.6, 0.7, 0.8], 0.2):
        new = magnitude_prune(weights, mask, level, allocation)
        assert not (new["a"] & ~mask["a"]).any()
        assert not (new["b"] & ~mask["b"]).any()
        if allocation == "global":
            assert sparsity_report(new)["overall"] == round(level * 40) / 40
        else:
            for name, n in (("a", 10), ("b", 30)):
                kept = min(round((1 - level) * n), int(mask[name].sum()))
                assert int(new[name].sum()) == kept
        mask = new
    assert sparsity_report(mask)["overall"] == 0.8


def test_magnitude_prune_never_revives_even_with_large_scores():
    weights, mask = toy_net()
    first = magnitude_prune(weights, mask, 0.5, "global")
    # Now the pruned 'small' weights get the largest scores: they must stay pruned.
    boosted = {"small": torch.full((2, 5), 100.0), "big": weights["big"]}
    second = magnitude_prune(boosted, first, 0.6, "global")
    assert not second["small"].any()
    assert int(second["big"].sum()) == 8
    per_layer = magnitude_prune(boosted, first, 0.6, "uniform")
    assert not per_layer["small"].any()  # clamped to its active count of 0
    assert int(per_layer["big"].sum()) == 4


def test_magnitude_prune_ties_break_by_index():
    mask = {"a": torch.ones(6, dtype=torch.bool)}
    new = magnitude_prune({"a": torch.ones(6)}, mask, 0.5, "global")
    assert new["a"].tolist() == [False, False, False, True, True, True]


def test_magnitude_prune_rejects_lower_sparsity_and_bad_scores():
    weights, mask = toy_net()
    pruned = magnitude_prune(weights, mask, 0.5, "global")
    with pytest.raises(MaskError, match=r"already at 0\.5"):
        magnitude_prune(weights, pruned, 0.3, "global")
    magnitude_prune(weights, pruned, 0.5, "uniform")  # same level: fine
    with pytest.raises(MaskError, match="unknown allocation 'layerwise'"):
        magnitude_prune(weights, mask, 0.5, "layerwise")
    with pytest.raises(MaskError, match="'big' has no score"):
        magnitude_prune({"small": weights["small"]}, mask, 0.5, "global")
    with pytest.raises(MaskError, match="contains NaN"):
        magnitude_prune({**weights, "big": torch.full((5, 2), math.nan)}, mask, 0.5, "global")


# --------------------------------------------------------------------------------- random


def test_random_mask_exact_counts_and_reproducible():
    shapes = {"a": (4, 5), "b": (3, 2, 2)}
    densities = {"a": 0.25, "b": 0.5}
    mask = random_mask(shapes, densities, torch.Generator().manual_seed(1))
    assert shapes_of(mask) == shapes
    assert {n: int(m.sum()) for n, m in mask.items()} == {"a": 5, "b": 6}
    again = random_mask(shapes, densities, torch.Generator().manual_seed(1))
    assert all(torch.equal(mask[n], again[n]) for n in shapes)


def test_random_like_keeps_per_layer_counts_at_new_positions():
    gen = torch.Generator().manual_seed(0)
    template = {
        "a": torch.rand(20, 20, generator=gen) > 0.7,
        "b": torch.rand(50, generator=gen) > 0.2,
    }
    first = random_like(template, torch.Generator().manual_seed(3))
    second = random_like(template, torch.Generator().manual_seed(3))
    other = random_like(template, torch.Generator().manual_seed(4))
    for name, m in template.items():
        assert first[name].dtype == torch.bool
        assert first[name].shape == m.shape
        assert int(first[name].sum()) == int(m.sum())
        assert torch.equal(first[name], second[name])
    assert sparsity_report(first) == sparsity_report(template)
    assert not torch.equal(first["a"], template["a"])
    assert not torch.equal(first["a"], other["a"])


def test_global_ranking_is_per_network_role():
    """DQV has two networks: global magnitude pruning ranks within each role, so Q and V each
    end at the level. One ranking over both would prune the small-magnitude network (here 'v')
    entirely first: at 0.5 overall, v at 1.0 and q at 0.0."""
    weights, _ = toy_net()
    roles = {"q.layer.weight": weights["big"], "v.layer.weight": weights["small"]}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in roles.items()}
    new = magnitude_prune(roles, mask, 0.5, "global")
    assert role_sparsity(new) == {"q": 0.5, "v": 0.5}
    # q keeps its 5 largest |w| (10..6: the first five flat entries of the flipped arange).
    assert new["q.layer.weight"].reshape(-1).tolist() == [True] * 5 + [False] * 5
    assert new["v.layer.weight"].reshape(-1).tolist() == [False] * 5 + [True] * 5
