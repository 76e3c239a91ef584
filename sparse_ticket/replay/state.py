"""A :class:`FrameReplay`'s state as ``np.savez``-able arrays, and its exact restore.

The state is the buffer's storage arrays by name, its geometry (``capacity``, ``num_envs``,
``frame_shape``, ``stack``) as ints and an int64 array, and the sampling RNG's state as a JSON
string in a 0-d unicode array: a checkpoint loads with ``np.load(path, allow_pickle=False)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

Geometry = tuple[int, int, tuple[int, ...], int]
"""``(capacity, num_envs, frame_shape, stack)`` of a buffer."""


def replay_state(
    storage: Mapping[str, np.ndarray], geometry: Geometry, rng: np.random.Generator
) -> dict[str, np.ndarray | int]:
    """The state of a buffer with ``storage`` arrays (not copied), ``geometry`` and ``rng``."""
    capacity, num_envs, frame_shape, stack = geometry
    state: dict[str, np.ndarray | int] = dict(storage)
    state.update(
        capacity=capacity,
        num_envs=num_envs,
        stack=stack,
        frame_shape=np.asarray(frame_shape, dtype=np.int64),
        rng_state=np.asarray(json.dumps(rng.bit_generator.state)),
    )
    return state


def load_replay_state(
    storage: Mapping[str, np.ndarray],
    geometry: Geometry,
    rng: np.random.Generator,
    state: Mapping[str, Any],
) -> None:
    """Copy ``state`` into ``storage`` and ``rng``; ``ValueError`` unless it has ``geometry``."""
    saved = (
        int(state["capacity"]),
        int(state["num_envs"]),
        tuple(int(d) for d in np.asarray(state["frame_shape"])),
        int(state["stack"]),
    )
    if saved != geometry:
        raise ValueError(
            "state_dict is for (capacity, num_envs, frame_shape, stack) = "
            f"{saved}, this buffer is {geometry}"
        )
    for name, array in storage.items():
        value = np.asarray(state[name])
        if value.shape != array.shape:
            raise ValueError(
                f"state_dict[{name!r}] has shape {value.shape}, expected {array.shape}"
            )
        np.copyto(array, value, casting="same_kind")
    rng.bit_generator.state = json.loads(str(np.asarray(state["rng_state"]).item()))
