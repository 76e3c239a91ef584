"""The study grid and its DAG: sizes, references, checks and versions, counted by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sparse_ticket.config import ConfigError
from sparse_ticket_mlflow.dag import Node, build_dag, dag_size
from sparse_ticket_mlflow.errors import InputError
from sparse_ticket_mlflow.main import StudyRequest, load, members_per_task, plan
from sparse_ticket_mlflow.node_keys import code_version, node_key
from sparse_ticket_mlflow.presets import load_preset, preset_names, study_preset_names
from sparse_ticket_mlflow.study import load_study

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
description = "two games, two seeds"

[study]
run_preset = "minatar-smoke"
algos = ["ddqn"]
games = ["breakout", "asterix"]
seeds = 2
mask_methods = ["imp", "gmp"]
sparsities = [0.6, 0.8]
transfer_sparsities = [0.8]
adapt = ["none", "gmp"]
adapt_gmp_final_sparsity = 0.9
baselines = ["dense", "gmp", "random"]
random_control = true

[study.overrides]
imp_prune_fraction = 0.5

[study.steps]
dense = 100
mask = 10
transfer = 50
"""


def write_study(tmp_path: Path, text: str = SMALL, name: str = "small") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def by_stage(nodes: list[Node]) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for node in nodes:
        out.setdefault(node.stage, []).append(node)
    return out


def test_small_study_counted_by_hand(tmp_path):
    spec = load_study(write_study(tmp_path))
    nodes = plan(spec)
    stages = by_stage(nodes)
    # dense: 2 games x 2 seeds; masks: (imp + gmp + random at 2 levels) x 2 games x 2 seeds
    assert len(stages["dense"]) == 4
    assert len(stages["mask"]) == 2 * 2 * (2 + 2)
    # transfers: 2 methods x 4 pairs x 1 level x 1 weights x 2 adapt x 2 seeds
    assert len(stages["transfer"]) == 32
    # baselines: 2 targets x 2 seeds x (dense + gmp at 0.8 and at the 0.9 adapt=gmp ends at
    # + random at 0.8: the IMP densities exist at the ticket levels only)
    assert len(stages["baseline"]) == 16  # dense baselines too: steps.dense != steps.transfer
    assert [n.id for n in stages["evaluate"]] == ["evaluate"]
    assert nodes[-1].upstream == sorted(n.id for n in nodes[:-1])
    # IMP at 50% per round to [0.6, 0.8]: 0.5, 0.6, 0.8 -> 3 rounds of 10 steps;
    # GMP: one run per level -> 2 x 10; random: one run of 10 per level node.
    sizes = dag_size(nodes)
    assert sizes["dense"].agent_steps == 4 * 100
    assert sizes["mask"].agent_steps == 4 * 30 + 4 * 20 + 8 * 10
    assert sizes["transfer"].agent_steps == 32 * 50
    assert sizes["baseline"].agent_steps == 16 * 50
    assert sizes["total"].runs == 4 + 16 + 32 + 16 + 1
    assert sizes["total"].frames == sizes["total"].agent_steps  # MinAtar: one frame per step


def test_nodes_reference_their_upstream_runs(tmp_path):
    nodes = {n.id: n for n in plan(load_study(write_study(tmp_path)))}
    imp = nodes["mask/ddqn/breakout/imp/s1"]
    assert imp.upstream == ["dense/ddqn/breakout/s1"]
    assert imp.resolved({"dense/ddqn/breakout/s1": "abc"})["dense_run"] == "runs:/abc"
    assert imp.params["sparsities"] == "0.6,0.8"
    assert nodes["mask/ddqn/breakout/gmp/s0"].upstream == []  # GMP prunes from scratch
    transfer = nodes["transfer/ddqn/gmp/breakout->asterix/0.80/ticket/gmp/s1"]
    assert transfer.upstream == ["mask/ddqn/breakout/gmp/s1"]
    params = transfer.resolved({"mask/ddqn/breakout/gmp/s1": "r1"})
    assert params["mask"] == "runs:/r1/sparsity_0.80/mask.pt"
    assert params["game"] == "asterix" and params["final_sparsity"] == "0.9"
    assert params["seed"] == "1" and params["overrides"] == "imp_prune_fraction=0.5"
    control = nodes["mask/ddqn/asterix/random/0.60/s0"].resolved({"mask/ddqn/asterix/imp/s0": "q"})
    assert control["template"] == "runs:/q/sparsity_0.60/mask.pt"
    random = nodes["baseline/ddqn/breakout/random/0.80/s0"]
    assert random.upstream == ["mask/ddqn/breakout/imp/s0"]
    assert nodes["baseline/ddqn/breakout/gmp/0.80/s0"].params["final_sparsity"] == "0.8"
    assert nodes["baseline/ddqn/asterix/dense/s1"].upstream == []


def test_paper_preset_is_the_proposals_full_study():
    spec = load_study("paper")
    nodes = plan(spec)
    stages = by_stage(nodes)
    assert spec.algos == ["ddqn", "dqv"] and spec.seeds == list(range(10))
    assert spec.sources == spec.targets == ["pong", "breakout", "space_invaders"]
    assert len(stages["dense"]) == 2 * 3 * 10
    assert len(stages["mask"]) == 2 * 3 * 10 * (2 + 3)  # imp, gmp, random at 3 levels
    # 2 algos x 2 methods x 9 pairs x 3 levels x 3 adapt x 10 seeds
    assert len(stages["transfer"]) == 3240
    # 2 algos x 3 targets x 10 seeds x gmp at 3 levels and at the 0.9 adapt=gmp ends at; dense
    # from scratch on the target is the source's train-dense run (same budget, same seed)
    assert len(stages["baseline"]) == 240
    sizes = dag_size(nodes)
    assert sizes["transfer"].agent_steps == 3240 * 10_000_000
    assert sizes["total"].frames == 4 * sizes["total"].agent_steps


@pytest.mark.parametrize("name", ["demo", "minatar", "tiny", "paper"])
def test_shipped_study_presets_plan(name):
    assert name in study_preset_names()
    assert plan(load_study(name))[-1].id == "evaluate"


def test_run_presets_and_study_presets_are_told_apart():
    assert "smoke" in preset_names() and "smoke" not in study_preset_names()
    assert "minatar" in preset_names() and "minatar" in study_preset_names()  # both tables
    with pytest.raises(ConfigError, match="study preset: run it with the main entry point"):
        load_preset("demo")
    with pytest.raises(ConfigError, match="unknown study preset 'smoke'"):
        load_study("smoke")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('adapt = ["none", "gmp"]', 'adapt = ["none", "prune"]'), "unknown adapt"),
        (("adapt_gmp_final_sparsity = 0.9", "adapt_gmp_final_sparsity = 0.7"), r"in \(0.8, 1\)"),
        (("transfer_sparsities = [0.8]", "transfer_sparsities = [0.7]"), "among sparsities"),
        (('mask_methods = ["imp", "gmp"]', 'mask_methods = ["gmp"]'), "copy IMP masks"),
        (("seeds = 2", "seeds = 2\ncolour = 3"), "unknown field"),
        (("dense = 100", "dense = 0"), "steps must be positive"),
        (("seeds = 2", "seeds = 2\nmembers_per_task = 0"), "members_per_task must be at least 1"),
        (('algos = ["ddqn"]', "algos = []"), "algos is empty"),
        (('algos = ["ddqn"]', 'algos = "ddqn"'), "expected a list"),
        (('algos = ["ddqn"]', 'algos = ["ddqn"'), "not valid TOML"),
    ],
)
def test_bad_study_files_name_the_field(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_study(write_study(tmp_path, SMALL.replace(*change)))


def test_bad_run_config_in_a_study_is_input_error(tmp_path):
    path = write_study(tmp_path, SMALL.replace("imp_prune_fraction = 0.5", "colour = 1"))
    with pytest.raises(InputError, match="colour"):
        load(StudyRequest(preset=path))
    path = write_study(tmp_path, SMALL.replace('"asterix"]', '"pong_ii"]'), "games")
    with pytest.raises(InputError, match="unknown minatar game 'pong_ii'"):
        load(StudyRequest(preset=path))


def test_node_key_changes_with_params_upstream_and_code():
    node = Node("n", "dense", "train-dense", {"seed": "0"})
    key = node_key(node, {"seed": "0"}, "code1", [])
    assert key == node_key(node, {"seed": "0"}, "code1", [])
    assert key != node_key(node, {"seed": "1"}, "code1", [])
    assert key != node_key(node, {"seed": "0"}, "code2", [])
    assert key != node_key(node, {"seed": "0"}, "code1", ["upstream-run"])


def test_code_version_sees_code_not_docs_or_launchers(tmp_path):
    for part in ("sparse_ticket", "sparse_ticket_mlflow"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "MLproject", tmp_path / "MLproject")
    before = code_version(tmp_path)
    (tmp_path / "README.md").write_text("docs change nothing")
    assert code_version(tmp_path) == before
    for launcher in ("main.py", "slurm.py", "study.py", "presets/demo.toml"):
        target = tmp_path / "sparse_ticket_mlflow" / launcher
        target.write_text(target.read_text() + "\n# launching, not computing\n")
    assert code_version(tmp_path) == before
    computing = (
        "sparse_ticket/runner.py",
        "sparse_ticket_mlflow/transfer.py",
        "sparse_ticket_mlflow/presets/smoke.toml",
    )
    for code in computing:
        target = tmp_path / code
        target.write_text(target.read_text() + "\n# a change\n")
        assert code_version(tmp_path) != before
        before = code_version(tmp_path)


def test_build_dag_without_imp_needs_no_dense_parent(tmp_path):
    text = SMALL.replace('"imp", "gmp"', '"gmp"').replace("random_control = true", "")
    text = text.replace('["dense", "gmp", "random"]', '["dense"]')
    nodes = build_dag(load_study(write_study(tmp_path, text)), imp_rounds=0, frames_per_step=1)
    assert all(n.stage != "mask" or n.upstream == [] for n in nodes)


def test_dense_runs_serve_as_dense_baselines_at_the_same_budget(tmp_path):
    text = SMALL.replace("transfer = 50", "transfer = 100")
    nodes = {n.id for n in plan(load_study(write_study(tmp_path, text)))}
    assert "baseline/ddqn/breakout/dense/s0" not in nodes
    assert "dense/ddqn/breakout/s0" in nodes
    games = 'sources = ["breakout"]\ntargets = ["breakout", "asterix"]'
    text = text.replace('games = ["breakout", "asterix"]', games)
    text = text.replace('"random"]', "]")
    nodes = {n.id for n in plan(load_study(write_study(tmp_path, text)))}
    assert "baseline/ddqn/breakout/dense/s0" not in nodes
    assert "baseline/ddqn/asterix/dense/s0" in nodes  # asterix is no source


def test_a_preset_sets_the_default_packing_and_the_command_line_overrides_it(tmp_path):
    spec = load_study(
        write_study(tmp_path, SMALL.replace("seeds = 2", "seeds = 2\nmembers_per_task = 3"))
    )
    assert spec.members_per_task == 3
    assert members_per_task("", spec) == 3  # -P members_per_task left empty: the preset's
    assert members_per_task("1", spec) == 1
    assert load_study(write_study(tmp_path, SMALL)).members_per_task == 1
    assert load_study("demo").members_per_task == 2  # both seeds of a node in one process
    with pytest.raises(InputError, match="members_per_task"):
        members_per_task("0", spec)
