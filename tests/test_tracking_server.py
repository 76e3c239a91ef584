"""The tiny study on the local SLURM cluster against a real tracking server under load.

``mlflow server`` on PostgreSQL with proxied artifacts, all on 127.0.0.1 (``tests/
tracking_server.py``); at least 4 array tasks run at once against it. What the server holds must
equal what a sqlite run of the same study (``main``, once per module) logged: the same runs, all
FINISHED, the same number of points of every metric of every run, the same ``conditions.csv``;
and so again with the server killed and restarted while transfer tasks train.

Needs PostgreSQL (``.ci/start-postgres``) and the local cluster with at least 4 CPUs
(``slurm/cluster/start-local-cluster.sh``); without them the tests are skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests import slurm_cluster
from tests.conftest import ROOT
from tests.tracking_server import TrackingServer, create_database, drop_database, postgres_problem

TAG = "sparse_ticket."
NODE = f"{TAG}node"
ENTRY_POINT = f"{TAG}entry_point"
CONDITIONS = "evaluation/conditions.csv"
PARALLEL = 4  # array tasks that must run at once


def cluster_cpus() -> int:
    """CPUs of the local cluster's node (0 without a cluster)."""
    if not slurm_cluster.slurm_available():
        return 0
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True)
    return max((int(w) for w in result.stdout.split() if w.isdigit()), default=0)


def skip_reason() -> str | None:
    problem = postgres_problem()
    if problem:
        return problem
    cpus = cluster_cpus()
    if cpus == 0:
        return "no SLURM cluster here (slurm/cluster/start-local-cluster.sh starts one, as root)"
    if cpus < PARALLEL:
        return (
            f"the SLURM node has {cpus} CPUs, fewer than the {PARALLEL} tasks that must run at "
            "once: restart slurm/cluster/start-local-cluster.sh (at least 4 by default)"
        )
    return None


REASON = skip_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(1800),  # the first test also runs the sqlite reference
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]


def clean_env(uri: str, checkpoints: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
    env.update(SPARSE_TICKET_CHECKPOINT_DIR=str(checkpoints), MLFLOW_DISABLE_TELEMETRY="true")
    for leftover in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leftover, None)
    return env


def cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 900) -> str:
    """``python -m sparse_ticket_mlflow ARGS``, asserting success; its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "sparse_ticket_mlflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def study(client: mlflow.MlflowClient, folder: Path) -> dict:
    """What a store holds of the study: per node run its entry point, status and the number of
    points of each metric; every run's status; the evaluation's ``conditions.csv``."""
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=1000
    )
    # node runs by their node, runs nested in them (IMP rounds) by "<node> :: <run name>"
    node_of = {r.info.run_id: r.data.tags[NODE] for r in runs if NODE in r.data.tags}
    nodes = {}
    for run in runs:
        if NODE in run.data.tags:
            node = run.data.tags[NODE]
        elif run.data.tags.get("mlflow.parentRunId") in node_of:
            node = f"{node_of[run.data.tags['mlflow.parentRunId']]} :: {run.info.run_name}"
        else:
            continue  # the study's parent run: main's and the launcher's differ
        counts = {
            key: len(client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics
        }
        assert node not in nodes, f"two runs of node {node}"
        nodes[node] = {
            "entry_point": run.data.tags.get(ENTRY_POINT),
            "status": run.info.status,
            "end_time": run.info.end_time,
            "counts": counts,
        }
    (evaluation,) = [r for r in runs if r.data.tags.get(ENTRY_POINT) == "evaluate"]
    folder.mkdir(parents=True, exist_ok=True)
    table = client.download_artifacts(evaluation.info.run_id, CONDITIONS, str(folder))
    return {
        "nodes": nodes,
        "statuses": sorted({r.info.status for r in runs}),
        "conditions": Path(table).read_text(),
    }


def per_entry_point(nodes: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in nodes.values():
        out[node["entry_point"]] = out.get(node["entry_point"], 0) + 1
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The tiny study run by ``main`` into a sqlite store: what the server must hold too."""
    folder = tmp_path_factory.mktemp("sqlite-reference")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    began = time.monotonic()
    out = cli(
        clean_env(uri, folder / "ckpt"),
        folder,
        "main",
        "--preset",
        "tiny",
        "--workers",
        "2",
        "--output-dir",
        str(folder / "studies"),
    )
    assert "17 nodes: 17 ran, 0 reused, 0 failed" in out
    summary = study(mlflow.MlflowClient(tracking_uri=uri), folder / "download")
    summary["seconds"] = time.monotonic() - began
    print(f"\nsqlite reference: {summary['seconds']:.0f} s, {points(summary['nodes'])} points")
    return summary


@pytest.fixture
def server(tmp_path):
    """A fresh ``mlflow server`` on a fresh PostgreSQL database."""
    database = create_database()
    folder = tmp_path / "server"
    folder.mkdir()
    tracking = TrackingServer(database, folder)
    try:
        tracking.start()
        yield tracking
    finally:
        tracking.stop()
        drop_database(database)


def points(nodes: dict) -> int:
    return sum(sum(node["counts"].values()) for node in nodes.values())


class Watch:
    """Polls the study's array jobs until all ended: the most tasks seen RUNNING at once, and
    (``restart``) the server restarted once while a transfer run is RUNNING in MLflow."""

    def __init__(self, jobs: dict[str, str], server: TrackingServer, restart: bool = False):
        self.jobs = jobs
        self.server = server
        self.restart = restart
        self.most_running = 0
        self.running_at_restart: list[str] = []
        self.down_seconds = 0.0
        self.back_at_ms = 0  # when the restarted server answered again

    def states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for job in self.jobs.values():
            states.update(slurm_cluster.job_states(job) or {job: "UNKNOWN"})
        return states

    def training(self) -> list[str]:
        """Node runs RUNNING now (while a train task runs: transfers and baselines)."""
        client = mlflow.MlflowClient(tracking_uri=self.server.url)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, "attributes.status = 'RUNNING'")
        return [r.data.tags[NODE] for r in runs if NODE in r.data.tags]

    def until_done(self, timeout: float = 1200) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        train = self.jobs["train"]
        while True:
            states = self.states()
            running = [task for task, state in states.items() if state == "RUNNING"]
            self.most_running = max(self.most_running, len(running))
            if all(state in slurm_cluster.TERMINAL_STATES for state in states.values()):
                return states
            if (
                self.restart
                and not self.running_at_restart
                and any(task.startswith(f"{train}_") for task in running)
            ):
                training = self.training()
                if training:
                    self.running_at_restart = training
                    began = time.monotonic()
                    self.server.restart(down_seconds=5)
                    self.down_seconds = time.monotonic() - began
                    self.back_at_ms = int(time.time() * 1000)
            assert time.monotonic() < deadline, f"jobs not finished after {timeout:.0f}s: {states}"
            time.sleep(0.5)


def run_on_slurm(server: TrackingServer, tmp_path: Path, restart: bool) -> tuple[dict, Watch]:
    env = clean_env(server.url, tmp_path / "ckpt")
    out = cli(
        env,
        tmp_path,
        "slurm",
        "submit",
        "--preset",
        "tiny",
        "--container",
        "none",
        "--gpus",
        "0",
        "--cpus-per-task",
        "1",
        "--mem",
        "",
        "--time",
        "30:00",
        "--jobs-dir",
        str(tmp_path / "jobs"),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        timeout=300,
    )
    jobs = {line.split()[0]: line.split()[-1] for line in out.splitlines() if "tasks  job" in line}
    assert list(jobs) == ["dense", "mask", "train", "evaluate"], out
    watch = Watch(jobs, server, restart=restart)
    states = watch.until_done()
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("jobs/*/logs/*"))
    )
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs[-6000:]}"
    summary = study(mlflow.MlflowClient(tracking_uri=server.url), tmp_path / "download")
    return summary, watch


def same_study(summary: dict, reference: dict) -> None:
    assert per_entry_point(summary["nodes"]) == per_entry_point(reference["nodes"])
    # 4 dense, 4 masks, 8 transfers and baselines, 1 evaluation; and 2 IMP rounds per mask
    assert len([n for n in summary["nodes"] if " :: " not in n]) == 17
    assert summary["statuses"] == ["FINISHED"]
    assert {n["status"] for n in reference["nodes"].values()} == {"FINISHED"}
    assert set(summary["nodes"]) == set(reference["nodes"])
    for node, run in summary["nodes"].items():
        assert run["counts"] == reference["nodes"][node]["counts"], node
    assert summary["conditions"] == reference["conditions"]


def describe(label: str, summary: dict, watch: Watch, seconds: float) -> None:
    nodes = summary["nodes"]
    dense = nodes[min(n for n in nodes if n.startswith("dense/"))]
    print(
        f"\n{label}: {seconds:.0f} s, {len(nodes)} runs {per_entry_point(nodes)}, "
        f"{points(nodes)} metric points, at most {watch.most_running} tasks running at once; "
        f"one dense run: {dense['counts']}"
    )


def test_the_tiny_study_on_slurm_against_a_tracking_server(server, reference, tmp_path):
    began = time.monotonic()
    summary, watch = run_on_slurm(server, tmp_path, restart=False)
    describe("tracking server", summary, watch, time.monotonic() - began)
    assert watch.most_running >= PARALLEL
    same_study(summary, reference)


def test_a_server_restart_while_tasks_train_loses_nothing(server, reference, tmp_path):
    began = time.monotonic()
    summary, watch = run_on_slurm(server, tmp_path, restart=True)
    describe("tracking server, restarted", summary, watch, time.monotonic() - began)
    print(
        f"restarted while {watch.running_at_restart} trained; down {watch.down_seconds:.1f} s "
        f"(starts took {[round(s, 1) for s in server.starts]} s)"
    )
    assert watch.running_at_restart, "no node run was RUNNING while the train tasks ran"
    # what trained through the outage went on logging to the restarted server, and ended there
    for node in watch.running_at_restart:
        assert summary["nodes"][node]["end_time"] > watch.back_at_ms, node
    assert len(server.starts) == 2
    same_study(summary, reference)
