"""The Docker image, built and run: as the non-root user, with ``/data`` on a named volume.

CI builds the image with ``.ci/build-image`` (the same Dockerfile users build, with the CPU torch
wheel) and names it in ``SPARSE_TICKET_TEST_IMAGE``; without that variable these tests skip.
Results are read on the host from the volume's directory (the tests run as root, as CI does).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("SPARSE_TICKET_TEST_IMAGE", "")

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not IMAGE, reason="no image: CI sets SPARSE_TICKET_TEST_IMAGE"),
]

MINATAR = ["--game", "breakout", "--preset", "minatar-smoke"]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture
def volume():
    """A fresh named volume and its directory on the host."""
    name = f"st-test-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    path = Path(docker("volume", "inspect", "-f", "{{ .Mountpoint }}", name).stdout.strip())
    yield name, path
    docker("volume", "rm", "-f", name, check=False)


def run_in_image(volume_name: str, *command: str, timeout: float = 600, name: str = ""):
    args = ["run", "--rm", "--network", "host", "-v", f"{volume_name}:/data"]
    args += ["--name", name] if name else []
    return docker(*args, IMAGE, *command, timeout=timeout, check=False)


def client_of(data: Path) -> mlflow.MlflowClient:
    """The image's tracking store (``/data/mlflow.db``), read from the host."""
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{data / 'mlflow.db'}")


def all_runs(client: mlflow.MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=5000)


def image_revision() -> str:
    labels = json.loads(docker("image", "inspect", "-f", "{{ json .Config.Labels }}", IMAGE).stdout)
    return labels["org.opencontainers.image.revision"]


def test_the_image_runs_as_a_user_and_records_its_commit():
    result = docker("run", "--rm", IMAGE, "sh", "-c", "id -u; echo $SPARSE_TICKET_GIT_COMMIT")
    uid, commit = result.stdout.split()
    assert uid == "1000"
    assert commit == image_revision() != "unknown"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # CI builds the checkout it tests
        assert commit.removesuffix("-dirty") == head.stdout.strip()


def test_the_image_holds_exactly_requirements_txt():
    # Every distribution in the image is a pin of requirements.txt, a dependency of one, pip, or
    # the project itself (installed --no-deps): nothing else was installed.
    script = (
        "import json, re, importlib.metadata as m\n"
        "ds = {d.metadata['Name'].lower().replace('_', '-'): d for d in m.distributions()}\n"
        "needed = {re.split(r'[ ;<>=!~\\[(]', r, 1)[0].lower().replace('_', '-')\n"
        "          for d in ds.values() for r in (d.requires or []) if 'extra ==' not in r}\n"
        "print(json.dumps({n: [d.version, n in needed] for n, d in ds.items()}))\n"
    )
    found = json.loads(docker("run", "--rm", IMAGE, "python", "-c", script).stdout)
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    for name, version in pins.items():
        assert name in found, f"{name} is not in the image"
        assert found[name][0].split("+")[0] == version, (name, found[name][0], version)
    roots = {name for name, (_, needed) in found.items() if not needed}
    assert roots - set(pins) <= {"pip", "sparse-ticket"}, sorted(roots - set(pins))
    assert docker("run", "--rm", IMAGE, "pip", "check").returncode == 0


def test_docker_stop_checkpoints_ends_killed_and_a_second_run_resumes(volume):
    name, data = volume
    container = f"st-stop-{uuid.uuid4().hex[:8]}"
    command = [
        "python",
        "-m",
        "sparse_ticket_mlflow",
        "train-dense",
        *MINATAR,
        "--total-steps",
        "8000",
    ]
    docker("run", "-d", "--network", "host", "-v", f"{name}:/data", "--name", container,
           IMAGE, *command)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(data.glob("checkpoints/*/step_*/COMPLETE")):
            assert time.monotonic() < deadline, docker("logs", container, check=False).stderr
            time.sleep(0.2)
        docker("stop", "-t", "120", container, timeout=180)
        code = docker("wait", container).stdout.strip()
        logs = docker("logs", container, check=False).stderr
    finally:
        docker("rm", "-f", container, check=False)
    assert code == "143", logs
    (run,) = all_runs(client_of(data))
    assert run.info.status == "KILLED"
    assert "resume with --resume" in logs

    resumed = run_in_image(name, "python", "-m", "sparse_ticket_mlflow", "train-dense", "--resume",
                           run.info.run_id)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client_of(data).get_run(run.info.run_id)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_the_tiny_study_end_to_end_in_the_image(volume):
    name, data = volume
    result = run_in_image(
        name, "mlflow", "run", ".", "-e", "main", "--env-manager", "local",
        "-P", "preset=tiny", "-P", "workers=2", timeout=3000,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = (data / "studies" / "tiny" / "evaluation" / "conditions.csv").read_text()
    assert len(table.strip().splitlines()) == 7  # a header and the tiny study's six conditions
    runs = all_runs(client_of(data))
    assert runs and {r.info.status for r in runs} == {"FINISHED"}
    commits = {r.data.tags.get("sparse_ticket.git_commit") for r in runs}
    assert commits - {None} == {image_revision()}
