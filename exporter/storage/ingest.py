"""Writing snapshots: one bulk insert (or COPY for large flushes) and the minute rollups,
in one transaction, idempotent under replays."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from exporter.storage.fields import FIELDS
from exporter.storage.partitions import day_of, ensure_partitions


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """One snapshot as rows: (metric_type, JSON text) per collector.

    `values` holds each section's plotted fields (see `field_values`) when the caller
    already had the data decoded; otherwise they are read from the JSON when rolled up.
    """

    timestamp: datetime
    host: str
    rows: tuple[tuple[str, str], ...]
    values: dict[str, list[float | None]] | None = None

    def fields_of(self, metric_type: str, text: str) -> list[float | None]:
        if self.values is not None and metric_type in self.values:
            return self.values[metric_type]
        return field_values(metric_type, orjson.loads(text))


INSERT = """
INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::json[])
ON CONFLICT DO NOTHING
RETURNING "timestamp", host, metric_type
"""


async def insert(
    conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]
) -> set[tuple[datetime, str, str]]:
    """One INSERT for the whole batch (unnest of arrays); rows already stored are skipped.

    Returns (timestamp, host, metric_type) of the rows actually added.
    """
    timestamps, hosts, types, data = [], [], [], []
    for snapshot in snapshots:
        for metric_type, text in snapshot.rows:
            timestamps.append(snapshot.timestamp)
            hosts.append(snapshot.host)
            types.append(metric_type)
            data.append(text)
    rows = await conn.fetch(INSERT, timestamps, hosts, types, data)
    return {(row["timestamp"], row["host"], row["metric_type"]) for row in rows}


# COPY cannot skip duplicates: rows go to a per-session staging table first, emptied at
# commit, and one INSERT ... SELECT moves the new ones.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS metrics_staging (
    "timestamp" timestamptz, host text, metric_type text, metric_data text
) ON COMMIT DELETE ROWS
"""
FROM_STAGING = """
INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data)
SELECT "timestamp", host, metric_type, metric_data::json FROM metrics_staging
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
        "metrics_staging",
        records=[(s.timestamp, s.host, t, d) for s in snapshots for t, d in s.rows],
    )


def _added(rows: Sequence[asyncpg.Record]) -> set[tuple[datetime, str, str]]:
    return {(row["timestamp"], row["host"], row["metric_type"]) for row in rows}


# Adds minute aggregates into the stored ones, field by field (arrays may differ in length
# when a type gained fields: the missing positions are NULL). One statement for a whole
# flush: the arrays travel as array literals, one per row, because unnest flattens
# two-dimensional arrays.
ADD_ROLLUPS = """
INSERT INTO metrics_rollup_1m AS r (host, metric_type, bucket, samples, counts, sums, maxes)
SELECT host, metric_type, bucket, samples, counts::integer[], sums::float8[], maxes::float8[]
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::integer[], $5::text[], $6::text[], $7::text[])
    AS u(host, metric_type, bucket, samples, counts, sums, maxes)
ON CONFLICT (host, metric_type, bucket) DO UPDATE SET
    samples = r.samples + excluded.samples,
    counts = ARRAY(
        SELECT coalesce(a, 0) + coalesce(b, 0)
        FROM unnest(r.counts, excluded.counts) WITH ORDINALITY AS t(a, b, i) ORDER BY i),
    sums = ARRAY(
        SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE a + b END
        FROM unnest(r.sums, excluded.sums) WITH ORDINALITY AS t(a, b, i) ORDER BY i),
    maxes = ARRAY(
        SELECT greatest(a, b)
        FROM unnest(r.maxes, excluded.maxes) WITH ORDINALITY AS t(a, b, i) ORDER BY i)
"""


def _array_literal(values: Sequence[float | int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"


class _Accumulator:
    __slots__ = ("counts", "maxes", "samples", "sums")

    def __init__(self, width: int) -> None:
        self.samples = 0
        self.counts = [0] * width
        self.sums: list[float | None] = [None] * width
        self.maxes: list[float | None] = [None] * width

    def add(self, values: list[float | None]) -> None:
        self.samples += 1
        for i, value in enumerate(values):
            if value is None:
                continue
            self.counts[i] += 1
            previous = self.sums[i]
            self.sums[i] = value if previous is None else previous + value
            peak = self.maxes[i]
            self.maxes[i] = value if peak is None or value > peak else peak


def field_values(metric_type: str, data: Any) -> list[float | None]:
    """The plotted fields of one section, in rollup order (None where absent)."""
    values: list[float | None] = []
    for _, path in FIELDS[metric_type]:
        node = data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        values.append(
            float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None
        )
    return values


def minute_aggregates(
    snapshots: Sequence[StoredSnapshot], added: set[tuple[datetime, str, str]] | None
) -> list[tuple[Any, ...]]:
    """(host, type, minute, samples, counts, sums, maxes) for the added rows (every row
    when `added` is None), one per (host, metric type, minute)."""
    groups: dict[tuple[str, str, datetime], _Accumulator] = {}
    for snapshot in snapshots:
        minute = _minute(snapshot.timestamp)
        for metric_type, text in snapshot.rows:
            if metric_type not in FIELDS:
                continue
            if added is not None and (snapshot.timestamp, snapshot.host, metric_type) not in added:
                continue
            key = (snapshot.host, metric_type, minute)
            accumulator = groups.get(key)
            if accumulator is None:
                accumulator = groups[key] = _Accumulator(len(FIELDS[metric_type]))
            accumulator.add(snapshot.fields_of(metric_type, text))
    return [
        (host, metric_type, minute, a.samples, a.counts, a.sums, a.maxes)
        for (host, metric_type, minute), a in groups.items()
    ]


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


async def write_batch(conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]) -> int:
    """Insert and roll up in one transaction; returns the rows actually added.

    Only the rows the insert really added reach the minute aggregates, so a replay (or a
    batch retried after a lost commit acknowledgement) is never counted twice.
    """
    await ensure_partitions(conn, (day_of(s.timestamp) for s in snapshots))
    async with conn.transaction():
        if len(snapshots) >= COPY_FROM_SNAPSHOTS:
            await stage(conn, snapshots)
            # While PostgreSQL moves the rows (the longest step), add up the aggregates
            # as if every row were new; a replay is rare and recomputes below.
            moving = asyncio.ensure_future(conn.fetch(FROM_STAGING))
            await asyncio.sleep(0)  # let it send the statement
            try:
                assumed = minute_aggregates(snapshots, None)
            finally:
                added = _added(await moving)  # never leave the connection mid-query
            total = sum(len(s.rows) for s in snapshots)
            groups = assumed if len(added) == total else minute_aggregates(snapshots, added)
        else:
            added = await insert(conn, snapshots)
            groups = minute_aggregates(snapshots, added) if added else []
        if groups:
            await conn.execute(
                ADD_ROLLUPS,
                [g[0] for g in groups],
                [g[1] for g in groups],
                [g[2] for g in groups],
                [g[3] for g in groups],
                [_array_literal(g[4]) for g in groups],
                [_array_literal(g[5]) for g in groups],
                [_array_literal(g[6]) for g in groups],
            )
    return len(added)
