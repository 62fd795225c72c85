"""The batch writer against a real PostgreSQL: batches, idempotency, shutdown, outages."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from exporter.config import load_settings
from exporter.sinks.writer import BatchWriter
from exporter.storage import history as reads
from exporter.storage import ingest, partitions
from exporter.storage.database import Database
from exporter.storage.ingest import StoredSnapshot
from exporter.storage.retention import Retention
from tests.db import fetchval
from tests.servers import serve

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def snapshot(i: int, host: str = "h1", start: datetime = T0, step: float = 1.0) -> StoredSnapshot:
    """Snapshot i of a series with known values: cpu usage = i, memory percent = 2 * i."""
    return StoredSnapshot(
        start + timedelta(seconds=i * step),
        host,
        (
            ("cpu", orjson.dumps({"available": True, "usage_percent": float(i)}).decode()),
            ("memory", orjson.dumps({"available": True, "percent": 2.0 * i}).decode()),
        ),
    )


async def started(url: str, **overrides: object) -> Database:
    database = Database(load_settings(database_url=url, **overrides))
    await database.start(wait=True)
    return database


@pytest.fixture
async def database(clean_database_url: str) -> AsyncIterator[Database]:
    """perfpulse's Database on the test run's emptied database."""
    started_database = await started(clean_database_url)
    yield started_database
    await started_database.stop()


async def test_batch_of_ten_is_written_in_one_transaction(database):
    writer = BatchWriter(database, batch_size=10, max_age=60)
    for i in range(10):
        writer.add(snapshot(i))
    assert await writer.flush() == 10
    rows = await database.pool.fetch(
        "SELECT xmin::text AS tx, count(*) AS n FROM metrics_snapshots GROUP BY 1"
    )
    assert [(len(rows), rows[0]["n"])] == [(1, 20)]  # one transaction wrote all 20 rows
    assert writer.buffered == 0
    assert writer.written_total == 10


async def test_replaying_the_same_snapshots_writes_nothing_twice(database):
    async with database.pool.acquire() as conn:
        batch = [snapshot(i) for i in range(30)]
        assert await ingest.write_batch(conn, batch) == 60
        stored = await conn.fetch("SELECT * FROM metrics_snapshots ORDER BY 1, 2, 3")
        assert await ingest.write_batch(conn, batch) == 0
        assert await ingest.write_batch(conn, batch[10:20]) == 0
        assert await reads.count_rows(conn) == 60
        assert await conn.fetch("SELECT * FROM metrics_snapshots ORDER BY 1, 2, 3") == stored


async def test_large_batches_go_through_copy_and_replay_just_the_same(database):
    async with database.pool.acquire() as conn:
        batch = [snapshot(i) for i in range(ingest.COPY_FROM_SNAPSHOTS + 50)]
        assert await ingest.write_batch(conn, batch) == 2 * len(batch)
        stored = await conn.fetch("SELECT * FROM metrics_snapshots ORDER BY 1, 2, 3")
        assert await ingest.write_batch(conn, batch) == 0
        assert await ingest.write_batch(conn, batch[:20]) == 0  # the unnest path too
        assert await reads.count_rows(conn) == 2 * len(batch)
        assert await conn.fetch("SELECT * FROM metrics_snapshots ORDER BY 1, 2, 3") == stored


async def test_max_age_flushes_a_partial_batch(database):
    writer = BatchWriter(database, batch_size=100, max_age=0.2)
    task = asyncio.create_task(writer._flush_loop())
    await asyncio.sleep(0.05)  # the loop is already waiting when the snapshots come
    writer.add(snapshot(1))
    writer.add(snapshot(2))
    for _ in range(50):
        await asyncio.sleep(0.05)
        if writer.written_total:
            break
    task.cancel()
    assert writer.written_total == 2
    assert await reads.count_rows(database.pool) == 4


async def test_shutdown_flushes_the_partial_batch(database):
    writer = BatchWriter(database, batch_size=10, max_age=3600)
    for i in range(7):
        writer.add(snapshot(i))
    await writer.stop(5)
    assert await reads.count_rows(database.pool) == 14


async def test_full_buffer_drops_the_oldest_and_counts_them():
    database = Database(load_settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    writer = BatchWriter(database, batch_size=10, max_buffered=5)
    for i in range(8):
        writer.add(snapshot(i))
    assert writer.buffered == 5
    assert writer.dropped_total == 3
    assert [p.snapshot.timestamp for p in writer._pending] == [
        snapshot(i).timestamp for i in range(3, 8)
    ]


async def test_outage_at_shutdown_spools_and_next_start_writes_them(clean_database_url, tmp_path):
    spool = tmp_path / "spool.jsonl"
    down = Database(load_settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    writer = BatchWriter(down, spool_path=spool)
    for i in range(12):
        writer.add(snapshot(i))
    await writer.stop(0.5)
    assert len(spool.read_bytes().splitlines()) == 12
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600  # it holds this host's snapshots
    database = await started(clean_database_url)
    try:
        restarted = BatchWriter(database, spool_path=spool)
        assert restarted.load_spool() == 12
        # Kept until its snapshots are stored: a crash now would lose nothing.
        assert spool.exists()
        while restarted.buffered:
            await restarted.flush()
        assert not spool.exists()
        assert await reads.count_rows(database.pool) == 24
    finally:
        await database.stop()


async def test_retention_drops_whole_old_partitions(database):
    now = datetime.now(UTC)
    async with database.pool.acquire() as conn:
        await ingest.write_batch(
            conn, [snapshot(i, start=now - timedelta(days=40)) for i in range(3)]
        )
        await ingest.write_batch(
            conn, [snapshot(i, start=now - timedelta(minutes=5)) for i in range(3)]
        )
    old = partitions.HOT.start_of(now - timedelta(days=40))
    recent = partitions.HOT.start_of(now - timedelta(minutes=5))
    dropped = await Retention(database, days=30).enforce(now)
    # The old snapshots' window and the one made ahead of it; nothing recent.
    assert dropped == [partitions.HOT.name(old), partitions.HOT.name(old + partitions.WINDOW)]
    assert all(name < partitions.HOT.name(recent) for name in dropped)
    assert await reads.count_rows(database.pool) == 6
    assert (
        await database.pool.fetchval(
            "SELECT count(*) FROM metrics_rollup_1m WHERE bucket < $1", now - timedelta(days=30)
        )
        == 0
    )


@pytest.mark.e2e
def test_sigterm_mid_batch_loses_nothing(tmp_path, server_env):
    env = {**server_env, "PERFPULSE_BATCH_SIZE": "10", "PERFPULSE_BATCH_MAX_AGE_SECONDS": "3600"}
    with serve(tmp_path, "--interval", "0.1", env=env) as server:
        time.sleep(1.5)  # one or more full batches, then a partial one
        assert server.stop(signal.SIGTERM) == 0
        log = server.log()
    taken = int(re.search(r"sampler stopped after (\d+) snapshots", log)[1])
    assert taken >= 10

    sql = 'SELECT count(DISTINCT "timestamp") FROM metrics_snapshots'
    assert asyncio.run(fetchval(server_env["PERFPULSE_DATABASE_URL"], sql)) == taken
    assert f"{taken} snapshots written" in log


def test_hot_partitions_are_ten_minute_windows_and_daily_ones_are_still_read():
    moment = T0 + timedelta(minutes=17, seconds=3)
    start = partitions.HOT.start_of(moment)
    assert partitions.HOT.name(start) == "metrics_snapshots_p202611261010"
    assert partitions.HOT.parse("metrics_snapshots_p202611261010") == (
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=20),
    )
    # A partition made before migration 0006 holds a day.
    assert partitions.HOT.parse("metrics_snapshots_p20261126") == (
        datetime(2026, 11, 26, tzinfo=UTC),
        datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert partitions.MINUTES.name(partitions.MINUTES.start_of(moment)) == "metrics_minutes_p202611"
    assert partitions.HOURS.end_of(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


async def test_cancelling_the_flush_loop_always_stops_it():
    # Shutdown cancels the loop wherever it is: waiting, just woken, or backing off.
    down = Database(load_settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    for steps in range(4):  # cancel 0 to 3 loop iterations after the wake-up
        writer = BatchWriter(down, batch_size=1000, max_age=60)
        task = asyncio.create_task(writer._flush_loop())
        await asyncio.sleep(0)  # the loop now waits for a wake-up
        writer.add(snapshot(1))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)


async def test_through_pgbouncer_a_batch_is_one_simple_query_and_stores_the_same(
    clean_database_url,
):
    """With transaction pooling the writer sends a batch as one simple query (one round
    trip holding a server connection, not four): through a real PgBouncer it stores
    exactly what the transaction path stores, awkward text included, and a replay adds
    nothing."""
    import asyncpg

    from exporter.storage.database import TransactionPooledConnection
    from tests.pgbouncer import pgbouncer

    awkward = orjson.dumps({"available": True, "name": "it's a \\ back'slash", "n": 1}).decode()
    batch = [
        StoredSnapshot(T0 + timedelta(seconds=i), host, (("cpu", awkward), ("memory", "{}")))
        for i in range(5)
        for host in ("simple", "transaction")
    ]
    with pgbouncer(clean_database_url, pool_size=2) as pooled:
        conn = await asyncpg.connect(
            pooled, statement_cache_size=0, connection_class=TransactionPooledConnection
        )
        try:
            simple = [s for s in batch if s.host == "simple"]
            assert await ingest.write_batch(conn, simple, simple=True) == 10
            assert await ingest.write_batch(conn, simple, simple=True) == 0  # a replay
            plain = [s for s in batch if s.host == "transaction"]
            assert await ingest.write_batch(conn, plain) == 10
            stored = await conn.fetch(
                """SELECT host, "timestamp", metric_type, metric_data::text AS data
                   FROM metrics_snapshots ORDER BY host, "timestamp", metric_type"""
            )
        finally:
            await conn.close()
    by_host = {
        host: [(r["timestamp"], r["metric_type"], r["data"]) for r in stored if r["host"] == host]
        for host in ("simple", "transaction")
    }
    assert by_host["simple"] == by_host["transaction"] and len(by_host["simple"]) == 10
    assert orjson.loads(by_host["simple"][0][2])["name"] == "it's a \\ back'slash"
