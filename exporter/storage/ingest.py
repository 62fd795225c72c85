"""Writing snapshots into the hot tier: one bulk insert (or COPY for large flushes) in one
transaction, idempotent under replays. The compactor (exporter/storage/compactor.py) packs
them into the compacted tiers later."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from exporter.storage.fields import FIELDS, plotted
from exporter.storage.literals import text_array
from exporter.storage.partitions import ensure_partitions


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """One snapshot as rows: (metric_type, JSON text) per collector."""

    timestamp: datetime
    host: str
    rows: tuple[tuple[str, str], ...]


def plotted_of(metric_type: str, text: str) -> list[int | float | None] | None:
    """A row's `plotted` numbers, from its JSON (parsed once more here: a few microseconds
    a row, on the writer's side, so that no history read parses it). None for a section
    without plotted fields, or text orjson does not take (PostgreSQL decides whether it
    is JSON; a read parses such a row as before)."""
    if metric_type not in FIELDS:  # a per-minute account (processes, cgroups)
        return None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return plotted(metric_type, document)


def array_text(numbers: list[int | float | None] | None) -> str | None:
    """`numbers` as PostgreSQL's text form of a float8[] ('{1.5,NULL,3}'): unnest() would
    flatten an array of arrays, so each row's array travels as text and is cast."""
    if numbers is None:
        return None
    return "{" + ",".join("NULL" if v is None else repr(v) for v in numbers) + "}"


def _columns(
    snapshots: Sequence[StoredSnapshot],
) -> tuple[list[datetime], list[str], list[str], list[str], list[str | None]]:
    """The batch as columns, a row per section: time, host, type, JSON, plotted (text)."""
    timestamps, hosts, types, data, numbers = [], [], [], [], []
    for snapshot in snapshots:
        for metric_type, text in snapshot.rows:
            timestamps.append(snapshot.timestamp)
            hosts.append(snapshot.host)
            types.append(metric_type)
            data.append(text)
            numbers.append(array_text(plotted_of(metric_type, text)))
    return timestamps, hosts, types, data, numbers


INSERT = """
INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data, plotted)
SELECT t, h, m, d, p::float8[]
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::json[], $5::text[]) AS u(t, h, m, d, p)
ON CONFLICT DO NOTHING
RETURNING "timestamp", host, metric_type
"""


async def insert(
    conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]
) -> set[tuple[datetime, str, str]]:
    """One INSERT for the whole batch (unnest of arrays); rows already stored are skipped.

    Returns (timestamp, host, metric_type) of the rows actually added.
    """
    timestamps, hosts, types, data, numbers = _columns(snapshots)
    rows = await conn.fetch(INSERT, timestamps, hosts, types, data, numbers)
    return {(row["timestamp"], row["host"], row["metric_type"]) for row in rows}


# COPY cannot skip duplicates: rows go to a per-session staging table first, emptied at
# commit, and one INSERT ... SELECT moves the new ones. (Named for migration 0011: a
# server connection a pooler shares may still hold an older perfpulse's `metrics_staging`
# of four columns.)
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS metrics_staging_0011 (
    "timestamp" timestamptz, host text, metric_type text, metric_data text, plotted float8[]
) ON COMMIT DELETE ROWS
"""
FROM_STAGING = """
INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data, plotted)
SELECT "timestamp", host, metric_type, metric_data::json, plotted FROM metrics_staging_0011
ON CONFLICT DO NOTHING
RETURNING "timestamp", host, metric_type
"""
# Below this many snapshots the staging round trips cost more than COPY saves.
COPY_FROM_SNAPSHOTS = 100


async def copy_insert(
    conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]
) -> set[tuple[datetime, str, str]]:
    """Like `insert`, through COPY (binary) into the staging table; inside a transaction."""
    await stage(conn, snapshots)
    return _added(await conn.fetch(FROM_STAGING))


async def stage(conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]) -> None:
    await conn.execute(STAGING)
    await conn.copy_records_to_table(
        "metrics_staging_0011",
        records=[
            (s.timestamp, s.host, t, d, plotted_of(t, d)) for s in snapshots for t, d in s.rows
        ],
    )


def _added(rows: Sequence[asyncpg.Record]) -> set[tuple[datetime, str, str]]:
    return {(row["timestamp"], row["host"], row["metric_type"]) for row in rows}


SIMPLE_INSERT = (
    'INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data, plotted) '
    "SELECT t, h, m, d, p::float8[] FROM"
)


def insert_sql(snapshots: Sequence[StoredSnapshot]) -> str:
    """INSERT as one simple query, its values written in as literals."""
    timestamps, hosts, types, data, numbers = _columns(snapshots)
    # Every value an escaped literal (storage/literals.py).
    columns = ", ".join(
        [
            text_array([t.isoformat() for t in timestamps], "timestamptz"),
            text_array(hosts, "text"),
            text_array(types, "text"),
            text_array(data, "json"),
            text_array(numbers, "text"),
        ]
    )
    return f"{SIMPLE_INSERT} unnest({columns}) AS u(t, h, m, d, p) ON CONFLICT DO NOTHING"


async def write_batch(
    conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot], *, simple: bool = False
) -> int:
    """Insert atomically; returns the rows actually added (a replay adds none). `simple`
    (through a transaction pooler): a batch is one simple query, so it holds a server
    connection for one round trip, where a transaction (BEGIN; parse; bind and run;
    COMMIT) held it for four, each waiting on this process (bench/README.md, "fleet"). A
    drain of a backlog still goes through COPY in a transaction."""
    await ensure_partitions(conn, (s.timestamp for s in snapshots))
    if simple and len(snapshots) < COPY_FROM_SNAPSHOTS:
        status = await conn.execute(insert_sql(snapshots))  # "INSERT 0 <added>"
        return int(status.rsplit(" ", 1)[1])
    async with conn.transaction():
        if len(snapshots) >= COPY_FROM_SNAPSHOTS:
            added = await copy_insert(conn, snapshots)
        else:
            added = await insert(conn, snapshots)
    return len(added)
