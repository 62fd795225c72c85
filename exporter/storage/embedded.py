"""An embedded PostgreSQL (real server binaries from the pgserver wheel) in the data dir."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from exporter.datadir import ensure_private

log = logging.getLogger(__name__)

DATABASE = "perfpulse"
# The embedded server is perfpulse's own: fewer wake-ups when it is nearly idle. None of
# these touches durability: every commit still waits for its WAL to be flushed
# (synchronous_commit and fsync stay on); crash recovery replays at most a longer stretch.
IDLE_SETTINGS = {
    "wal_writer_delay": "10s",  # the WAL writer only matters for asynchronous commits
    "bgwriter_delay": "10s",  # a few MB of dirty pages: the checkpointer writes them
    "checkpoint_timeout": "15min",  # WAL volume is small; fewer checkpoints
    "autovacuum_naptime": "5min",  # append-only partitions; retention drops, not deletes
}


class EmbeddedPostgres:
    """Starts (or joins) the server in `<data_dir>/pgdata`; stops it when the last user leaves.

    Several perfpulse processes (the server, `perfpulse users ...`) share one embedded
    server: pgserver keeps a list of the processes using it and stops it with the last.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server: Any = None

    async def start(self) -> str:
        """Start the server if needed, create the database, return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (services, CI);
            # pgserver then uses /tmp, which is fine.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server  # imported only when embedded

        ensure_private(self.pgdata.parent)
        log.info("starting embedded PostgreSQL in %s", self.pgdata)
        self._server = await asyncio.to_thread(get_server, self.pgdata, cleanup_mode="stop")
        # Run as root, pgserver starts PostgreSQL as its own system user and opens every
        # directory above pgdata to everyone (o+rx) so that user can reach it. The data
        # directory also holds the JWT key and the initial admin's password: it goes
        # back to private, with only that user let through (exporter/datadir.py).
        ensure_private(self.pgdata.parent)
        admin_url = self._server.get_uri()
        conn = await asyncpg.connect(admin_url)
        try:
            await tune(conn, IDLE_SETTINGS)
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # created by a process starting at the same time
        finally:
            await conn.close()
        return url_for(admin_url, DATABASE)

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
            self._server = None


def url_for(admin_url: str, database: str) -> str:
    """The same server's URL with another database (pgserver URLs put the socket in ?host=)."""
    base, sep, query = admin_url.partition("?")
    scheme_host = base.rsplit("/", 1)[0]
    return f"{scheme_host}/{quote(database)}{sep}{query}"


async def tune(conn: asyncpg.Connection, settings: dict[str, str]) -> list[str]:
    """ALTER SYSTEM the settings that differ, and reload; returns their names."""
    changed = []
    for name, value in settings.items():
        current = await conn.fetchval(
            "SELECT current_setting($1) = $2 OR setting || coalesce(unit, '') = $2 "
            "FROM pg_settings WHERE name = $1",
            name,
            value,
        )
        if not current:
            # Names and values are constants above, never input.
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            changed.append(name)
    if changed:
        await conn.execute("SELECT pg_reload_conf()")
        log.info("embedded PostgreSQL: set %s", ", ".join(changed))
    return changed
