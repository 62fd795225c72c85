"""Every SQL statement about stored snapshots: writing, partitions, rollups, reading."""

from __future__ import annotations

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
    """One snapshot as rows: (metric_type, JSON text) per collector."""

    timestamp: datetime
    host: str
    rows: tuple[tuple[str, str], ...]


# --- writing -------------------------------------------------------------------------

INSERT = """
INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[])
ON CONFLICT DO NOTHING
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


async def insert(conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]) -> int:
    """One statement for the whole batch; rows already stored are skipped. Returns rows added."""
    timestamps, hosts, types, data = [], [], [], []
    for snapshot in snapshots:
        for metric_type, text in snapshot.rows:
            timestamps.append(snapshot.timestamp)
            hosts.append(snapshot.host)
            types.append(metric_type)
            data.append(text)
    status = await conn.execute(INSERT, timestamps, hosts, types, data)
    return int(status.rsplit(" ", 1)[1])


def _rollup_sql(metric_type: str) -> str:
    paths = [path for _, path in FIELDS[metric_type]]
    values = ", ".join(
        f"(metric_data #>> {sql_path(path)})::float8 AS f{i}" for i, path in enumerate(paths)
    )
    counts = ", ".join(f"count(f{i})" for i in range(len(paths)))
    sums = ", ".join(f"sum(f{i})" for i in range(len(paths)))
    maxes = ", ".join(f"max(f{i})" for i in range(len(paths)))
    # Built only from the constant FIELDS table; every value is a bind parameter.
    return f"""
    INSERT INTO metrics_rollup_1m (host, metric_type, bucket, samples, counts, sums, maxes)
    SELECT $1, $2, date_trunc('minute', "timestamp"), count(*),
           ARRAY[{counts}], ARRAY[{sums}], ARRAY[{maxes}]
    FROM (
        SELECT "timestamp", {values}
        FROM metrics_snapshots
        WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
    ) AS rows
    GROUP BY 3
    ON CONFLICT (host, metric_type, bucket) DO UPDATE
    SET samples = excluded.samples, counts = excluded.counts,
        sums = excluded.sums, maxes = excluded.maxes
    """


ROLLUP_SQL = {metric_type: _rollup_sql(metric_type) for metric_type in FIELDS}


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


async def refresh_rollups(conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]) -> None:
    """Recompute the minute aggregates of every minute the snapshots fall in.

    Recomputed from the stored rows, not added to: a replayed or late snapshot can never
    be counted twice.
    """
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for snapshot in snapshots:
        minute = _minute(snapshot.timestamp)
        for metric_type, _ in snapshot.rows:
            if metric_type not in ROLLUP_SQL:
                continue
            key = (snapshot.host, metric_type)
            low, high = spans.get(key, (minute, minute))
            spans[key] = (min(low, minute), max(high, minute))
    for (host, metric_type), (low, high) in spans.items():
        await conn.execute(
            ROLLUP_SQL[metric_type], host, metric_type, low, high + timedelta(minutes=1)
        )


async def write_batch(conn: asyncpg.Connection, snapshots: Sequence[StoredSnapshot]) -> int:
    """Insert and roll up in one transaction; returns the rows actually added."""
    await ensure_partitions(conn, (_day(s.timestamp) for s in snapshots))
    async with conn.transaction():
        added = await insert(conn, snapshots)
        await refresh_rollups(conn, snapshots)
    return added


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
    rows = await db.fetch(  # SQL from the constant FIELDS table; values are parameters
        f"""
        SELECT date_bin($5::interval, "timestamp", $6) AS bucket, count(*) AS samples, {aggregates}
        FROM (
            SELECT "timestamp", {values} FROM metrics_snapshots
            WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
        ) AS rows
        GROUP BY 1 ORDER BY 1
        """,
        host,
        metric_type,
        start,
        end,
        timedelta(seconds=bucket_seconds),
        BUCKET_ORIGIN,
    )
    return _from_rows(rows, [name for name, _ in fields], "raw", bucket_seconds)


async def history_rollup(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime, bucket_seconds: float
) -> Series:
    """Buckets (whole minutes) re-aggregated from the minute rollups (long ranges)."""
    fields = FIELDS[metric_type]
    aggregates = ", ".join(
        f"sum(sums[{i + 1}]) / nullif(sum(counts[{i + 1}]), 0) AS a{i}, max(maxes[{i + 1}]) AS m{i}"
        for i in range(len(fields))
    )
    rows = await db.fetch(  # SQL from the constant FIELDS table; values are parameters
        f"""
        SELECT date_bin($5::interval, bucket, $6) AS bucket, sum(samples)::int AS samples, {aggregates}
        FROM metrics_rollup_1m
        WHERE host = $1 AND metric_type = $2 AND bucket >= $3 AND bucket < $4
        GROUP BY 1 ORDER BY 1
        """,
        host,
        metric_type,
        start,
        end,
        timedelta(seconds=bucket_seconds),
        BUCKET_ORIGIN,
    )
    return _from_rows(rows, [name for name, _ in fields], "1m", bucket_seconds)


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


async def count_rows(db: Any, host: str | None = None) -> int:
    if host is None:
        value: int = await db.fetchval("SELECT count(*) FROM metrics_snapshots")
    else:
        value = await db.fetchval("SELECT count(*) FROM metrics_snapshots WHERE host = $1", host)
    return value
