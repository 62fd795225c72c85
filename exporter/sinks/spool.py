"""The writer's spool: snapshots that could not be written before shutdown, kept on disk
(JSON lines) and written by the next start."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import orjson

from exporter.datadir import ensure_private
from exporter.storage.ingest import StoredSnapshot


class Spool:
    """One file (0600); `save` replaces it atomically (written, fsynced, renamed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, snapshots: Sequence[StoredSnapshot]) -> None:
        ensure_private(self.path.parent)
        temporary = self.path.with_suffix(".tmp")
        # 0600: the spool holds this host's snapshots.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            for s in snapshots:
                file.write(
                    orjson.dumps(
                        {"timestamp": s.timestamp.isoformat(), "host": s.host, "rows": s.rows}
                    )
                    + b"\n"
                )
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.path)

    def read(self) -> list[StoredSnapshot]:
        """The spooled snapshots (none when there is no file). The file stays until
        `remove()`: a crash before they are stored loses nothing (writing twice is
        harmless, the insert skips what is stored)."""
        if not self.path.exists():
            return []
        snapshots = []
        for line in self.path.read_bytes().splitlines():
            try:
                item = orjson.loads(line)
                snapshots.append(
                    StoredSnapshot(
                        datetime.fromisoformat(item["timestamp"]),
                        item["host"],
                        tuple((t, d) for t, d in item["rows"]),
                    )
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn last line after a crash
        return snapshots

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
