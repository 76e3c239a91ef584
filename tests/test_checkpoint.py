"""Checkpoints are written completely, then marked complete; torn ones are never resumed."""

import numpy as np
import pytest
import torch

from sparse_ticket.checkpoint import (
    MARKER,
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
)


def _save(manager, step):
    return manager.save(
        step, {"w": torch.full((2,), float(step))}, {"step": step}, {"frames": np.arange(3)}
    )


def test_save_load_round_trip(tmp_path):
    path = _save(CheckpointManager(tmp_path), 10)
    tensors, state, replay = load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.full((2,), 10.0))
    assert state == {"step": 10}
    assert np.array_equal(replay["frames"], np.arange(3))


def test_latest_ignores_unmarked_and_tmp_dirs_and_prunes_old(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        _save(manager, step)
    (tmp_path / "step_000000000009").mkdir()  # a torn write: no marker
    (tmp_path / "step_000000000010.tmp").mkdir()
    assert [p.name for p in manager.complete()] == ["step_000000000002", "step_000000000003"]
    assert manager.latest().name == "step_000000000003"


def test_unmarked_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = _save(CheckpointManager(tmp_path), 5)
    (path / MARKER).unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(path)
    (path / MARKER).write_text("{}")
    (path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)
