"""The MLflow UI as a researcher meets it: a finished study in its own experiment, marked as model
training, its node runs tagged with their condition, its runs table in headless Chromium.

One tiny study (``mlflow run . -e main``, no experiment chosen: the way the README starts one) is
run once for the module; the tests read its store. The screenshot test needs Debian's
``chromium`` (``.ci/install-chromium``) and is skipped without it. With
``SPARSE_TICKET_UI_SCREENSHOT=<file>`` it also saves its screenshot there (the README's
``docs/img/ui-runs.png``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from sparse_ticket_mlflow.contracts import (
    CONDITION_TAGS,
    EXPERIMENT_KIND,
    MODEL_TRAINING,
    MODEL_TRAINING_WORKFLOW,
    SHARED_VIEW,
    WORKFLOW_PARAM,
    Tag,
)
from sparse_ticket_mlflow.node_runs import study_view_route
from tests.conftest import ROOT, use_store

pytestmark = pytest.mark.integration

STUDY = "tiny"
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished ``tiny`` study (two seeds packed per process), run as the README runs one."""
    folder = tmp_path_factory.mktemp("ui-study")
    with pytest.MonkeyPatch.context() as patch:
        uri = use_store(folder, patch)
        command = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "main"]
        command += ["--env-manager", "local", "-P", f"preset={STUDY}", "-P", "workers=2"]
        command += ["-P", "members_per_task=2", "-P", f"output_dir={folder / 'studies'}"]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield {"uri": uri, "folder": folder, "stdout": result.stdout}
    mlflow.set_tracking_uri(None)


def study_experiment():
    return mlflow.MlflowClient().get_experiment_by_name(STUDY)


def node_runs(experiment_id: str) -> list:
    runs = mlflow.MlflowClient().search_runs([experiment_id], max_results=1000)
    return [r for r in runs if Tag.NODE in r.data.tags]


# ----------------------------------------------------------------------------- the store
def expected_condition(run, runs_by_id: dict) -> dict[str, str]:
    """A node run's condition, read from its parameters (and its mask's find-mask run)."""
    params, node = run.data.params, run.data.tags[Tag.NODE]
    algo, seed, game = params["algo"], params["seed"], params["game"]
    stage = node.split("/")[0]
    if stage == "dense":
        return dict(algo=algo, source=game, target=game, method="dense", level="0.00", seed=seed)
    if stage == "mask":
        return dict(algo=algo, source=game, method=params["method"], seed=seed)
    mask = params.get("mask", "")
    found = re.fullmatch(r"runs:/(\w+)/sparsity_(\d\.\d\d)/mask\.pt", mask)
    if stage == "baseline":
        level = found.group(2) if found else f"{float(params.get('final_sparsity') or 0):.2f}"
        method = f"baseline-{params['baseline']}"
        return dict(algo=algo, target=game, method=method, level=level, adapt="none", seed=seed)
    source = runs_by_id[found.group(1)].data.params
    return dict(
        algo=algo,
        source=source["game"],
        target=game,
        method=source["method"],
        level=found.group(2),
        weights=params["weights"],
        adapt=params["adapt"],
        seed=seed,
    )


@pytest.mark.timeout(1200)
def test_a_study_has_its_own_experiment_and_default_points_at_it(study):
    experiment = study_experiment()
    assert experiment is not None and experiment.experiment_id != "0"
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING
    client = mlflow.MlflowClient()
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get(Tag.ENTRY_POINT) == "main"]
    assert len(node_runs(experiment.experiment_id)) == 17
    assert {r.data.tags["mlflow.parentRunId"] for r in node_runs(experiment.experiment_id)} == {
        parent.info.run_id
    }
    # `mlflow run`'s own run stayed in Default, pointing at the study
    (launcher,) = client.search_runs(["0"])
    assert launcher.info.status == "FINISHED"
    assert launcher.data.tags[Tag.STUDY_EXPERIMENT] == experiment.experiment_id
    assert launcher.data.tags[Tag.STUDY_RUN] == parent.info.run_id
    assert Tag.ENTRY_POINT not in launcher.data.tags
    # the study's saved view, and the line that says how to open it
    key = parent.data.tags[Tag.STUDY_KEY]
    view = json.loads(experiment.tags[SHARED_VIEW + key])
    assert view["searchFilter"] == parent.data.tags[Tag.STUDY_FILTER]
    assert study_view_route(experiment.experiment_id, key) in study["stdout"]


@pytest.mark.timeout(1200)
def test_every_node_run_carries_its_condition_as_tags(study):
    experiment = study_experiment()
    runs = mlflow.MlflowClient().search_runs([experiment.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    checked = 0
    for run in node_runs(experiment.experiment_id):
        if run.data.tags[Tag.NODE] == "evaluate":
            assert not set(CONDITION_TAGS.values()) & set(run.data.tags)
            continue
        expected = expected_condition(run, by_id)
        tags = {name: run.data.tags.get(tag) for name, tag in CONDITION_TAGS.items()}
        assert {k: v for k, v in tags.items() if v is not None} == expected, run.data.tags
        checked += 1
    assert checked == 16  # 4 dense, 4 masks, 8 transfers (the dense runs are the baselines)


# ----------------------------------------------------------------------------- the browser
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(study):
    """``mlflow server`` on 127.0.0.1 over the study's store; its address."""
    port = free_port()
    log = open(study["folder"] / "server.log", "w")  # noqa: SIM115 (closed below)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--backend-store-uri", study["uri"]]
    command += ["--default-artifact-root", str(study["folder"] / "mlruns")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((study["folder"] / "server.log").read_text()) from None
                time.sleep(0.5)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def chromium(url: str, *args: str, size: str = "1600,1000", budget_ms: int = 30000) -> str:
    """Headless Chromium on ``url`` with a fresh profile; its stdout (``--dump-dom``)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
        command += ["--no-first-run", "--disable-background-networking"]
        command += ["--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
        command += [f"--window-size={size}", f"--virtual-time-budget={budget_ms}", *args, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rest(address: str, path: str) -> dict:
    with urllib.request.urlopen(f"{address}/api/2.0/mlflow/{path}", timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/install-chromium)")
def test_the_study_opens_on_its_runs_table_in_headless_chromium(study, server, tmp_path):
    found = rest(server, f"experiments/get-by-name?experiment_name={STUDY}")["experiment"]
    tags = {t["key"]: t["value"] for t in found.get("tags", [])}
    assert tags[EXPERIMENT_KIND] == MODEL_TRAINING  # what the UI reads
    experiment_id = found["experiment_id"]

    # The experiment's page on the UI's Model training side is its runs table (not the GenAI
    # overview it shows on the GenAI side): the study's parent run, one row.
    page = f"{server}/#/experiments/{experiment_id}?{WORKFLOW_PARAM}={MODEL_TRAINING_WORKFLOW}"
    dom = chromium(page, "--dump-dom")
    assert f"<title>Runs - Experiment {experiment_id} - MLflow</title>" in dom, dom[-3000:]
    assert f"study {STUDY}" in dom

    # The route main prints: the study's view, every node run in a row of its own with its
    # condition columns (a wide window: the table renders only the columns in sight).
    key = next(t[len(SHARED_VIEW) :] for t in tags if t.startswith(SHARED_VIEW))
    url = f"{server}/{study_view_route(experiment_id, key)}"
    dom = chromium(url, "--dump-dom", size="3000,1400")
    assert f"<title>Runs - Experiment {experiment_id} - MLflow</title>" in dom, dom[-3000:]
    transfer = "transfer/ddqn/imp/breakout->asterix/0.80/ticket/set/s1"
    for node in ("dense/ddqn/breakout/s0", transfer):
        assert node.replace(">", "&gt;") in dom, node
    for tag in CONDITION_TAGS.values():
        assert tag in dom, tag
    assert "17 matching runs" in re.sub(r"<[^>]+>", "", dom)
    screenshot = tmp_path / "ui-runs.png"
    chromium(url, f"--screenshot={screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    if os.environ.get("SPARSE_TICKET_UI_SCREENSHOT"):
        shutil.copy(screenshot, Path(os.environ["SPARSE_TICKET_UI_SCREENSHOT"]))
