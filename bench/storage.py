"""Storage: write throughput, history query latency over 30 days, backlog drain speed.

Runs against perfpulse's embedded PostgreSQL in a temporary directory (the zero-config
default), or against `--database-url` (a database in it is created and dropped).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import machine, percentile
from exporter.api.history import bucket_width
from exporter.config import load_settings
from exporter.runtime import Runtime
from exporter.sinks.writer import to_stored
from exporter.storage import history as reads
from exporter.storage import ingest, partitions
from exporter.storage.embedded import EmbeddedPostgres, url_for
from exporter.storage.fields import FIELDS
from exporter.storage.ingest import StoredSnapshot
from exporter.storage.migrate import migrate

SEED_INSERT = (
    'INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data) '
    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
)


async def _real_snapshot() -> StoredSnapshot:
    """One snapshot of this machine, for realistic row sizes."""
    runtime = Runtime(load_settings(sampling_interval_seconds=1.0, hostname="bench"))
    async with runtime.sampling_only() as sampler:
        await sampler.sample_once()
        await asyncio.sleep(0.2)
        return to_stored(await sampler.sample_once())


def _series(
    template: StoredSnapshot, count: int, start: datetime, step: float
) -> list[StoredSnapshot]:
    return [
        StoredSnapshot(
            start + timedelta(seconds=i * step), template.host, template.rows, template.values
        )
        for i in range(count)
    ]


async def _fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = url_for(admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def _throughput(admin_url: str, template: StoredSnapshot, snapshots: int) -> dict[str, Any]:
    """Rows per second for each way of writing, each into a fresh database."""
    results: dict[str, Any] = {}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch = _series(template, snapshots, start, 1.0)
    rows_per_snapshot = len(template.rows)

    async def timed(name: str, chunk: int, write: Any, column: str = "json") -> None:
        url = await _fresh_database(admin_url, "perfpulse_bench_write")
        conn = await asyncpg.connect(url)
        try:
            if column != "json":
                await conn.execute(
                    f"ALTER TABLE metrics_snapshots ALTER COLUMN metric_data TYPE {column}"
                )
            await partitions.ensure_partitions(conn, {s.timestamp.date() for s in batch})
            t0 = time.perf_counter()
            for i in range(0, len(batch), chunk):
                await write(conn, batch[i : i + chunk])
            elapsed = time.perf_counter() - t0
            stored = await reads.count_rows(conn)
        finally:
            await conn.close()
        assert stored == len(batch) * rows_per_snapshot, (name, stored)
        results[name] = {
            "rows_per_second": stored / elapsed,
            "snapshots_per_second": len(batch) / elapsed,
            "seconds": elapsed,
        }

    async def baseline(conn: asyncpg.Connection, chunk: list[StoredSnapshot]) -> None:
        # The original design: a batch of 10 snapshots, one INSERT per row.
        async with conn.transaction():
            await conn.executemany(
                SEED_INSERT,
                [(s.timestamp, s.host, t, d) for s in chunk for t, d in s.rows],
            )

    async def unnest_only(conn: asyncpg.Connection, chunk: list[StoredSnapshot]) -> None:
        async with conn.transaction():
            await ingest.insert(conn, chunk)

    async def perfpulse(conn: asyncpg.Connection, chunk: list[StoredSnapshot]) -> None:
        await ingest.write_batch(conn, chunk)

    await timed(
        "baseline: one INSERT per row into jsonb, 10 per transaction", 10, baseline, "jsonb"
    )
    await timed("baseline: one INSERT per row into json, 10 per transaction", 10, baseline)
    await timed("unnest insert, 10 snapshots per transaction", 10, unnest_only)
    await timed("write_batch (insert + rollups), 10 per transaction", 10, perfpulse)

    async def copy_only(conn: asyncpg.Connection, chunk: list[StoredSnapshot]) -> None:
        async with conn.transaction():
            await ingest.copy_insert(conn, chunk)

    await timed("COPY via staging, 10 snapshots per transaction", 10, copy_only)
    await timed("unnest insert, 1000 snapshots per transaction", 1000, unnest_only)
    await timed("COPY via staging, 1000 snapshots per transaction", 1000, copy_only)
    await timed("write_batch (insert + rollups), 1000 per transaction", 1000, perfpulse)
    return results


def _synthetic(metric_type: str, i: int, rng: random.Random) -> str:
    """The plotted fields with plausible values (what rollups and queries read)."""
    data: dict[str, Any] = {"available": True}
    for _, path in FIELDS[metric_type]:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = round(rng.uniform(0, 100), 3)
    return orjson.dumps(data).decode()


async def _history(admin_url: str, days: int, interval: float, runs: int) -> dict[str, Any]:
    url = await _fresh_database(admin_url, "perfpulse_bench_history")
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    count = int(days * 86400 / interval)
    rng = random.Random(42)
    types = list(FIELDS)
    conn = await asyncpg.connect(url)
    t0 = time.perf_counter()
    try:
        chunk = 2000
        for first in range(0, count, chunk):
            batch = [
                StoredSnapshot(
                    start + timedelta(seconds=i * interval),
                    "bench",
                    tuple((t, _synthetic(t, i, rng)) for t in types),
                )
                for i in range(first, min(count, first + chunk))
            ]
            await ingest.write_batch(conn, batch)
        load_seconds = time.perf_counter() - t0
        await conn.execute("VACUUM ANALYZE")
        latencies: dict[str, dict[str, float]] = {}
        resolution, bucket = bucket_width(start, end, 1000)
        assert resolution == "1m"
        for metric_type in types:
            samples = []
            for _ in range(runs):
                q0 = time.perf_counter()
                series = await reads.history_rollup(conn, "bench", metric_type, start, end, bucket)
                samples.append(time.perf_counter() - q0)
            assert 0 < len(series.timestamps) <= 1001, len(series.timestamps)
            latencies[metric_type] = {
                "p50_ms": statistics.median(samples) * 1e3,
                "p95_ms": percentile(samples, 95) * 1e3,
            }
        raw = []
        for _ in range(runs):
            q0 = time.perf_counter()
            await reads.history_raw(conn, "bench", "cpu", end - timedelta(hours=1), end, 3.6)
            raw.append(time.perf_counter() - q0)
        retention = await _retention(conn, start) if days >= 3 else None
    finally:
        await conn.close()
    return {
        "snapshots_per_type": count,
        "load_seconds": load_seconds,
        "rollup_queries_30d_1000_points": latencies,
        "retention_one_day": retention,
        "raw_query_1h_1000_points": {
            "p50_ms": statistics.median(raw) * 1e3,
            "p95_ms": percentile(raw, 95) * 1e3,
        },
    }


async def _retention(conn: asyncpg.Connection, start: datetime) -> dict[str, Any]:
    """One day of rows removed two ways: batched DELETE (day 2) vs DROP of a partition (day 3)."""
    day2 = (start + timedelta(days=1)).date()
    day3 = (start + timedelta(days=2)).date()

    async def wal() -> int:
        value: int = await conn.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        return value

    partition = partitions.partition_name(day2)
    rows = await conn.fetchval(f"SELECT count(*) FROM {partition}")
    w0, t0 = await wal(), time.perf_counter()
    while True:
        status = await conn.execute(
            f"DELETE FROM {partition} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {partition} LIMIT 10000))"
        )
        if int(status.rsplit(" ", 1)[1]) == 0:
            break
    delete_seconds, delete_wal = time.perf_counter() - t0, await wal() - w0
    w0, t0 = await wal(), time.perf_counter()
    await conn.execute(f"DROP TABLE {partitions.partition_name(day3)}")
    drop_seconds, drop_wal = time.perf_counter() - t0, await wal() - w0
    return {
        "rows": rows,
        "delete_seconds": delete_seconds,
        "delete_wal_bytes": delete_wal,
        "drop_seconds": drop_seconds,
        "drop_wal_bytes": drop_wal,
    }


async def _drain(admin_url: str, template: StoredSnapshot, backlog_seconds: int) -> dict[str, Any]:
    """An hour of 1 s snapshots buffered during an outage, then drained."""
    url = await _fresh_database(admin_url, "perfpulse_bench_drain")
    with tempfile.TemporaryDirectory() as data_dir:
        settings = load_settings(
            database_url=url, data_dir=Path(data_dir), writer_max_buffered=backlog_seconds + 10
        )
        runtime = Runtime(settings, collectors=[])
        database, writer = runtime.database, runtime.writer
        start = datetime.now(UTC) - timedelta(seconds=backlog_seconds)
        for snapshot in _series(template, backlog_seconds, start, 1.0):
            writer.add(snapshot)
        await database.start(wait=True)
        t0 = time.perf_counter()
        while writer.buffered:
            await writer.flush()
        elapsed = time.perf_counter() - t0
        await database.stop()
    return {
        "backlog_seconds_of_data": backlog_seconds,
        "drain_seconds": elapsed,
        "times_real_time": backlog_seconds / elapsed,
    }


async def _run(database_url: str | None, snapshots: int, days: int, runs: int) -> dict[str, Any]:
    template = await _real_snapshot()
    embedded = None
    if database_url is None:
        directory = tempfile.mkdtemp(prefix="perfpulse-bench-")
        embedded = EmbeddedPostgres(Path(directory))
        admin_url = url_for(await embedded.start(), "postgres")
    else:
        admin_url = database_url
    try:
        return {
            "machine": machine(),
            "server": "embedded" if embedded else "external",
            "snapshot_bytes": sum(len(d) for _, d in template.rows),
            "write": await _throughput(admin_url, template, snapshots),
            "history": await _history(admin_url, days, 5.0, runs),
            "drain": await _drain(admin_url, template, 3600),
        }
    finally:
        if embedded is not None:
            await embedded.stop()


def run(database_url: str | None, snapshots: int, days: int, runs: int) -> dict[str, Any]:
    return asyncio.run(_run(database_url, snapshots, days, runs))


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}; PostgreSQL: {result['server']}; "
        f"one snapshot = {result['snapshot_bytes']} bytes of JSON in 6 rows",
        "",
        "| write path | rows/s | snapshots/s |",
        "|---|---|---|",
    ]
    for name, r in result["write"].items():
        lines.append(f"| {name} | {r['rows_per_second']:,.0f} | {r['snapshots_per_second']:,.0f} |")
    h = result["history"]
    lines += [
        "",
        f"History: {h['snapshots_per_type']:,} snapshots per type (30 days at 5 s), loaded in "
        f"{h['load_seconds']:.0f} s.",
        "",
        "| query | p50 | p95 |",
        "|---|---|---|",
    ]
    for metric_type, q in h["rollup_queries_30d_1000_points"].items():
        lines.append(
            f"| {metric_type}, 30 days, 1,000 points | {q['p50_ms']:.1f} ms | {q['p95_ms']:.1f} ms |"
        )
    raw = h["raw_query_1h_1000_points"]
    lines.append(
        f"| cpu, last hour, 1,000 points (raw rows) | {raw['p50_ms']:.1f} ms | {raw['p95_ms']:.1f} ms |"
    )
    r = h["retention_one_day"]
    lines += (
        []
        if r is None
        else [
            "",
            f"Retention, one day ({r['rows']:,} rows): batched DELETE {r['delete_seconds'] * 1e3:,.0f} ms and "
            f"{r['delete_wal_bytes'] / 2**20:,.1f} MiB of WAL; DROP of its partition {r['drop_seconds'] * 1e3:,.1f} ms "
            f"and {r['drop_wal_bytes'] / 1024:,.1f} KiB of WAL.",
        ]
    )
    d = result["drain"]
    lines += [
        "",
        f"Drain: {d['backlog_seconds_of_data']} s of 1 s snapshots written in {d['drain_seconds']:.1f} s "
        f"= {d['times_real_time']:.0f}x real time.",
    ]
    return "\n".join(lines)
