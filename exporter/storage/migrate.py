"""Numbered SQL migrations, applied once each, in order, under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Any 64-bit number unique to perfpulse: serializes concurrent starts.
ADVISORY_LOCK_ID = 0x70657266_70756C73  # "perfpuls"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The SQL files shipped in exporter/storage/migrations, by version."""
    found = []
    for entry in resources.files("exporter.storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now.

    Safe to run from several processes at once: the advisory lock makes the later ones
    wait and then find nothing to do.
    """
    applied_now: list[Migration] = []
    # One transaction and a transaction-level lock: a session lock would not survive a
    # transaction-mode pooler, which may run the unlock on another server connection.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_ID)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied_now.append(migration)
        await grant_reader(conn)
    for migration in applied_now:
        log.info("applied migration %04d_%s", migration.version, migration.name)
    return [migration.version for migration in applied_now]


# The read-only role Grafana connects as (deploy/postgres/10-grafana-reader.sh creates
# it): SELECT on the metrics tables, nothing else (never the users' password hashes).
READER_ROLE = "grafana_reader"
READABLE_TABLES = ("metrics_snapshots", "metrics_rollup_1m", "hosts")
PRIVATE_TABLES = ("users", "revoked_tokens", "schema_migrations")


async def grant_reader(conn: asyncpg.Connection) -> bool:
    """Give the reader role exactly its grants, when it exists; at every start, so a role
    created later is served too. Returns whether the role exists."""
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", READER_ROLE):
        return False
    # Names are constants, never input.
    await conn.execute(f"GRANT SELECT ON {', '.join(READABLE_TABLES)} TO {READER_ROLE}")
    await conn.execute(f"REVOKE ALL ON {', '.join(PRIVATE_TABLES)} FROM {READER_ROLE}")
    # Earlier versions of the init script granted SELECT on every future table.
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {READER_ROLE}"
    )
    return True
