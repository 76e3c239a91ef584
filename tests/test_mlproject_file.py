"""The ``MLproject`` file and the command line say the same thing: every entry point's
parameters (names and defaults) are the options of its ``python -m sparse_ticket_mlflow`` command.

Issue 13 (contracts declared once): ``workers`` defaulted to 2 in ``MLproject`` and to 1 on the
command line, so ``mlflow run -e main`` and ``python -m sparse_ticket_mlflow main`` ran different
studies.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from sparse_ticket_mlflow.cli import cli

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def options(command: click.Command) -> dict[str, object]:
    """``{parameter name: default}`` of a click command's options (``--help`` aside)."""
    return {
        p.name: p.default
        for p in command.params
        if isinstance(p, click.Option) and p.name != "help"
    }


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_each_entry_points_parameters_are_its_commands_options(entry_point):
    spec = ENTRY_POINTS[entry_point]
    command = cli.commands[entry_point]
    declared = {name: p.get("default") for name, p in spec["parameters"].items()}
    mine = options(command)
    # the MLproject may leave out options a user sets only on the command line (a checkpoint
    # directory of this machine), never the other way round
    assert set(declared) <= set(mine), set(declared) - set(mine)
    for name, default in declared.items():
        if default is None:  # a required parameter (evaluate's study)
            assert next(p for p in command.params if p.name == name).required, name
        else:
            assert str(mine[name]) == str(default), (
                f"{entry_point} {name}: {mine[name]!r} vs {default!r}"
            )
    # and the command passes every parameter on, as the option of the same name
    for name in declared:
        assert f"--{name.replace('_', '-')} {{{name}}}" in " ".join(spec["command"].split()), name


def test_the_mlproject_file_is_the_only_entry_mlflow_can_take_for_it():
    # mlflow's _find_mlproject returns the first os.listdir entry whose lower-cased name is
    # "mlproject"; the MLflow layer's package was once named mlproject/, so `mlflow run .` read
    # the package directory as the project file wherever the filesystem listed it first (the
    # image's overlayfs did: issue 14). The invariant holds for every listing order.
    matches = [p.name for p in ROOT.iterdir() if p.name.lower() == "mlproject"]
    assert matches == ["MLproject"]
    assert (ROOT / "MLproject").is_file()
