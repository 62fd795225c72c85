"""The compactor: hot snapshots, once older than PERFPULSE_STORAGE_HOT_SECONDS, packed into
compressed chunks with their minute and hour aggregates; then the hot partition goes.

One compactor works on a database at a time, however many instances share it: each pass
holds a session advisory lock on a direct connection (not through a transaction pooler,
where a session lock would not hold), so an instance without one does not compact.

Every unit of work, one host's section over one 10-minute window, is one transaction:
its chunk (merged with what the chunk already held: a snapshot is kept once, by its
timestamp), the minute aggregates of that window in the hour's row, that hour in the
day's row, and the minute rollups of the plotted fields all commit together, or not at
all. A crash at any point leaves the hot rows where they were, and compacting them again
gives the same result: nothing lost, nothing twice. The hot partition is dropped only when
it holds exactly the rows compacted (checked under a lock that keeps writers out), so a
late snapshot that arrived meanwhile waits for the next pass instead of going with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.storage import blocks, partitions, tiers
from exporter.storage.aggregates import HOUR_US, MINUTE_US, SAMPLES, aggregate, coarser
from exporter.storage.aggregates import column_of as agg
from exporter.storage.chunks import from_documents, merge, micros, moment
from exporter.storage.database import Database, DatabaseUnavailable, describe
from exporter.storage.fields import FIELDS, keys
from exporter.storage.minutes import PER_MINUTE_TYPES
from exporter.storage.partitions import EPOCH, HOT, WINDOW

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPACTOR_LOCK_ID = 0x70657266_636F6D70  # "perfcomp"
# Waiting this long to drop a hot partition (ACCESS EXCLUSIVE on metrics_snapshots) would
# hold up writers queued behind the lock; past it the drop waits for the next pass.
DROP_LOCK_TIMEOUT_MS = 1000


@dataclass(slots=True)
class Packed:
    """What one unit of work writes: the chunk, the hour's minutes, the day's hours, and
    the minute rollups of the plotted fields."""

    chunk: bytes
    rows: int
    numbers: int
    minutes: bytes | None = None
    minute_rows: int = 0
    minute_numbers: int = 0
    hours: bytes | None = None
    hour_rows: int = 0
    hour_numbers: int = 0
    rollups: list[tuple[datetime, int, list[int], list[float | None], list[float | None]]] = field(
        default_factory=list
    )


def pack(
    metric_type: str,
    window: datetime,
    rows: Sequence[tuple[int, str]],
    old_chunk: bytes | None,
    old_minutes: bytes | None,
    old_hours: bytes | None,
) -> Packed:
    """The CPU part of one unit (pure: runs on a worker thread)."""
    raw = from_documents(rows)
    if old_chunk is not None:
        raw = merge(blocks.decode(old_chunk), raw)
    numbers = raw.numbers() - raw.rows  # the template column is not a number
    packed = Packed(blocks.encode(raw), raw.rows, numbers)
    if metric_type in PER_MINUTE_TYPES:  # already a minute's account: packed, not aggregated
        return packed
    w0 = micros(window)
    w1 = w0 + int(WINDOW.total_seconds()) * 1_000_000
    new_minutes = aggregate(blocks.between(raw, w0, w1), MINUTE_US)
    hour = blocks.decode(old_minutes) if old_minutes is not None else blocks.empty()
    hour = blocks.concat([blocks.outside(hour, w0, w1), new_minutes])
    packed.minutes = blocks.encode(hour)
    packed.minute_rows, packed.minute_numbers = hour.rows, hour.numbers()
    h0 = micros(tiers.MINUTE_TIER.start_of(window))
    day = blocks.decode(old_hours) if old_hours is not None else blocks.empty()
    day = blocks.concat([blocks.outside(day, h0, h0 + HOUR_US), coarser(hour, HOUR_US)])
    packed.hours = blocks.encode(day)
    packed.hour_rows, packed.hour_numbers = day.rows, day.numbers()
    if metric_type in FIELDS:
        packed.rollups = rollups(metric_type, new_minutes)
    return packed


def rollups(
    metric_type: str, minutes: blocks.Block
) -> list[tuple[datetime, int, list[int], list[float | None], list[float | None]]]:
    """metrics_rollup_1m's rows (count, sum and max of the plotted fields) per minute."""
    plotted = keys(metric_type)
    out: list[tuple[datetime, int, list[int], list[float | None], list[float | None]]] = []
    if minutes.rows == 0:
        return out
    samples = minutes.columns[SAMPLES].values
    for row in range(minutes.rows):
        counts: list[int] = []
        sums: list[float | None] = []
        maxes: list[float | None] = []
        for key in plotted:
            count = minutes.columns.get(agg(key, "count"))
            if count is None or not count.present[row]:
                counts.append(0)
                sums.append(None)
                maxes.append(None)
                continue
            n = int(count.values[row])
            counts.append(n)
            sums.append(float(minutes.columns[agg(key, "avg")].values[row]) * n)
            maxes.append(float(minutes.columns[agg(key, "max")].values[row]))
        out.append((moment(int(minutes.timestamps[row])), int(samples[row]), counts, sums, maxes))
    return out


@dataclass(slots=True)
class PassReport:
    """What one pass did."""

    locked: bool = False
    units: int = 0
    snapshots: int = 0
    dropped: list[str] = field(default_factory=list)
    waiting: int = 0  # partitions left for a later pass (late rows, a lock not granted)
    sealed: int = 0  # days of minutes and months of hours merged into one row
    seconds: float = 0.0


class Compactor:
    """Runs passes every `interval` seconds; `pass_once` for one now."""

    def __init__(
        self,
        database: Database,
        *,
        hot_seconds: float,
        interval: float = 60.0,
        name: str = "perfpulse",
        clock: Any = None,
        in_process: bool = False,
    ) -> None:
        self.database = database
        # Packing is CPU work (JSON parsing, numpy, zlib) that holds the GIL most of the
        # time: on a worker thread it slows everything else this process serves. With
        # `in_process` it runs in a child process of its own (started at the first unit,
        # kept for the next ones): an instance that compacts a fleet (hundreds of hosts'
        # windows after every 10 minutes) keeps answering its stream and history.
        self.in_process = in_process
        self._packer: concurrent.futures.ProcessPoolExecutor | None = None
        self.hot = timedelta(seconds=hot_seconds)
        self.interval = interval
        self.name = name
        self._clock = clock or (lambda: datetime.now(UTC))
        # (partition, host, type, window) -> rows compacted, so that a partition that
        # stays (today's daily one from before 0006) is not packed again every pass.
        self._done: dict[tuple[str, str, str, datetime], int] = {}
        self.lag_seconds = 0.0
        self.snapshots_total = 0
        self.units_total = 0
        self.dropped_total = 0
        self.failures_total = 0
        self.last_success: float | None = None
        self.holder = False
        self._told_no_direct = False

    async def run(self) -> None:
        while True:
            with contextlib.suppress(DatabaseUnavailable):
                await self.database.ready.wait()
                try:
                    await self.pass_once()
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    self.failures_total += 1
                    log.warning(
                        "compaction pass failed (retried in %.0fs): %s",
                        self.interval,
                        describe(exc),
                    )
            await asyncio.sleep(self.interval)

    async def pass_once(self, *, wait: bool = False) -> PassReport:
        """Compact everything older than the hot window, if this instance gets the lock
        (with `wait`, wait for it)."""
        report = PassReport()
        url = self.database.direct_url
        if url is None:
            if not self._told_no_direct:
                log.info(
                    "not compacting: the database URL goes through a transaction pooler; an "
                    "instance with PERFPULSE_DATABASE_LISTEN_URL (a direct URL) compacts"
                )
                self._told_no_direct = True
            return report
        started = time.perf_counter()
        conn = await asyncpg.connect(
            url, server_settings={"application_name": f"{self.name} compactor"[:63]}
        )
        try:
            if wait:
                await conn.execute("SELECT pg_advisory_lock($1)", COMPACTOR_LOCK_ID)
                report.locked = True
            else:
                report.locked = bool(
                    await conn.fetchval("SELECT pg_try_advisory_lock($1)", COMPACTOR_LOCK_ID)
                )
            self.holder = report.locked
            if report.locked:
                await self._compact(conn, report)
                for tier in (tiers.MINUTE_TIER, tiers.HOUR_TIER):
                    report.sealed += await self.seal(conn, tier)
                self.last_success = time.time()
        finally:
            await conn.close()  # and with it the lock
        report.seconds = time.perf_counter() - started
        if report.units or report.dropped or report.sealed:
            log.info(
                "compacted %d snapshots (%d chunks) in %.1fs; dropped %s; sealed %d days "
                "of minutes and months of hours",
                report.snapshots,
                report.units,
                report.seconds,
                ", ".join(report.dropped) or "no hot partition",
                report.sealed,
            )
        return report

    async def _compact(self, conn: asyncpg.Connection, report: PassReport) -> None:
        cutoff = self._clock() - self.hot
        lag: float | None = None
        for name, start, end in await partitions.listing(conn, HOT):
            if start >= cutoff:
                break
            units = await conn.fetch(
                f"""
                SELECT host, metric_type, date_bin('10 minutes', "timestamp", $1) AS window,
                       count(*) AS n
                FROM {name} GROUP BY 1, 2, 3 ORDER BY 3, 1, 2
                """,  # noqa: S608 (a partition's name, from the catalog)
                EPOCH,
            )
            compacted, complete = 0, end <= cutoff
            for unit in units:
                host, metric_type, window = unit["host"], unit["metric_type"], unit["window"]
                if window + WINDOW > cutoff:
                    complete = False
                    continue
                key = (name, host, metric_type, window)
                if self._done.get(key) == unit["n"]:
                    compacted += unit["n"]
                    continue
                if lag is None:
                    lag = (cutoff - (window + WINDOW)).total_seconds()
                    self.lag_seconds = max(0.0, lag)
                done = await self._unit(conn, name, host, metric_type, window)
                self._done[key] = done
                compacted += done
                report.units += 1
                report.snapshots += done
                self.units_total += 1
                self.snapshots_total += done
            if complete:
                if await self._drop(conn, name, compacted):
                    report.dropped.append(name)
                    self.dropped_total += 1
                    self._done = {k: v for k, v in self._done.items() if k[0] != name}
                else:
                    report.waiting += 1
        if lag is None:
            self.lag_seconds = 0.0

    async def _unit(
        self,
        conn: asyncpg.Connection,
        partition: str,
        host: str,
        metric_type: str,
        window: datetime,
    ) -> int:
        rows = await conn.fetch(
            f"""
            SELECT "timestamp", metric_data::text AS data FROM {partition}
            WHERE host = $1 AND metric_type = $2 AND "timestamp" >= $3 AND "timestamp" < $4
            ORDER BY "timestamp"
            """,  # noqa: S608 (a partition's name, from the catalog)
            host,
            metric_type,
            window,
            window + WINDOW,
        )
        if not rows:
            return 0
        hour = tiers.MINUTE_TIER.start_of(window)
        day = tiers.HOUR_TIER.start_of(window)
        await partitions.ensure(conn, tiers.CHUNK_TIER.partitioning, [window])
        await partitions.ensure(conn, tiers.MINUTE_TIER.partitioning, [hour])
        await partitions.ensure(conn, tiers.HOUR_TIER.partitioning, [day])
        documents = [(micros(row["timestamp"]), row["data"]) for row in rows]
        async with conn.transaction():
            old_chunk = await tiers.holding(conn, tiers.CHUNK_TIER, host, metric_type, window)
            old_minutes = await tiers.holding(conn, tiers.MINUTE_TIER, host, metric_type, hour)
            old_hours = await tiers.holding(conn, tiers.HOUR_TIER, host, metric_type, day)
            packed = await self._work(
                pack,
                metric_type,
                window,
                documents,
                None if old_chunk is None else old_chunk.data,
                None if old_minutes is None else old_minutes.data,
                None if old_hours is None else old_hours.data,
            )
            await tiers.store(
                conn,
                tiers.CHUNK_TIER,
                host,
                metric_type,
                window,
                packed.rows,
                packed.numbers,
                packed.chunk,
            )
            # Into the row that holds the hour (the day) if there is one: a late snapshot
            # of a day or month already sealed goes into its sealed row.
            for tier, own, old, data, count, numbers in (
                (
                    tiers.MINUTE_TIER,
                    hour,
                    old_minutes,
                    packed.minutes,
                    packed.minute_rows,
                    packed.minute_numbers,
                ),
                (
                    tiers.HOUR_TIER,
                    day,
                    old_hours,
                    packed.hours,
                    packed.hour_rows,
                    packed.hour_numbers,
                ),
            ):
                if data is not None:
                    await tiers.store(
                        conn,
                        tier,
                        host,
                        metric_type,
                        own if old is None else old.start,
                        count,
                        numbers,
                        data,
                        None if old is None else old.span,
                    )
            await tiers.store_rollups(conn, host, metric_type, packed.rollups)
        return len(rows)

    async def _work(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on a worker thread, or in the packing process."""
        if not self.in_process:
            return await asyncio.to_thread(function, *args)
        if self._packer is None:
            self._packer = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_background,
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._packer, function, *args)
        except concurrent.futures.process.BrokenProcessPool:
            # The child died (killed, out of memory): a new one for the next unit; this
            # unit's transaction rolls back and the unit is compacted on the next pass.
            log.warning("the compactor's packing process died; starting another")
            self._packer.shutdown(wait=False)
            self._packer = None
            raise OSError("the packing process died") from None

    def close(self) -> None:
        """Stop the packing process, if one was started."""
        if self._packer is not None:
            self._packer.shutdown(wait=True, cancel_futures=True)
            self._packer = None

    async def seal(self, conn: asyncpg.Connection, tier: tiers.Tier, back: int = 2) -> int:
        """Merge the rows of each day (minutes) or month (hours) that is over, and that
        the compactor has passed, into one row. Looks `back` days (months): a unit left
        unsealed past that (a host's backlog written weeks late) is read as it is."""
        calendar = tier.calendar
        until = calendar.start_of(self._clock() - self.hot - WINDOW)
        since = until
        for _ in range(back):
            since = calendar.start_of(since - timedelta(days=1))
        sealed = 0
        for host, metric_type, start in await tiers.unsealed(conn, tier, since, until):
            end = calendar.end_of(start)
            async with conn.transaction():
                found = await tiers.rows_of(conn, tier, host, metric_type, start, end)
                if not found:
                    continue
                rows, numbers, data = await self._work(_merged, found)
                await tiers.replace(conn, tier, host, metric_type, start, end, rows, numbers, data)
            sealed += 1
        return sealed

    async def _drop(self, conn: asyncpg.Connection, partition: str, compacted: int) -> bool:
        """Drop the hot partition if it holds exactly the rows compacted."""
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {DROP_LOCK_TIMEOUT_MS}")
                # SHARE: no row can arrive between the count and the drop.
                await conn.execute(f"LOCK TABLE {partition} IN SHARE MODE")
                held = await conn.fetchval(f"SELECT count(*) FROM {partition}")  # noqa: S608
                if held != compacted:
                    log.info(
                        "%s: %d rows arrived while it was compacted; compacting them next pass",
                        partition,
                        held - compacted,
                    )
                    return False
                await conn.execute(f"DROP TABLE {partition}")
        except asyncpg.exceptions.LockNotAvailableError:
            log.info("%s: busy, dropped at the next pass", partition)
            return False
        return True


# The packing process's niceness: packing is work that can wait a little, the stream and
# history answers this process serves cannot.
PACKER_NICE = 10


def _background() -> None:
    """In the packing process, first: below this instance's own priority."""
    with contextlib.suppress(OSError):
        os.nice(PACKER_NICE)


def _merged(found: Sequence[bytes]) -> tuple[int, int, bytes]:
    """Several rows' blocks as one: (rows, numbers, encoded)."""
    merged = blocks.concat(blocks.decode_many(found))
    return merged.rows, merged.numbers(), blocks.encode(merged)


class CompactorCollector(Collector):
    """perfpulse_storage_compaction_* metrics."""

    def __init__(self, compactor: Compactor) -> None:
        self._compactor = compactor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        c = self._compactor
        yield GaugeMetricFamily(
            "perfpulse_storage_compaction_lag_seconds",
            "How long the oldest snapshot past the hot window had waited to be compacted "
            "when the last pass started (0: nothing was waiting).",
            value=c.lag_seconds,
        )
        yield GaugeMetricFamily(
            "perfpulse_storage_compactor_holder",
            "1 if this instance held the compactor's lock at its last pass (one instance "
            "per database compacts).",
            value=1.0 if c.holder else 0.0,
        )
        yield CounterMetricFamily(
            "perfpulse_storage_compacted_snapshots_total",
            "Hot rows (one section of one snapshot) packed into compressed chunks.",
            value=c.snapshots_total,
        )
        yield CounterMetricFamily(
            "perfpulse_storage_compaction_failures_total",
            "Compaction passes that failed (the database unreachable or an error); retried.",
            value=c.failures_total,
        )
        if c.last_success is not None:
            yield GaugeMetricFamily(
                "perfpulse_storage_compaction_last_success_timestamp_seconds",
                "When this instance last finished a compaction pass, seconds since the epoch.",
                value=c.last_success,
            )
