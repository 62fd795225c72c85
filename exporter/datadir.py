"""The data directory: private (0700), and held by one perfpulse server at a time.

It holds the embedded PostgreSQL, the generated JWT key, the first admin's password and
the writer's spool. A second `perfpulse serve` on the same directory would start a
second sampler and perf child, try to start PostgreSQL on a live cluster, and spool
into the first one's directory; the lock, taken before anything else, stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from exporter.config import StartError

LOCK_FILE = "perfpulse.lock"


class DataDirLocked(StartError):
    """Another process holds the data directory; the message names it."""


def ensure_private(path: Path) -> Path:
    """Create the directory 0700, or tighten one this user owns to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        info = path.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            path.chmod(0o700)
    return path


class DataDirLock:
    """An exclusive `flock` on `<data dir>/perfpulse.lock`, holding this process's PID.

    The kernel drops the lock when the process exits, however it exits: no stale locks.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        ensure_private(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"data directory {self.path.parent} is in use by another perfpulse "
                f"(PID {holder}); stop it, or give this one its own PERFPULSE_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
