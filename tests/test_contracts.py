"""The contracts between runs are spelled once, in sparse_ticket_mlflow/contracts.py."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import yaml

from sparse_ticket import config, transfer
from sparse_ticket_mlflow import contracts, study
from sparse_ticket_mlflow.cli import cli
from sparse_ticket_mlflow.contracts import Tag
from sparse_ticket_mlflow.find_mask import FindMaskRequest
from sparse_ticket_mlflow.main import StudyRequest
from sparse_ticket_mlflow.runs import TrainRequest
from sparse_ticket_mlflow.slurm import SubmitRequest
from sparse_ticket_mlflow.transfer import TransferRequest

MLPROJECT = Path(__file__).resolve().parents[1] / "sparse_ticket_mlflow"


def sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in MLPROJECT.glob("*.py") if p.name != "contracts.py"}


def test_no_module_spells_a_tag_key_or_the_prefix():
    # A tag key written out by hand (or a prefix glued to a name) is a contract declared twice.
    for name, text in sources().items():
        assert not re.search(r"[\"']sparse_ticket\.", text), name


def test_no_module_spells_an_artifact_file_of_the_contract():
    files = [contracts.MASK, contracts.TICKET, contracts.TRAINED, contracts.REWIND]
    files += [contracts.INIT_WEIGHTS, contracts.FINAL_WEIGHTS, contracts.TICKETS, contracts.CONFIG]
    for name, text in sources().items():
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for file in files:
            assert f'"{file}"' not in code, (name, file)


def test_tag_keys_are_unique_and_prefixed():
    keys = [v for k, v in vars(Tag).items() if k.isupper()]
    assert len(keys) == len(set(keys))
    assert all(key.startswith("sparse_ticket.") for key in keys)
    assert Tag.ENTRY_POINT == "sparse_ticket.entry_point"  # what stored runs already carry


def test_artifact_paths_by_hand():
    assert contracts.sparsity_folder(0.8) == "sparsity_0.80"
    assert contracts.rewind_file(0) == "init.pt"
    assert contracts.rewind_file(20_000) == "step_20000.pt"
    assert contracts.checkpoint_weights("final.pt") == "checkpoints/final.pt"
    assert contracts.run_uri("abc", "sparsity_0.80/mask.pt") == "runs:/abc/sparsity_0.80/mask.pt"


# ---------------------------------------------------------------------------- parameters
ENTRY_POINTS = yaml.safe_load((MLPROJECT.parent / "MLproject").read_text())["entry_points"]


def test_mlproject_declares_exactly_the_contracts_parameters_with_their_defaults():
    assert set(ENTRY_POINTS) == set(contracts.MLPROJECT_ENTRY_POINTS)
    for entry_point, spec in ENTRY_POINTS.items():
        declared = {name: p.get("default") for name, p in spec["parameters"].items()}
        mine = {
            p.name: None if p.required else p.default
            for p in contracts.PARAMETERS[entry_point]
            if not p.cli_only
        }
        assert declared == mine, entry_point
        assert all(p["type"] == "string" for p in spec["parameters"].values()), entry_point


def test_the_command_line_options_are_made_from_the_contract():
    commands = {**cli.commands, contracts.SLURM_SUBMIT: cli.commands["slurm"].commands["submit"]}
    for entry_point, params in contracts.PARAMETERS.items():
        options = [p for p in commands[entry_point].params if isinstance(p, click.Option)]
        assert [o.name for o in options] == [p.name for p in params], entry_point
        for option, param in zip(options, params, strict=True):
            assert option.opts == [param.flag]
            assert option.required == param.required
            if not param.required:
                assert option.default == param.default, (entry_point, param.name)


def test_the_request_types_are_made_from_the_contract():
    requests = {
        contracts.TRAIN_DENSE: TrainRequest,
        contracts.FIND_MASK: FindMaskRequest,
        contracts.TRANSFER: TransferRequest,
        contracts.MAIN: StudyRequest,
        contracts.SLURM_SUBMIT: SubmitRequest,
    }
    for entry_point, request in requests.items():
        fields = {f.name: f.default for f in dataclasses.fields(request)}
        assert contracts.defaults(entry_point).items() <= fields.items(), entry_point
    # find-mask and transfer requests are training requests: build_config reads them alike
    assert issubclass(FindMaskRequest, TrainRequest) and issubclass(TransferRequest, TrainRequest)
    assert TransferRequest(game="breakout").preset == "default"


def test_allowed_values_are_the_librarys_own_lists():
    # the help of an option lists the very tuple the library checks against, not a copy
    choices = {
        (p.name, ep): p.choices for ep, ps in contracts.PARAMETERS.items() for p in ps if p.choices
    }
    assert choices[("algo", contracts.TRAIN_DENSE)] is config.ALGOS
    assert choices[("scope", contracts.FIND_MASK)] is config.SCOPES
    assert choices[("allocation", contracts.FIND_MASK)] is config.ALLOCATIONS
    assert choices[("baseline", contracts.TRANSFER)] is transfer.BASELINES
    assert choices[("weights", contracts.TRANSFER)] is transfer.WEIGHT_MODES
    assert study.MASK_METHODS == ("imp", "gmp")
    param = next(p for p in contracts.PARAMETERS[contracts.TRANSFER] if p.name == "weights")
    assert param.help_text().endswith("One of: ticket, trained, reinit.")


def test_the_registries_hold_exactly_the_configs_names():
    # a class registered under a name the config rejects (or the reverse) could never be built
    from sparse_ticket.agents import AGENTS
    from sparse_ticket.nets import ENCODERS

    assert tuple(AGENTS) == config.ALGOS
    assert tuple(ENCODERS) == config.ENCODERS
