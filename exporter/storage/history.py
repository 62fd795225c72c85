"""Reading snapshots back: downsampled series (raw rows or minute rollups) and the latest.

Every read goes through a `Reader`: one statement in a read-only transaction with a
statement timeout, so however much a request asks for, PostgreSQL stops working on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from exporter.storage.fields import FIELDS, sql_path

# Buckets start at whole multiples of their width from here, whatever the range asked:
# the same data always lands in the same buckets.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Reader:
    """Runs read statements from `pool`, each stopped by the server after `timeout` s."""

    pool: asyncpg.Pool
    timeout: float

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # SET LOCAL: ends with the transaction, and works through a transaction pooler.
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(self.timeout * 1000))}")
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows


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


async def minute_accounts(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """The per-minute accounts (processes, cgroups) of the minutes that start in
    [start, end), oldest first. Each is stored with the snapshot after its minute ended,
    so the rows read run a little past `end`."""
    rows = await db.fetch(
        """
        SELECT "timestamp", metric_data::text AS data FROM metrics_snapshots
        WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
        ORDER BY "timestamp"
        """,
        host,
        metric_type,
        start,
        end + timedelta(minutes=5),
    )
    accounts = []
    for row in rows:
        account = orjson.loads(row["data"])
        begins = datetime.fromisoformat(account["start"])
        if start <= begins < end:
            accounts.append((begins, account))
    return accounts


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
