"""Every SQL statement about stored snapshots: writing, partitions, rollups, reading."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from exporter.storage.fields import FIELDS, sql_path

PARTITION_PREFIX = "metrics_snapshots_p"
_PARTITION_NAME = re.compile(rf"^{PARTITION_PREFIX}(\d{{8}})$")
# Serializes partition creation between perfpulse processes sharing one database.
PARTITION_LOCK_ID = 0x70657266_70617274  # "perfpart"


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


# --- writing -------------------------------------------------------------------------

INSERT = """
INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::json[])
ON CONFLICT DO NOTHING
RETURNING "timestamp", host, metric_type
"""


def _day(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


async def ensure_partitions(conn: asyncpg.Connection, days: Iterable[date]) -> None:
    """Create the daily partitions that do not exist yet (idempotent, concurrency-safe)."""
    wanted = sorted(set(days))
    if not wanted:
        return
    existing = {
        row["relname"]
        for row in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = ANY($1::text[])",
            [partition_name(d) for d in wanted],
        )
    }
    missing = [d for d in wanted if partition_name(d) not in existing]
    if not missing:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_ID)
        for day in missing:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            end = start + timedelta(days=1)
            # Names and bounds come from dates, never from input: safe to format in.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF metrics_snapshots "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )


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
    await ensure_partitions(conn, (_day(s.timestamp) for s in snapshots))
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


# --- retention -----------------------------------------------------------------------


async def drop_partitions_before(conn: asyncpg.Connection, cutoff: datetime) -> list[str]:
    """Drop every daily partition that ends at or before `cutoff`; returns their names."""
    dropped = []
    rows = await conn.fetch(
        """
        SELECT child.relname FROM pg_inherits
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        WHERE parent.relname = 'metrics_snapshots'
        """
    )
    for row in rows:
        match = _PARTITION_NAME.match(row["relname"])
        if match is None:
            continue
        day = datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC)
        if day + timedelta(days=1) <= cutoff:
            await conn.execute(f"DROP TABLE IF EXISTS {row['relname']}")
            dropped.append(row["relname"])
    return dropped


async def delete_rollups_before(
    conn: asyncpg.Connection, cutoff: datetime, batch: int = 10_000
) -> int:
    """Delete old minute aggregates in small batches (short locks); returns rows deleted."""
    total = 0
    while True:
        status = await conn.execute(
            """
            DELETE FROM metrics_rollup_1m WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM metrics_rollup_1m WHERE bucket < $1 LIMIT $2))
            """,
            cutoff,
            batch,
        )
        deleted = int(status.rsplit(" ", 1)[1])
        total += deleted
        if deleted < batch:
            return total


# --- reading -------------------------------------------------------------------------

# Buckets start at whole multiples of their width from here, whatever the range asked:
# the same data always lands in the same buckets.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Series:
    """Columnar downsampled series: one list per field, aligned with `timestamps`."""

    resolution: str
    bucket_seconds: float
    timestamps: list[datetime]
    samples: list[int]
    avg: dict[str, list[float | None]]
    max: dict[str, list[float | None]]


def _from_rows(
    rows: Sequence[asyncpg.Record], names: Sequence[str], resolution: str, bucket: float
) -> Series:
    avg: dict[str, list[float | None]] = {name: [] for name in names}
    peak: dict[str, list[float | None]] = {name: [] for name in names}
    for row in rows:
        for i, name in enumerate(names):
            avg[name].append(row[f"a{i}"])
            peak[name].append(row[f"m{i}"])
    return Series(
        resolution,
        bucket,
        [row["bucket"] for row in rows],
        [row["samples"] for row in rows],
        avg,
        peak,
    )


async def history_raw(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime, bucket_seconds: float
) -> Series:
    """Buckets of `bucket_seconds` straight from the stored snapshots (short ranges)."""
    fields = FIELDS[metric_type]
    values = ", ".join(
        f"(metric_data #>> {sql_path(path)})::float8 AS f{i}" for i, (_, path) in enumerate(fields)
    )
    aggregates = ", ".join(f"avg(f{i}) AS a{i}, max(f{i}) AS m{i}" for i in range(len(fields)))
    sql = f"""
        SELECT date_bin($5::interval, "timestamp", $6) AS bucket, count(*) AS samples, {aggregates}
        FROM (
            SELECT "timestamp", {values} FROM metrics_snapshots
            WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
        ) AS rows
        GROUP BY 1 ORDER BY 1
    """
    return await _buckets(db, sql, "raw", host, metric_type, start, end, bucket_seconds)


async def history_rollup(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime, bucket_seconds: float
) -> Series:
    """Buckets (whole minutes) re-aggregated from the minute rollups (long ranges)."""
    aggregates = ", ".join(
        f"sum(sums[{i + 1}]) / nullif(sum(counts[{i + 1}]), 0) AS a{i}, max(maxes[{i + 1}]) AS m{i}"
        for i in range(len(FIELDS[metric_type]))
    )
    sql = f"""
        SELECT date_bin($5::interval, bucket, $6) AS bucket, sum(samples)::int AS samples, {aggregates}
        FROM metrics_rollup_1m
        WHERE host = $1 AND metric_type = $2 AND bucket >= $3 AND bucket < $4
        GROUP BY 1 ORDER BY 1
    """
    return await _buckets(db, sql, "1m", host, metric_type, start, end, bucket_seconds)


async def _buckets(
    db: Any,
    sql: str,
    resolution: str,
    host: str,
    metric_type: str,
    start: datetime,
    end: datetime,
    bucket_seconds: float,
) -> Series:
    """Run a bucketing query (SQL from the constant FIELDS table; values are parameters)."""
    rows = await db.fetch(
        sql, host, metric_type, start, end, timedelta(seconds=bucket_seconds), BUCKET_ORIGIN
    )
    return _from_rows(rows, [name for name, _ in FIELDS[metric_type]], resolution, bucket_seconds)


async def latest(db: Any, host: str) -> tuple[datetime, dict[str, Any]] | None:
    """The newest stored snapshot of `host`: its timestamp and every collector's data."""
    # max() per metric type is an index probe per partition; over the host alone it
    # would read every row of the host.
    rows = await db.fetch(
        """
        SELECT "timestamp", metric_type, metric_data::text AS data FROM metrics_snapshots
        WHERE host = $1 AND "timestamp" = (
            SELECT max(newest) FROM unnest($2::text[]) AS types(metric_type),
            LATERAL (
                SELECT max("timestamp") AS newest FROM metrics_snapshots s
                WHERE s.host = $1 AND s.metric_type = types.metric_type
            ) AS per_type
        )
        """,
        host,
        list(FIELDS),
    )
    if not rows:
        return None
    return rows[0]["timestamp"], {row["metric_type"]: orjson.loads(row["data"]) for row in rows}


async def count_rows(db: Any) -> int:
    value: int = await db.fetchval("SELECT count(*) FROM metrics_snapshots")
    return value
