"""Masks as data: scopes, application, statistics, hashes, compatibility and files."""

import pytest
import torch

from sparse_ticket.sparsity import (
    MaskError,
    apply_mask_,
    architecture_fingerprint,
    check_compatible,
    content_hash,
    dense_mask,
    load_mask,
    mask_multipliers,
    overlap,
    prunable_names,
    save_mask,
    sparsity_report,
)


def toy_params() -> dict[str, torch.Tensor]:
    return {
        "q.encoder.conv1.weight": torch.randn(4, 2, 3, 3),
        "q.encoder.conv1.bias": torch.randn(4),
        "q.head.weight": torch.randn(3, 8),
        "q.head.bias": torch.randn(3),
        "v.encoder.fc.weight": torch.randn(5, 8),
    }


def flat_mask(kept: list[int], n: int = 4) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[kept] = True
    return m


# ------------------------------------------------------------------------------ prunable_names


def test_prunable_names_encoder_scope_skips_heads_and_biases():
    assert prunable_names(toy_params(), "encoder") == [
        "q.encoder.conv1.weight",
        "v.encoder.fc.weight",
    ]


def test_prunable_names_all_scope_includes_heads_not_biases():
    assert prunable_names(toy_params(), "all") == [
        "q.encoder.conv1.weight",
        "q.head.weight",
        "v.encoder.fc.weight",
    ]


def test_prunable_names_unknown_scope():
    with pytest.raises(MaskError, match="unknown prune scope 'heads'"):
        prunable_names(toy_params(), "heads")


# ------------------------------------------------------------------------- dense / apply_mask_


def test_dense_mask_is_all_true_bool_of_param_shapes():
    params = toy_params()
    mask = dense_mask(params, ["q.head.weight"])
    assert list(mask) == ["q.head.weight"]
    assert mask["q.head.weight"].dtype == torch.bool
    assert mask["q.head.weight"].shape == (3, 8)
    assert bool(mask["q.head.weight"].all())
    with pytest.raises(MaskError, match=r"'q\.nope\.weight'"):
        dense_mask(params, ["q.nope.weight"])


@pytest.mark.parametrize("as_float", [False, True])
def test_apply_mask_zeros_pruned_weights_in_place(as_float):
    params = {
        "a": torch.nn.Parameter(torch.arange(1.0, 5.0)),
        "b": torch.nn.Parameter(torch.ones(2, 3)),
        "bias": torch.nn.Parameter(torch.ones(2)),
    }
    mask = {"a": torch.tensor([True, False, True, False]), "b": torch.eye(2, 3, dtype=torch.bool)}
    if as_float:
        mask = mask_multipliers(mask, params)
        assert mask["a"].dtype == torch.float32
    storage = params["a"].data_ptr()
    apply_mask_(params, mask)
    assert params["a"].data_ptr() == storage
    assert torch.equal(params["a"].detach(), torch.tensor([1.0, 0.0, 3.0, 0.0]))
    assert torch.equal(params["b"].detach(), torch.eye(2, 3))
    assert torch.equal(params["bias"].detach(), torch.ones(2))
    assert params["a"].requires_grad


def test_apply_mask_empty_and_missing():
    apply_mask_({"a": torch.ones(2)}, {})
    with pytest.raises(MaskError, match="'x' has no parameter"):
        apply_mask_({"a": torch.ones(2)}, {"x": torch.ones(2, dtype=torch.bool)})


# ------------------------------------------------------------------------ report and overlap


def test_sparsity_report_by_hand():
    mask = {"a": flat_mask([0]), "b": torch.ones(2, 3, dtype=torch.bool)}
    report = sparsity_report(mask)
    # a: 3 of 4 pruned; b: none of 6; overall 3 of 10.
    assert report == {"a": 0.75, "b": 0.0, "overall": 0.3}


def test_overlap_jaccard_by_hand():
    a = {"x": flat_mask([0, 1, 2]), "y": flat_mask([0])}
    b = {"x": flat_mask([1, 2, 3]), "y": flat_mask([1])}
    result = overlap(a, b)
    # x: {1, 2} / {0, 1, 2, 3} = 0.5; y: {} / {0, 1} = 0; overall 2 / 6.
    assert result["x"] == 0.5
    assert result["y"] == 0.0
    assert result["overall"] == pytest.approx(2 / 6)


def test_overlap_identical_and_empty_masks_are_one():
    a = {"x": flat_mask([0, 3]), "y": flat_mask([])}
    assert overlap(a, {k: v.clone() for k, v in a.items()}) == {"x": 1.0, "y": 1.0, "overall": 1.0}
    empty = {"x": flat_mask([])}
    assert overlap(empty, empty) == {"x": 1.0, "overall": 1.0}


def test_overlap_rejects_different_layers_or_shapes():
    with pytest.raises(MaskError, match="'y' is only in the second mask"):
        overlap({"x": flat_mask([0])}, {"x": flat_mask([0]), "y": flat_mask([0])})
    with pytest.raises(MaskError, match=r"'x' has shape \(4,\) in the first mask and \(5,\)"):
        overlap({"x": flat_mask([0])}, {"x": flat_mask([0], n=5)})


# ------------------------------------------------------------------------------------ hashes


def test_content_hash_stable_order_independent_and_bit_sensitive():
    a = {"x": flat_mask([0, 2]), "y": torch.eye(3, dtype=torch.bool)}
    h = content_hash(a)
    assert len(h) == 16
    assert int(h, 16) >= 0
    assert content_hash({"y": a["y"].clone(), "x": a["x"].clone()}) == h
    flipped = {"x": a["x"].clone(), "y": a["y"].clone()}
    flipped["y"][2, 1] = True
    assert content_hash(flipped) != h
    # Same bits, different shape or name: a different mask.
    assert content_hash({"x": a["x"], "y": a["y"].reshape(9)}) != h
    assert content_hash({"x2": a["x"], "y": a["y"]}) != h
    with pytest.raises(MaskError, match=r"dtype torch\.float32"):
        content_hash({"x": torch.ones(2)})


def test_architecture_fingerprint_tracks_names_and_shapes():
    params = toy_params()
    fp = architecture_fingerprint(params)
    assert len(fp) == 16
    assert architecture_fingerprint(dict(reversed(list(params.items())))) == fp
    assert architecture_fingerprint({k: torch.zeros_like(v) for k, v in params.items()}) == fp
    changed = dict(params, **{"q.head.weight": torch.randn(4, 8)})
    assert architecture_fingerprint(changed) != fp


# ---------------------------------------------------------------------------- compatibility


def test_check_compatible_accepts_a_matching_mask():
    params = toy_params()
    check_compatible(dense_mask(params, prunable_names(params, "all")), params)


def test_check_compatible_names_a_missing_layer():
    mask = {"q.encoder.fc.weight": torch.ones(5, 8, dtype=torch.bool)}
    with pytest.raises(MaskError) as info:
        check_compatible(mask, toy_params())
    assert str(info.value) == "mask layer 'q.encoder.fc.weight' has no parameter in this model"


def test_check_compatible_names_a_shape_mismatch():
    params = {"q.encoder.conv1.weight": torch.zeros(16, 10, 3, 3)}
    mask = {"q.encoder.conv1.weight": torch.ones(32, 4, 8, 8, dtype=torch.bool)}
    with pytest.raises(MaskError) as info:
        check_compatible(mask, params)
    assert str(info.value) == (
        "mask layer 'q.encoder.conv1.weight' has shape (32, 4, 8, 8), "
        "the model's parameter has (16, 10, 3, 3)"
    )


def test_check_compatible_rejects_non_bool():
    with pytest.raises(MaskError, match=r"'q\.head\.weight' has dtype torch\.float32"):
        check_compatible({"q.head.weight": torch.ones(3, 8)}, toy_params())


# ------------------------------------------------------------------------------------ files


def test_save_load_round_trip(tmp_path):
    mask = {"q.head.weight": torch.rand(3, 8) > 0.5, "v.encoder.fc.weight": flat_mask([1, 3])}
    path = tmp_path / "mask.pt"
    save_mask(mask, path)
    loaded = load_mask(path)
    assert list(loaded) == list(mask)
    for name in mask:
        assert loaded[name].dtype == torch.bool
        assert torch.equal(loaded[name], mask[name])
    assert content_hash(loaded) == content_hash(mask)


def test_save_mask_saves_only_the_view(tmp_path):
    base = torch.ones(1000, dtype=torch.bool)
    save_mask({"x": base[:4]}, tmp_path / "m.pt")
    assert load_mask(tmp_path / "m.pt")["x"].untyped_storage().nbytes() == 4


def test_load_mask_errors_are_one_line(tmp_path):
    for path, pattern in [
        (tmp_path / "missing.pt", "cannot read mask file"),
        (tmp_path / "garbage.pt", "cannot read mask file"),
        (tmp_path / "list.pt", "holds a list"),
        (tmp_path / "float.pt", "entry 'x' is not a bool tensor"),
    ]:
        if path.name == "garbage.pt":
            path.write_bytes(b"not a torch file")
        elif path.name == "list.pt":
            torch.save([torch.ones(2, dtype=torch.bool)], path)
        elif path.name == "float.pt":
            torch.save({"x": torch.ones(2)}, path)
        with pytest.raises(MaskError, match=pattern) as info:
            load_mask(path)
        assert "\n" not in str(info.value)


def test_load_mask_refuses_pickled_objects(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"x": torch.ones(2, dtype=torch.bool), "obj": object()}, path)
    with pytest.raises(MaskError, match="cannot read mask file") as info:
        load_mask(path)
    assert "\n" not in str(info.value)
