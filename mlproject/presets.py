"""Named configuration presets (TOML files in ``mlproject/presets``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sparse_ticket.config import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The ``[overrides]`` table of preset ``name`` (ConfigError if there is no such preset)."""
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (one of {', '.join(preset_names())})")
    with path.open("rb") as handle:
        return dict(tomllib.load(handle).get("overrides", {}))
