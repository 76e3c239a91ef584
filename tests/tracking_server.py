"""Helpers for tests against a real tracking server: ``mlflow server`` on PostgreSQL, loopback.

This is a helper module, not a test file. PostgreSQL is the one ``.ci/start-postgres`` starts
(Debian's ``postgresql``, 127.0.0.1:5432, a role that may create databases); another server is
named by ``SPARSE_TICKET_TEST_POSTGRES`` (a URI without a database). Each
:class:`TrackingServer` gets a fresh database of its own and serves artifacts itself
(``--artifacts-destination``: clients upload and download through it, ``mlflow-artifacts:/``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

POSTGRES_ENV = "SPARSE_TICKET_TEST_POSTGRES"
DEFAULT_POSTGRES = "postgresql://sparse_ticket:sparse_ticket@127.0.0.1:5432"


def postgres_base() -> str:
    """The PostgreSQL URI without a database (``postgresql://user:password@host:port``)."""
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES).rstrip("/")


def postgres_problem() -> str | None:
    """Why no test database can be made here (None when one can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    try:
        with psycopg.connect(f"{postgres_base()}/postgres", connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"no PostgreSQL at {postgres_base()} ({first}); as root: bash .ci/start-postgres"
    return None


def create_database() -> str:
    """A fresh, empty database; its URI."""
    import psycopg

    name = f"st_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_base()}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_base()}/{name}"


def drop_database(uri: str) -> None:
    """Drop the database of ``uri`` (closing whatever is still connected to it)."""
    import psycopg

    name = uri.rsplit("/", 1)[1]
    with psycopg.connect(f"{postgres_base()}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TrackingServer:
    """``mlflow server`` on 127.0.0.1 with a PostgreSQL backend store and proxied artifacts.

    The server runs in a process group of its own (uvicorn and its workers), so that
    :meth:`stop` ends all of it; :meth:`restart` stops it and starts it again on the same port,
    against the same database and artifact folder. Its output goes to ``folder/server.log``.
    """

    def __init__(self, backend_uri: str, folder: Path, workers: int = 2) -> None:
        self.backend_uri = backend_uri
        self.folder = folder
        self.artifacts = folder / "artifacts"
        self.log = folder / "server.log"
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts: list[float] = []  # seconds each start took until /health answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until ``GET /health`` answers 200."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job runner
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            env.pop(name, None)
        with self.log.open("a") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')}: {' '.join(self.command())}\n")
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = began + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mlflow server not healthy after {timeout:.0f}s: {self.tail()}")
            time.sleep(0.25)
        self.starts.append(time.monotonic() - began)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Send ``sig`` to the server's whole process group; SIGKILL what is left after
        ``timeout`` seconds. Returns once the port is free again."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the workers may outlive their parent a moment
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def restart(self, down_seconds: float = 0.0, sig: int = signal.SIGKILL) -> None:
        """Kill the server (SIGKILL by default: requests in flight are cut off), stay down
        ``down_seconds``, start it again on the same port."""
        self.stop(sig)
        time.sleep(down_seconds)
        self.start()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
