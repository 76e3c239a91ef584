"""Named presets (TOML files in ``sparse_ticket_mlflow/presets``).

A *run preset* has an ``[overrides]`` table: config values for one training run (``smoke``,
``minatar``, ...). A *study preset* has a ``[study]`` table: the grid of a whole study for the
``main`` entry point (``demo``, ``paper``, ...; see :mod:`sparse_ticket_mlflow.study`). A file may
be both (``minatar``: the run config of a MinAtar run, and the MinAtar study that uses it).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sparse_ticket.config import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def read_preset(path: Path) -> dict[str, Any]:
    """The parsed TOML of a preset file."""
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _names(kind: str) -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if kind in read_preset(p))


def preset_names() -> list[str]:
    """Names of the shipped run presets."""
    return _names("overrides")


def study_preset_names() -> list[str]:
    """Names of the shipped study presets."""
    return _names("study")


def load_preset(name: str) -> dict[str, Any]:
    """The ``[overrides]`` table of run preset ``name`` (ConfigError if there is none)."""
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (one of {', '.join(preset_names())})")
    preset = read_preset(path)
    if "overrides" not in preset and "study" in preset:
        raise ConfigError(
            f"{name!r} is a study preset: run it with the main entry point "
            f"(mlflow run . -e main -P preset={name}); run presets: {', '.join(preset_names())}"
        )
    return dict(preset.get("overrides", {}))
