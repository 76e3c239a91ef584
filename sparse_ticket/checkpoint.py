"""Atomic checkpoints: written completely, then marked complete, so a torn one is never resumed.

Layout of a checkpoint directory (Dopamine's "write, then mark complete" discipline)::

    <root>/step_000000500000/
        state.pt      agent (networks, targets, optimisers), torch RNG; loaded weights_only
        runner.json   counters, numpy RNG states, env episode state, evaluation history
        replay.npz    the replay buffer (optional)
        COMPLETE      written last; its presence is what makes the checkpoint valid

Files are written into ``step_*.tmp``, fsynced, marked, and the directory renamed into place.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

MARKER = "COMPLETE"
PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (the disk is full, or failing)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class CheckpointManager:
    """Writes, lists and prunes the checkpoints of one run under ``root``."""

    def __init__(self, root: str | os.PathLike, keep: int = 1) -> None:
        self.root = Path(root)
        self.keep = keep

    def complete(self) -> list[Path]:
        """Complete checkpoint directories, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and p.name.startswith(PREFIX)
            and not p.name.endswith(".tmp")
            and (p / MARKER).is_file()
        ]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        done = self.complete()
        return done[-1] if done else None

    def save(
        self,
        step: int,
        tensors: dict[str, Any],
        runner_state: dict[str, Any],
        replay_state: dict[str, Any] | None = None,
    ) -> Path:
        """Write a checkpoint for ``step`` atomically and prune older ones; returns its path."""
        final = self.root / f"{PREFIX}{step:012d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._write(tmp, step, tensors, runner_state, replay_state)
        except (OSError, RuntimeError) as error:
            # A full disk (ENOSPC; torch reports it as a RuntimeError) or a failing one: drop
            # the torn copy to give its space back; the previous checkpoint was not touched.
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointWriteError(
                f"cannot write checkpoint {final}: {_first_line(error)}; the previous "
                "checkpoint is intact (resume from it once the disk has room)"
            ) from None
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(self.root)
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def _write(
        tmp: Path,
        step: int,
        tensors: dict[str, Any],
        runner_state: dict[str, Any],
        replay_state: dict[str, Any] | None,
    ) -> None:
        """Every file of a checkpoint into ``tmp``, fsynced, the marker last."""
        tmp.mkdir(parents=True)
        torch.save(tensors, tmp / "state.pt")
        (tmp / "runner.json").write_text(json.dumps(runner_state))
        files = ["state.pt", "runner.json"]
        if replay_state is not None:
            np.savez(tmp / "replay.npz", **replay_state)
            files.append("replay.npz")
        for name in files:
            _fsync_file(tmp / name)
        (tmp / MARKER).write_text(json.dumps({"step": step, "files": files}))
        _fsync_file(tmp / MARKER)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """(tensors, runner_state, replay_state or None) of a complete checkpoint directory."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete (no {MARKER} marker)")
    try:
        tensors = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        runner_state = json.loads((path / "runner.json").read_text())
        replay_state = None
        if (path / "replay.npz").is_file():
            with np.load(path / "replay.npz", allow_pickle=False) as data:
                replay_state = {key: data[key] for key in data.files}
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(error)}") from None
    return tensors, runner_state, replay_state


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A weights file (``init.pt``/``final.pt``) loaded safely with ``weights_only=True``."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"cannot read weights file {path}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    """torch's unpickling errors span paragraphs; a user-facing message is one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
