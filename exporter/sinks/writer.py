"""Batched persistence: snapshots are buffered and written in bulk, and never lost to an
outage: while PostgreSQL is unreachable they wait in memory (bounded, oldest dropped and
counted past the bound), on shutdown they are flushed or spooled to disk.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.sampler import Sampler, Snapshot, Subscription
from exporter.sinks.spool import Spool
from exporter.storage import ingest
from exporter.storage.database import Database, DatabaseUnavailable, describe
from exporter.storage.ingest import StoredSnapshot

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


# Sections whose history is a minute's account, not every tick: stored once a minute,
# from the snapshot that carries the finished minute (`minute`).
PER_MINUTE = ("processes", "cgroups")


def to_stored(snapshot: Snapshot) -> StoredSnapshot:
    """One row per collector: the same JSON the live stream carries for that key (for the
    per-minute sections, the finished minute, once a minute)."""
    sections = snapshot.sections()
    rows = tuple(
        (name, text.decode()) if name not in PER_MINUTE else (name, _minute_json(data))
        for name, (data, text) in sections.items()
        if name not in PER_MINUTE or data.get("minute")
    )
    return StoredSnapshot(snapshot.timestamp, snapshot.host, rows)


def _minute_json(section: dict[str, object]) -> str:
    return orjson.dumps(section["minute"]).decode()


class DurationHistogram:
    """Cumulative histogram of durations, exposed without a `_created` series."""

    BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.BOUNDS), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


@dataclass(frozen=True, slots=True)
class _Pending:
    id: int
    enqueued_at: float
    snapshot: StoredSnapshot


class BatchWriter:
    """Queue snapshots; flush `batch_size` of them, or whatever waited `max_age` seconds."""

    def __init__(
        self,
        database: Database,
        *,
        batch_size: int = 10,
        max_age: float = 5.0,
        max_buffered: int = 12_000,
        drain_batch: int = 1000,
        spool_path: Path | None = None,
    ) -> None:
        self.database = database
        self.batch_size = batch_size
        self.max_age = max_age
        self.max_buffered = max_buffered
        self.drain_batch = max(drain_batch, batch_size)
        self._spool = Spool(spool_path) if spool_path is not None else None
        self._spooled_until: int | None = None  # id of the last snapshot read from the spool
        self._pending: deque[_Pending] = deque()
        self._next_id = 0
        self._wake = asyncio.Event()
        self.written_total = 0
        self.dropped_total = 0
        self.last_success: float | None = None
        self.flush_seconds = DurationHistogram()
        self._failing_since: float | None = None
        self._drop_logged = False

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def add(self, snapshot: Snapshot | StoredSnapshot) -> None:
        stored = snapshot if isinstance(snapshot, StoredSnapshot) else to_stored(snapshot)
        self._pending.append(_Pending(self._next_id, time.monotonic(), stored))
        self._next_id += 1
        while len(self._pending) > self.max_buffered:
            self._pending.popleft()
            self.dropped_total += 1
            if not self._drop_logged:
                log.error(
                    "writer buffer full (%d snapshots): dropping the oldest until the "
                    "database accepts writes again",
                    self.max_buffered,
                )
                self._drop_logged = True
        # Wake the flush loop: it either has a full batch now, or must start timing the
        # oldest snapshot's age.
        self._wake.set()

    async def run(self, sampler: Sampler) -> None:
        """Take every snapshot from the sampler and keep flushing, until cancelled."""
        self.load_spool()
        subscription = sampler.subscribe(maxsize=1024)
        intake = asyncio.create_task(self._intake(subscription), name="writer-intake")
        try:
            await self._flush_loop()
        finally:
            intake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await intake
            for snapshot in subscription.drain():  # taken but not yet handed over
                self.add(snapshot)
            subscription.close()

    async def _intake(self, subscription: Subscription) -> None:
        async for snapshot in subscription:
            self.add(snapshot)

    async def _flush_loop(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            await self._wait_for_batch()
            try:
                await self.flush()
            except DatabaseUnavailable as exc:
                self._note_failure(str(exc))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            else:
                delay = RETRY_MIN_SECONDS

    async def _wait_for_batch(self) -> None:
        while True:
            if len(self._pending) >= self.batch_size:
                return
            if self._pending:
                age = time.monotonic() - self._pending[0].enqueued_at
                if age >= self.max_age:
                    return
                timeout = self.max_age - age
            else:
                timeout = None
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as the wait completes, and shutdown would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def flush(self) -> int:
        """Write the oldest pending snapshots (a batch, or a larger chunk when draining a
        backlog) in one transaction; returns how many were written. Raises
        DatabaseUnavailable, leaving them pending."""
        if not self._pending:
            return 0
        size = self.batch_size if len(self._pending) <= self.batch_size else self.drain_batch
        chunk = [self._pending[i] for i in range(min(size, len(self._pending)))]
        pool = self.database.pool
        started = time.perf_counter()
        try:
            async with pool.acquire(timeout=10) as conn:
                await ingest.write_batch(
                    conn,
                    [p.snapshot for p in chunk],
                    simple=self.database.settings.database_transaction_pooling,
                )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.database.note_failure(describe(exc))
            raise DatabaseUnavailable(describe(exc)) from exc
        self.database.note_success()
        self.flush_seconds.observe(time.perf_counter() - started)
        last_id = chunk[-1].id
        while self._pending and self._pending[0].id <= last_id:
            self._pending.popleft()
        if self._spooled_until is not None and last_id >= self._spooled_until:
            assert self._spool is not None
            self._spool.remove()
            self._spooled_until = None
        self.written_total += len(chunk)
        self.last_success = time.time()
        if self._failing_since is not None:
            log.info(
                "database writable again after %.0fs; %d snapshots still buffered",
                time.monotonic() - self._failing_since,
                len(self._pending),
            )
            self._failing_since = None
            self._drop_logged = False
        return len(chunk)

    def _note_failure(self, reason: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "cannot write snapshots (%s); buffering them (%d now, at most %d) and retrying",
                reason,
                len(self._pending),
                self.max_buffered,
            )

    async def stop(self, within: float) -> None:
        """Flush what is pending within `within` seconds; spool the rest if there is a spool."""
        deadline = time.monotonic() + within
        while self._pending and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await self.flush()
            except (DatabaseUnavailable, TimeoutError):
                break
        if self._pending:
            self.spool()

    def spool(self) -> None:
        """Keep what is still pending on disk (or say it is lost, without a spool)."""
        if not self._pending:
            return
        if self._spool is None:
            log.error("shutting down with %d snapshots unwritten (no spool)", len(self._pending))
            return
        self._spool.save([pending.snapshot for pending in self._pending])
        log.warning(
            "database unavailable at shutdown: spooled %d snapshots to %s",
            len(self._pending),
            self._spool.path,
        )
        self._pending.clear()

    def load_spool(self) -> int:
        """Queue the snapshots a previous run spooled; returns how many."""
        if self._spool is None:
            return 0
        snapshots = self._spool.read()
        for stored in snapshots:
            self.add(stored)
        # The file goes once the last of them is stored (see flush).
        self._spooled_until = self._next_id - 1 if snapshots else None
        if not snapshots:
            self._spool.remove()
        if snapshots:
            log.info("loaded %d spooled snapshots from %s", len(snapshots), self._spool.path)
        return len(snapshots)


class WriterCollector(Collector):
    """perfpulse_writer_* metrics."""

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        w = self._writer
        yield GaugeMetricFamily(
            "perfpulse_writer_buffered_snapshots",
            "Snapshots waiting to be written to PostgreSQL.",
            value=w.buffered,
        )
        yield CounterMetricFamily(
            "perfpulse_writer_written_snapshots_total", "Snapshots written.", value=w.written_total
        )
        yield CounterMetricFamily(
            "perfpulse_writer_dropped_snapshots_total",
            "Snapshots dropped because the buffer was full during an outage.",
            value=w.dropped_total,
        )
        if w.last_success is not None:
            yield GaugeMetricFamily(
                "perfpulse_writer_last_success_timestamp_seconds",
                "When a flush last succeeded, seconds since the epoch.",
                value=w.last_success,
            )
        yield w.flush_seconds.family(
            "perfpulse_writer_flush_duration_seconds",
            "Seconds one flush (a bulk insert, one transaction) took.",
        )
