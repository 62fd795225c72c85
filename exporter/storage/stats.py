"""What each tier holds and costs: rows, bytes on disk, numbers stored, their time span.

Bytes are `pg_total_relation_size` of every partition: the table, its TOAST and its
indexes. The compacted tiers record how many numbers each row holds; for the hot tier the
count is estimated from its newest rows (parsing every hot row would be a scan of all of
them), and says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from exporter.storage import partitions, tiers
from exporter.storage.documents import flatten

HOT_SAMPLE = 200


async def _bytes(conn: Any, table: str) -> int:
    value = await conn.fetchval(
        """
        SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits
        WHERE inhparent = $1::regclass
        """,
        table,
    )
    return int(value)


def _per_number(size: int, numbers: int | None) -> float | None:
    return round(size / numbers, 3) if numbers else None


async def hot_tier(conn: Any) -> dict[str, Any]:
    row = await conn.fetchrow(
        'SELECT count(*) AS rows, min("timestamp") AS oldest, max("timestamp") AS newest '
        "FROM metrics_snapshots"
    )
    sample = await conn.fetch(
        'SELECT metric_data::text AS data FROM metrics_snapshots ORDER BY "timestamp" DESC '
        "LIMIT $1",
        HOT_SAMPLE,
    )
    size = await _bytes(conn, "metrics_snapshots")
    numbers = None
    if sample:
        per_row = sum(len(flatten(orjson.loads(r["data"])).values) for r in sample) / len(sample)
        numbers = round(per_row * row["rows"])
    return {
        "rows": row["rows"],
        "bytes": size,
        "numbers": numbers,
        "numbers_estimated": True,
        "bytes_per_number": _per_number(size, numbers),
        "oldest": row["oldest"],
        "newest": row["newest"],
    }


async def compacted_tier(conn: Any, tier: tiers.Tier) -> dict[str, Any]:
    span = tiers.span_sql(tier)
    row = await conn.fetchrow(
        f"SELECT count(*) AS rows, coalesce(sum(numbers), 0)::bigint AS numbers, "  # noqa: S608
        f"coalesce(sum(rows), 0)::bigint AS snapshots, min(start) AS oldest, "
        f"max(start + {span}) AS newest FROM {tier.table}"
    )
    size = await _bytes(conn, tier.table)
    return {
        "rows": row["rows"],
        "bytes": size,
        "numbers": row["numbers"],
        "bytes_per_number": _per_number(size, row["numbers"]),
        "oldest": row["oldest"],
        "newest": row["newest"],
        "spans": row["snapshots"],
    }


async def lag_seconds(conn: Any, hot_seconds: float, now: datetime | None = None) -> float:
    """How long the oldest hot snapshot has been past the hot window (and its 10-minute
    window closed): 0 when the compactor is caught up."""
    oldest = await conn.fetchval('SELECT min("timestamp") FROM metrics_snapshots')
    if oldest is None:
        return 0.0
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=hot_seconds)
    closed = partitions.HOT.start_of(oldest) + partitions.WINDOW
    return max(0.0, (cutoff - closed).total_seconds())


async def collect(conn: Any, hot_seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"hot": await hot_tier(conn)}
    for tier in tiers.TIERS:
        result[tier.name] = await compacted_tier(conn, tier)
    rollups = await conn.fetchrow(
        "SELECT count(*) AS rows, min(bucket) AS oldest, max(bucket) AS newest "
        "FROM metrics_rollup_1m"
    )
    result["rollup_1m"] = {
        "rows": rollups["rows"],
        "bytes": int(await conn.fetchval("SELECT pg_total_relation_size('metrics_rollup_1m')")),
        "oldest": rollups["oldest"],
        "newest": rollups["newest"],
    }
    result["compactor_lag_seconds"] = await lag_seconds(conn, hot_seconds)
    result["hot_seconds"] = hot_seconds
    return result
