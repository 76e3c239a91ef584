"""What identifies a result: the code version, a node's key, a study's key.

A node of a study is reused when a finished run with its key exists; the key covers everything
that makes the node's result (:func:`node_key`), the code included (:func:`code_version`). This
module is pure: it knows nothing of MLflow (see :mod:`sparse_ticket_mlflow.node_runs`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sparse_ticket_mlflow.dag import Node
from sparse_ticket_mlflow.presets import read_preset

CODE_DIRS = ("sparse_ticket", "sparse_ticket_mlflow")
CODE_FILES = ("MLproject", "requirements.txt", "pyproject.toml")


def code_version(root: Path | None = None) -> str:
    """A content hash of the code that decides a result.

    The library, the entry points and run presets, ``MLproject`` and the pinned requirements: a
    change to any of them makes every node of a study run again. Left out: what only plans and
    launches nodes (:data:`LAUNCH_ONLY`: the study's modules, the driver, the SLURM launcher;
    study-only presets: whatever of theirs matters is in each node's parameters), and the README,
    tests and benchmarks. Unlike a git commit it also sees uncommitted edits, and it works in an
    image without ``.git``.
    """
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = [p for d in CODE_DIRS for p in sorted((root / d).rglob("*")) if _is_code(p, root)]
    files += [root / name for name in CODE_FILES if (root / name).is_file()]
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


LAUNCH_ONLY = (
    "sparse_ticket_mlflow/study.py",
    "sparse_ticket_mlflow/dag.py",
    "sparse_ticket_mlflow/node_keys.py",
    "sparse_ticket_mlflow/main.py",
    "sparse_ticket_mlflow/node_runs.py",
    "sparse_ticket_mlflow/scheduler.py",
    "sparse_ticket_mlflow/slurm.py",
)


def _is_code(path: Path, root: Path) -> bool:
    if not path.is_file() or path.suffix not in (".py", ".toml") or "__pycache__" in path.parts:
        return False
    if path.relative_to(root).as_posix() in LAUNCH_ONLY:
        return False
    return path.suffix == ".py" or "overrides" in read_preset(path)


def node_key(node: Node, params: dict[str, str], code: str, upstream: list[str]) -> str:
    """What makes a node's result: entry point, resolved params, upstream runs, code version."""
    payload = json.dumps(
        {"entry": node.entry_point, "params": params, "upstream": upstream, "code": code},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def study_key(preset_text: bytes, code: str) -> str:
    """One study: its preset file and the code version."""
    return hashlib.sha256(preset_text + code.encode()).hexdigest()[:12]
