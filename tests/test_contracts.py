"""The contracts between runs are spelled once, in mlproject/contracts.py."""

from __future__ import annotations

import re
from pathlib import Path

from mlproject import contracts
from mlproject.contracts import Tag

MLPROJECT = Path(__file__).resolve().parents[1] / "mlproject"


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
