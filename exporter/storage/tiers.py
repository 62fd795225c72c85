"""The compacted tiers' rows: one packed block per host, section and span of time.

    tier      table            one row holds                   partitions  kept
    chunks    metrics_chunks   10 minutes of snapshots         days        PERFPULSE_RETENTION_DAYS
    minutes   metrics_minutes  an hour of minute aggregates,   months      ..._RETENTION_MINUTES_DAYS
                               a day once it is over (sealed)
    hours     metrics_hours    a day of hour aggregates,       years       ..._RETENTION_HOURS_DAYS
                               a month once it is over

The SQL that reads and writes them is here and nowhere else; the blocks themselves are
exporter/storage/blocks.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from exporter.storage.partitions import (
    CHUNKS,
    EPOCH,
    HOURS,
    MINUTES,
    WINDOW,
    Partitioning,
    calendar,
)


@dataclass(frozen=True, slots=True)
class Tier:
    """`span` is what a row covers when written; a tier `sealed` by "day" or "month" has
    the rows of a day (month) that is over merged into one row for it, so that a long read
    decodes a few large blocks instead of many small ones."""

    name: str
    partitioning: Partitioning
    span: timedelta
    sealed: str | None = None

    @property
    def calendar(self) -> Partitioning:
        """The days or months this tier is sealed by."""
        assert self.sealed is not None
        return calendar(self.sealed)

    @property
    def table(self) -> str:
        return self.partitioning.table

    @property
    def longest(self) -> timedelta:
        """The longest time a row can cover."""
        if self.sealed is None:
            return self.span
        return timedelta(days=31) if self.sealed == "month" else timedelta(days=1)

    def start_of(self, ts: datetime) -> datetime:
        return ts - (ts - EPOCH) % self.span


CHUNK_TIER = Tier("chunks", CHUNKS, WINDOW)
MINUTE_TIER = Tier("minutes", MINUTES, timedelta(hours=1), "day")
HOUR_TIER = Tier("hours", HOURS, timedelta(days=1), "month")
TIERS = (CHUNK_TIER, MINUTE_TIER, HOUR_TIER)


@dataclass(frozen=True, slots=True)
class Stored:
    start: datetime
    span: timedelta
    data: bytes


def span_sql(tier: Tier) -> str:
    """The SQL for what a row covers."""
    return "span" if tier.sealed is not None else f"interval '{int(tier.span.total_seconds())} s'"


async def holding(
    conn: asyncpg.Connection, tier: Tier, host: str, metric_type: str, moment: datetime
) -> Stored | None:
    """The row that covers `moment` (its own, or the day's or month's it was sealed
    into), locked until the transaction ends; or None."""
    row = await conn.fetchrow(
        f"SELECT start, {span_sql(tier)} AS span, data FROM {tier.table} "  # noqa: S608
        "WHERE host = $1 AND metric_type = $2 AND start <= $3 AND start > $3::timestamptz - $4::interval "
        f"AND start + {span_sql(tier)} > $3 ORDER BY start DESC LIMIT 1 FOR UPDATE",
        host,
        metric_type,
        moment,
        tier.longest,
    )
    return None if row is None else Stored(row["start"], row["span"], row["data"])


async def store(
    conn: asyncpg.Connection,
    tier: Tier,
    host: str,
    metric_type: str,
    start: datetime,
    rows: int,
    numbers: int,
    data: bytes,
    span: timedelta | None = None,
) -> None:
    """Write a row (replacing the one that starts at `start`); `span` defaults to the
    tier's (only sealed tiers store it)."""
    columns = ["host", "metric_type", "start", "rows", "numbers", "data"]
    args: list[object] = [host, metric_type, start, rows, numbers, data]
    if tier.sealed is not None:
        columns.append("span")
        args.append(span or tier.span)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[3:])
    await conn.execute(
        f"INSERT INTO {tier.table} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))}) "
        f"ON CONFLICT (host, metric_type, start) DO UPDATE SET {updates}",
        *args,
    )


async def blobs(
    db: Any, tier: Tier, host: str, metric_type: str, start: datetime, end: datetime
) -> list[bytes]:
    """The blocks of `tier` that hold any time in [start, end), oldest first."""
    rows = await db.fetch(
        f"SELECT data FROM {tier.table} WHERE host = $1 AND metric_type = $2 "  # noqa: S608
        f"AND start > $3::timestamptz - $5::interval AND start + {span_sql(tier)} > $3 AND start < $4 "
        "ORDER BY start",
        host,
        metric_type,
        start,
        end,
        tier.longest,
    )
    return [row["data"] for row in rows]


async def unsealed(
    conn: asyncpg.Connection, tier: Tier, since: datetime, until: datetime
) -> list[tuple[str, str, datetime]]:
    """(host, metric_type, day or month) of rows in [since, until) not sealed yet."""
    assert tier.sealed is not None
    rows = await conn.fetch(
        f"SELECT DISTINCT host, metric_type, start FROM {tier.table} "  # noqa: S608
        "WHERE start >= $1 AND start < $2 AND span = $3::interval",
        since,
        until,
        tier.span,
    )
    found = {(r["host"], r["metric_type"], tier.calendar.start_of(r["start"])) for r in rows}
    return sorted(found, key=lambda item: (item[2], item[0], item[1]))


async def rows_of(
    conn: asyncpg.Connection,
    tier: Tier,
    host: str,
    metric_type: str,
    start: datetime,
    end: datetime,
) -> list[bytes]:
    """The blocks of rows starting in [start, end), locked until the transaction ends."""
    rows = await conn.fetch(
        f"SELECT data FROM {tier.table} WHERE host = $1 AND metric_type = $2 "  # noqa: S608
        "AND start >= $3 AND start < $4 ORDER BY start FOR UPDATE",
        host,
        metric_type,
        start,
        end,
    )
    return [row["data"] for row in rows]


async def replace(
    conn: asyncpg.Connection,
    tier: Tier,
    host: str,
    metric_type: str,
    start: datetime,
    end: datetime,
    rows: int,
    numbers: int,
    data: bytes,
) -> None:
    """The rows starting in [start, end) replaced by one covering all of it."""
    await conn.execute(
        f"DELETE FROM {tier.table} WHERE host = $1 AND metric_type = $2 "  # noqa: S608
        "AND start >= $3 AND start < $4",
        host,
        metric_type,
        start,
        end,
    )
    await store(conn, tier, host, metric_type, start, rows, numbers, data, end - start)


async def newest(db: Any, tier: Tier, host: str) -> list[tuple[str, bytes]]:
    """Each section's newest block of `host`: (metric_type, data)."""
    rows = await db.fetch(
        f"""
        SELECT types.metric_type, newest.data FROM (
            SELECT DISTINCT metric_type FROM {tier.table} WHERE host = $1
        ) AS types, LATERAL (
            SELECT data FROM {tier.table} t
            WHERE t.host = $1 AND t.metric_type = types.metric_type
            ORDER BY start DESC LIMIT 1
        ) AS newest
        """,  # noqa: S608
        host,
    )
    return [(row["metric_type"], row["data"]) for row in rows]


# The minute rollups of the plotted fields, for SQL readers: each minute written whole
# (replacing what a compaction of the same minute wrote before).
STORE_ROLLUPS = """
INSERT INTO metrics_rollup_1m AS r (host, metric_type, bucket, samples, counts, sums, maxes)
SELECT host, metric_type, bucket, samples, counts::integer[], sums::float8[], maxes::float8[]
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::integer[], $5::text[], $6::text[], $7::text[])
    AS u(host, metric_type, bucket, samples, counts, sums, maxes)
ON CONFLICT (host, metric_type, bucket) DO UPDATE SET
    samples = excluded.samples, counts = excluded.counts, sums = excluded.sums,
    maxes = excluded.maxes
"""


def _array_literal(values: Sequence[float | int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"


async def store_rollups(
    conn: asyncpg.Connection,
    host: str,
    metric_type: str,
    minutes: Sequence[tuple[datetime, int, list[int], list[float | None], list[float | None]]],
) -> None:
    """(minute, samples, counts, sums, maxes) per minute, arrays in FIELDS order."""
    if not minutes:
        return
    await conn.execute(
        STORE_ROLLUPS,
        [host] * len(minutes),
        [metric_type] * len(minutes),
        [m[0] for m in minutes],
        [m[1] for m in minutes],
        [_array_literal(m[2]) for m in minutes],
        [_array_literal(m[3]) for m in minutes],
        [_array_literal(m[4]) for m in minutes],
    )
