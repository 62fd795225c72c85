"""The writer's spool: snapshots that could not be written before shutdown, kept on disk
(JSON lines) and written by the next start."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import orjson

from exporter.storage.ingest import StoredSnapshot


class Spool:
    """One file; `save` replaces it atomically (written, fsynced, renamed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, snapshots: Sequence[StoredSnapshot]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as file:
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

    def take(self) -> list[StoredSnapshot]:
        """The spooled snapshots, and the file removed; none when there is no file."""
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
        self.path.unlink()
        return snapshots
