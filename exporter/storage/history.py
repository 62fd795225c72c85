"""Reading history back: downsampled series, documents and the latest snapshot, from
whichever tier holds each moment. The API asks for a resolution and gets buckets; where a
value lives (a hot row, a compressed chunk, a minute or hour aggregate) stays here.

    raw   the hot rows and the compacted chunks: every snapshot
    1m    the minute aggregates, and the hot rows' minutes not aggregated yet
    1h    the hour aggregates, and the minutes since the oldest hot row

Every read goes through a `Reader`: one statement in a read-only transaction with a
statement timeout, so however much a request asks for, PostgreSQL stops working on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import orjson

from exporter.storage import blocks, tiers
from exporter.storage.aggregates import (
    AGGREGATES,
    HOUR_US,
    MINUTE_US,
    SAMPLES,
    aggregate,
    coarser,
)
from exporter.storage.aggregates import column_of as agg
from exporter.storage.blocks import Block, Column
from exporter.storage.chunks import documents as rebuild
from exporter.storage.chunks import micros, moment, pick
from exporter.storage.fields import FIELDS, plotted, positions
from exporter.storage.paths import Step

# Buckets start at whole multiples of their width from here, whatever the range asked:
# the same data always lands in the same buckets.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
ORIGIN_US = micros(BUCKET_ORIGIN)
RESOLUTIONS = ("raw", "1m", "1h")
# Decoding is CPU work: past this many blocks a read decodes on a worker thread.
INLINE_BLOCKS = 8
# Hot rows are read a page at a time and parsed on a worker thread, so that a range the
# compactor has not packed yet (a backlog, daily partitions from before 0006) costs
# memory for the numbers asked for, not for every document.
HOT_PAGE = 2000


@dataclass(frozen=True, slots=True)
class Reader:
    """Runs read statements from `pool`, each stopped by the server after `timeout` s.

    A read that asks several things (a series: the tier's blocks and the hot rows) asks
    them in one `session`: one transaction on one connection, opened with its time limit
    in the same round trip. On a busy machine every round trip waits for PostgreSQL's
    backend to be scheduled, so they are what a read's time is made of (bench/README.md,
    "fleet")."""

    pool: asyncpg.Pool
    timeout: float

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            # One simple query: BEGIN and SET LOCAL (ends with the transaction, so it
            # works through a transaction pooler) in one round trip.
            await conn.execute(
                f"BEGIN READ ONLY; SET LOCAL statement_timeout = {max(1, int(self.timeout * 1000))}"
            )
            try:
                yield conn
            except BaseException:
                if not conn.is_closed():
                    try:
                        await conn.execute("ROLLBACK")
                    except Exception:
                        # Still busy with a statement being cancelled (a client that
                        # left, a time limit): the pool gets a new connection instead.
                        conn.terminate()
                raise
            await conn.execute("COMMIT")

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async with self.session() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows


@contextlib.asynccontextmanager
async def _one_session(db: Any) -> AsyncIterator[Any]:
    """`db` as one transaction for several statements: a Reader's session (its
    connection), or `db` itself (a connection)."""
    if isinstance(db, Reader):
        async with db.session() as session:
            yield session
    else:
        yield db


@dataclass(frozen=True, slots=True)
class Series:
    """Columnar downsampled series: one list per field, aligned with `timestamps`."""

    resolution: str
    bucket_seconds: float
    timestamps: list[datetime]
    samples: list[int]
    avg: dict[str, list[float | None]]
    max: dict[str, list[float | None]]
    min: dict[str, list[float | None]]
    last: dict[str, list[float | None]]


_HOT_ROWS = """
    SELECT "timestamp", metric_data::text AS data FROM metrics_snapshots
    WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
    ORDER BY "timestamp"
"""


async def hot_rows(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime
) -> list[tuple[int, str]]:
    """(microseconds, JSON) of the hot rows in [start, end), oldest first."""
    rows = await db.fetch(_HOT_ROWS, host, metric_type, start, end)
    return [(micros(row["timestamp"]), row["data"]) for row in rows]


_HOT_PAGE_ROWS = _HOT_ROWS.rstrip() + " LIMIT $5\n"
# A page this small is parsed on the event loop (about 3 ms); a larger one on a thread.
INLINE_ROWS = 300


async def hot_picked(
    db: Any,
    host: str,
    metric_type: str,
    start: datetime,
    end: datetime,
    fields: dict[str, tuple[Step, ...]],
) -> Block:
    """The `fields` of the hot rows in [start, end), read `HOT_PAGE` rows at a time (each
    page one statement, from the previous page's last timestamp on: a backlog costs memory
    for one page). Plotted fields come from each row's `plotted` numbers (migration 0011);
    a row without them, or a field that is not plotted, from its JSON, a large page of
    which is parsed on a worker thread. (Taking the numbers out of the JSON in SQL was
    measured slower: PostgreSQL parses a `json` value again for each path, and casting it
    to `jsonb` costs more than orjson parsing it here.)"""
    order = positions(metric_type)
    plotted_only = all(key in order for key in fields)
    need = max((order[key] + 1 for key in fields), default=0) if plotted_only else 0
    parts = []
    since = start
    while True:
        if plotted_only:
            page = await db.fetch(_PLOTTED_PAGE_ROWS, host, metric_type, since, end, HOT_PAGE, need)
            text = sum(row["data"] is not None for row in page)
            if text <= INLINE_ROWS:
                parts.append(_from_plotted(page, metric_type, fields, need))
            else:
                parts.append(
                    await asyncio.to_thread(_from_plotted, page, metric_type, fields, need)
                )
        else:
            page = await db.fetch(_HOT_PAGE_ROWS, host, metric_type, since, end, HOT_PAGE)
            rows = [(micros(row["timestamp"]), row["data"]) for row in page]
            if len(rows) <= INLINE_ROWS:
                parts.append(pick(rows, fields))
            else:
                parts.append(await asyncio.to_thread(pick, rows, fields))
        if len(page) < HOT_PAGE:
            break
        since = moment(int(parts[-1].timestamps[-1]) + 1)
    return parts[0] if len(parts) == 1 else blocks.concat(parts)


# A row's time in microseconds (exact: PostgreSQL's extract is numeric; making them from
# 700 datetimes here took a millisecond), its plotted numbers, and its JSON only where
# those are missing or shorter than the fields asked need (a row from before 0011, or
# from before a field was appended).
_PLOTTED_PAGE_ROWS = """
    SELECT (extract(epoch FROM "timestamp") * 1000000)::int8 AS us, plotted,
           CASE WHEN plotted IS NULL OR cardinality(plotted) < $6 THEN metric_data::text END
             AS data
    FROM metrics_snapshots
    WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
    ORDER BY "timestamp" LIMIT $5
"""


def _from_plotted(
    page: Sequence[asyncpg.Record],
    metric_type: str,
    fields: dict[str, tuple[Step, ...]],
    need: int,
) -> Block:
    """A block of `fields` (plotted ones) from rows of `_PLOTTED_PAGE_ROWS`."""
    numbers = [
        (row["plotted"] if row["data"] is None else _plotted_json(metric_type, row["data"]))[:need]
        for row in page
    ]
    # None (absent) becomes NaN, and NaN is what is absent: JSON has no NaN of its own.
    matrix = np.array(numbers, dtype=np.float64).reshape(len(page), need)
    present = ~np.isnan(matrix)
    order = positions(metric_type)
    return Block(
        np.array([row["us"] for row in page], np.int64),
        {key: Column(matrix[:, order[key]], present[:, order[key]]) for key in fields},
    )


def _plotted_json(metric_type: str, text: str) -> list[int | float | None]:
    numbers = plotted(metric_type, orjson.loads(text))
    assert numbers is not None  # `metric_type` has plotted fields
    return numbers


async def _decoded(blobs: Sequence[bytes], keys: Sequence[str] | None) -> list[Block]:
    def work() -> list[Block]:
        return blocks.decode_many(blobs, keys)

    if len(blobs) <= INLINE_BLOCKS:
        return work()
    return await asyncio.to_thread(work)


def _aggregate_keys(keys: Sequence[str]) -> list[str]:
    return [SAMPLES, *(agg(key, a) for key in keys for a in AGGREGATES)]


async def series(
    db: Any,
    host: str,
    metric_type: str,
    fields: dict[str, tuple[Step, ...]],
    start: datetime,
    end: datetime,
    resolution: str,
    bucket_seconds: float,
) -> Series:
    """Buckets of `bucket_seconds` over [start, end) of each field (path -> steps), the
    tiers read in one session when `db` is a Reader."""
    async with _one_session(db) as db:
        keys = list(fields)
        s_us, e_us = micros(start), micros(end)
        hot = await hot_picked(db, host, metric_type, start, end, fields)
        if resolution == "raw":
            stored = await _decoded(
                await tiers.blobs(db, tiers.CHUNK_TIER, host, metric_type, start, end), keys
            )
            rows = blocks.between(blocks.concat([*stored, hot]), s_us, e_us)
            buckets = aggregate(rows, _width(bucket_seconds), micros(BUCKET_ORIGIN))
        else:
            # Minutes from the minute tier; from the oldest hot row on, the hot minutes that
            # the tier does not have yet (the tier's own when it has them).
            since = e_us if not hot.rows else int(hot.timestamps[0]) // HOUR_US * HOUR_US
            recent_start = moment(since) if resolution == "1h" else start
            minutes = await _decoded(
                await tiers.blobs(db, tiers.MINUTE_TIER, host, metric_type, recent_start, end),
                _aggregate_keys(keys),
            )
            minute_rows = blocks.concat([*minutes, aggregate(hot, MINUTE_US)])
            if resolution == "1m":
                rows = blocks.between(minute_rows, s_us, e_us)
            else:
                hours = await _decoded(
                    await tiers.blobs(db, tiers.HOUR_TIER, host, metric_type, start, recent_start),
                    _aggregate_keys(keys),
                )
                recent = coarser(blocks.between(minute_rows, since, e_us), HOUR_US)
                rows = blocks.between(
                    blocks.concat([blocks.between(blocks.concat(hours), s_us, since), recent]),
                    s_us,
                    e_us,
                )
            buckets = coarser(rows, _width(bucket_seconds), micros(BUCKET_ORIGIN))
    # Lists for the answer once the connection is back in the pool.
    return _series(buckets, keys, resolution, bucket_seconds)


def _width(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def _series(buckets: Block, keys: Sequence[str], resolution: str, bucket_seconds: float) -> Series:
    def values(key: str, aggregate_name: str) -> list[float | None]:
        col = buckets.columns.get(agg(key, aggregate_name))
        if col is None:
            return [None] * buckets.rows
        out = col.values.astype(np.float64).astype(object)
        out[~col.present] = None
        listed: list[float | None] = out.tolist()
        return listed

    samples = buckets.columns.get(SAMPLES)
    return Series(
        resolution,
        bucket_seconds,
        [
            BUCKET_ORIGIN + timedelta(microseconds=us - ORIGIN_US)
            for us in buckets.timestamps.tolist()
        ],
        [] if samples is None else samples.values.astype(np.int64).tolist(),
        {key: values(key, "avg") for key in keys},
        {key: values(key, "max") for key in keys},
        {key: values(key, "min") for key in keys},
        {key: values(key, "last") for key in keys},
    )


async def documents(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """Every stored document of a section in [start, end), whole, oldest first."""
    async with _one_session(db) as session:
        blobs = await tiers.blobs(session, tiers.CHUNK_TIER, host, metric_type, start, end)
        hot = await hot_rows(session, host, metric_type, start, end)
    stored = await _decoded(blobs, None)
    s_us, e_us = micros(start), micros(end)
    found: dict[int, dict[str, Any]] = {}
    for block in stored:
        for ts, document in rebuild(blocks.between(block, s_us, e_us)):
            found.setdefault(ts, document)
    for ts, text in hot:
        found.setdefault(ts, orjson.loads(text))
    return [(moment(ts), found[ts]) for ts in sorted(found)]


async def minute_accounts(
    db: Any, host: str, metric_type: str, start: datetime, end: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """The per-minute accounts (processes, cgroups) of the minutes that start in
    [start, end), oldest first. Each is stored with the snapshot after its minute ended,
    so the rows read run a little past `end`."""
    accounts = []
    for stored_at, account in await documents(
        db, host, metric_type, start, end + timedelta(minutes=5)
    ):
        begins = datetime.fromisoformat(account["start"])
        if start <= begins < end:
            accounts.append((stored_at, account))
    return [(datetime.fromisoformat(a["start"]), a) for _, a in accounts]


async def recent(db: Any, host: str, since: datetime, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` snapshots of `host` stored since `since` in the hot tier (what a
    stream's `backfill` sends), oldest first: each `{"timestamp", "host", section...}` as
    stored (no seq: that is the live stream's)."""
    rows = await db.fetch(
        """
        SELECT "timestamp", metric_type, metric_data::text AS data FROM metrics_snapshots
        WHERE host = $1 AND metric_type = ANY($2::text[]) AND "timestamp" >= $3
          AND "timestamp" >= (
            SELECT coalesce(min(t), $3) FROM (
                SELECT "timestamp" AS t FROM metrics_snapshots
                WHERE host = $1 AND metric_type = 'cpu' AND "timestamp" >= $3
                ORDER BY "timestamp" DESC LIMIT $4
            ) newest
          )
        ORDER BY "timestamp"
        """,
        host,
        list(FIELDS),
        since,
        limit,
    )
    snapshots: dict[datetime, dict[str, Any]] = {}
    for row in rows:
        taken = row["timestamp"]
        snapshot = snapshots.get(taken)
        if snapshot is None:
            snapshot = snapshots[taken] = {
                "timestamp": taken.isoformat().replace("+00:00", "Z"),
                "host": host,
            }
        snapshot[row["metric_type"]] = orjson.loads(row["data"])
    return list(snapshots.values())[-limit:]


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
    if rows:
        return rows[0]["timestamp"], {row["metric_type"]: orjson.loads(row["data"]) for row in rows}
    # Nothing hot (the host stopped writing a while ago): the newest compacted snapshot.
    newest: dict[str, tuple[int, dict[str, Any]]] = {}
    for metric_type, blob in await tiers.newest(db, tiers.CHUNK_TIER, host):
        if metric_type not in FIELDS:
            continue
        block = blocks.decode(blob)
        last = blocks.between(block, int(block.timestamps[-1]), int(block.timestamps[-1]) + 1)
        newest[metric_type] = rebuild(last)[0]
    if not newest:
        return None
    when = max(ts for ts, _ in newest.values())
    return moment(when), {t: doc for t, (ts, doc) in newest.items() if ts == when}


async def count_rows(db: Any) -> int:
    value: int = await db.fetchval("SELECT count(*) FROM metrics_snapshots")
    return value
