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
import stat
from pathlib import Path

from exporter.config import StartError

LOCK_FILE = "perfpulse.lock"


class DataDirLocked(StartError):
    """Another process holds the data directory; the message names it."""


def ensure_private(path: Path) -> Path:
    """Create the directory 0700, or tighten one this user owns to 0700.

    One exception: run as root, the embedded PostgreSQL (`pgdata` inside) runs as a
    system user of its own, which must pass through this directory, by absolute paths,
    for as long as it runs (a checkpoint opens `<pgdata>/global/pg_control`). Then the
    directory's group is the server processes' group and its mode 0710: they may pass,
    nobody else may even list it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        info = path.stat()
        if info.st_uid != os.geteuid():
            return path
        mode, group = 0o700, None
        with contextlib.suppress(FileNotFoundError):
            if (path / "pgdata").stat().st_uid != info.st_uid:
                mode, group = 0o710, _server_group(path / "pgdata")
        if group is not None and info.st_gid != group:
            os.chown(path, -1, group)
        if stat.S_IMODE(info.st_mode) != mode:
            path.chmod(mode)
    return path


def _server_group(pgdata: Path) -> int | None:
    """The group the PostgreSQL running in `pgdata` runs as (pgserver switches only the
    user: the group is the one that started it), from its postmaster.pid."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    for line in status.splitlines():
        if line.startswith("Gid:"):
            return int(line.split()[1])
    return None


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
