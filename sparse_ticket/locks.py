"""One writer at a time: an exclusive, non-blocking ``flock`` on a file.

Two processes that train (or resume) the same run would interleave their checkpoints and log
every metric twice; two ``main`` processes on one study would launch every node twice. The
first process to lock wins; the second gets :class:`LockHeld` at once (it never waits).

The kernel drops a ``flock`` when its process dies, however it dies (SIGKILL, OOM, a node lost
to the scheduler), so a lock left behind by a killed process never blocks a resume: the lock
file may remain, but it is not locked. The file holds the holder's pid and host for the message
(it is informative only; the lock is the ``flock``). ``flock`` is local to one kernel, and on
NFS (v4, Linux >= 2.6.12) it is emulated with byte-range locks, which the server arbitrates.

Where the locks are::

    <checkpoint root>/<run id>/LOCK        held by the Runner training that run
    <output dir>/<study name>/LOCK         held by ``main`` while it runs the study
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

__all__ = ["LOCK_FILE", "FileLock", "LockHeld"]

LOCK_FILE = "LOCK"


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


class FileLock:
    """An exclusive lock on ``path`` (created with its parents), held until :meth:`release`.

    Args:
        path: The lock file.
        what: What the lock guards, for the message (e.g. ``"run 3f2a..."``).
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        """Take the lock, or raise :class:`LockHeld` naming the holder; returns ``self``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockHeld(f"{self.what} is in use by {holder} (lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: removing it would race a new holder."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
