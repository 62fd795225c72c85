"""Storage: what history costs per tier on disk and in WAL, what writing and compacting
cost, how fast history reads are with 30 days stored, and a backlog's drain.

Replays a capture of this machine's real snapshots (`python -m bench capture`; by default
the test fixture, 15 minutes at 1 s) at shifted times through the real write path
(`ingest.write_batch`, the writer's batches) and the real compactor, into perfpulse's
embedded PostgreSQL in a temporary directory, or into databases created (and dropped) in
`--database-url`.

- density: a day of the capture (played over and over) written at 1 s and, one snapshot
  in five, at 5 s, then compacted: bytes per stored number in each tier (tables, TOAST
  and indexes), WAL per snapshot, and a host's bytes per day: the tiers as kept against
  the hot tier kept whole (the layout before tiered storage, measured in the same run).
- queries: a day and today so far written and compacted for real, then the day copied
  back to 30 days of chunks and minute aggregates and a year of hour aggregates; the
  history reads the API makes (the Reader, its statement timeout, the API's bucket rule)
  timed for every section.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.capture import Capture
from bench.common import fresh_database, machine, percentile
from exporter.api.history import bucket_width
from exporter.config import load_settings
from exporter.runtime import Runtime
from exporter.storage import blocks, ingest, partitions, paths, stats, tiers
from exporter.storage import history as reads
from exporter.storage.compactor import Compactor
from exporter.storage.database import Database
from exporter.storage.embedded import EmbeddedPostgres, url_for
from exporter.storage.fields import FIELDS

FIXTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "snapshots-1s.jsonl.gz"
HOST = "bench"
DAY = timedelta(days=1)
# Before tiered storage (bench/README.md, "fleet", 2026-11-27): one host's history a day.
BEFORE_MB_PER_DAY = {1: 415, 5: 83}


async def _wal(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
    return value


@contextlib.asynccontextmanager
async def _database(url: str, tmp: str) -> AsyncIterator[Database]:
    database = Database(load_settings(database_url=url, data_dir=Path(tmp), hostname=HOST))
    await database.start(wait=True)
    try:
        yield database
    finally:
        await database.stop()


async def _write(
    conn: asyncpg.Connection, capture: Capture, count: int, start: datetime, every: int, batch: int
) -> float:
    """Write `count` replayed snapshots in batches of `batch`; seconds spent in PostgreSQL
    and the write path (replaying the capture is not counted)."""
    spent = 0.0
    slice_ = 20_000
    for first in range(0, count, slice_):
        snapshots = capture.replay(min(slice_, count - first), start, HOST, every=every, skip=first)
        t0 = time.perf_counter()
        for i in range(0, len(snapshots), batch):
            await ingest.write_batch(conn, snapshots[i : i + batch])
        spent += time.perf_counter() - t0
    return spent


async def _compact(database: Database, now: datetime) -> tuple[Any, float, float]:
    """One pass compacting everything older than `now` less the hot window: the report,
    wall seconds and this process's CPU seconds (packing runs on a worker thread)."""
    hot = database.settings.storage_hot_seconds
    compactor = Compactor(database, hot_seconds=hot, clock=lambda: now)
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = await compactor.pass_once(wait=True)
    return report, time.perf_counter() - t0, time.process_time() - cpu0


async def _density_at(admin_url: str, capture: Capture, every: int, tmp: str) -> dict[str, Any]:
    interval = every * capture.length / len(capture.snapshots)
    count = round(86_400 / interval)  # a whole day, the capture over and over
    url = await fresh_database(admin_url, f"perfpulse_bench_density_{every}")
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 2 * DAY
    conn = await asyncpg.connect(url)
    try:
        wal0 = await _wal(conn)
        write_seconds = await _write(conn, capture, count, start, every, 10)
        write_wal = await _wal(conn) - wal0
        await conn.execute("VACUUM ANALYZE")
        hot = await stats.hot_tier(conn)
        async with _database(url, tmp) as database:
            wal0 = await _wal(conn)
            report, pass_seconds, pass_cpu = await _compact(database, datetime.now(UTC))
            compact_wal = await _wal(conn) - wal0
        await conn.execute("VACUUM ANALYZE")
        after = await stats.collect(conn, database.settings.storage_hot_seconds)
    finally:
        await conn.close()
    span = count * interval  # seconds of history stored
    per_day = 86_400 / span
    tiers_kept = {name: after[name]["bytes"] * per_day for name in ("chunks", "minutes", "hours")}
    tiers_kept["rollup_1m"] = after["rollup_1m"]["bytes"] * per_day
    # The hot tier holds the hot window, the 10-minute window being written and up to a
    # compactor interval: at most 13 minutes of snapshots by default.
    settings = load_settings()
    held = settings.storage_hot_seconds + 600 + settings.storage_compact_interval_seconds
    hot_per_snapshot = hot["bytes"] / count
    hot_kept = hot_per_snapshot * held / interval
    return {
        "interval_seconds": interval,
        "snapshots": count,
        "hours": span / 3600,
        "numbers_per_snapshot": after["chunks"]["numbers"] / count,
        "hot": {
            "bytes_per_snapshot": hot_per_snapshot,
            "bytes_per_number": hot["bytes_per_number"],
        },
        "tiers": {
            name: {
                "bytes": after[name]["bytes"],
                "rows": after[name]["rows"],
                "bytes_per_number": after[name].get("bytes_per_number"),
            }
            for name in ("chunks", "minutes", "hours", "rollup_1m")
        },
        "write": {
            "seconds": write_seconds,
            "snapshots_per_second": count / write_seconds,
            "wal_bytes_per_snapshot": write_wal / count,
        },
        "compaction": {
            "snapshots": report.snapshots,
            "seconds": pass_seconds,
            "cpu_us_per_snapshot": pass_cpu / count * 1e6,
            "wall_us_per_snapshot": pass_seconds / count * 1e6,
            "wal_bytes_per_snapshot": compact_wal / count,
            "hot_left_rows": after["hot"]["rows"],
        },
        "per_day_bytes": {
            "tiers": sum(tiers_kept.values()) + hot_kept,
            "of_which": {**tiers_kept, "hot": hot_kept},
            # Before tiered storage: every row kept as written, and the minute rollups.
            "as_before": hot_per_snapshot * 86_400 / interval + tiers_kept["rollup_1m"],
        },
    }


async def _density(admin_url: str, capture: Capture, tmp: str) -> dict[str, Any]:
    return {
        "1s": await _density_at(admin_url, capture, 1, tmp),
        "5s": await _density_at(admin_url, capture, 5, tmp),
    }


async def _copy_back(conn: asyncpg.Connection, tier: tiers.Tier, day: datetime, days: int) -> int:
    """Copy `tier`'s rows of [day, day + 1 day) to each of the `days` days before it."""
    span = tiers.span_sql(tier)
    rows = await conn.fetch(
        f"SELECT host, metric_type, start, {span} AS span, rows, numbers, data "
        f"FROM {tier.table} WHERE start >= $1 AND start < $2",
        day,
        day + DAY,
    )
    await partitions.ensure(conn, tier.partitioning, [day - d * DAY for d in range(days + 1)])
    columns = ["host", "metric_type", "start", "rows", "numbers", "data"]
    if tier.sealed is not None:
        columns.append("span")
    copied = 0
    for d in range(1, days + 1):
        shift = d * 86_400_000_000
        records = [
            (
                r["host"],
                r["metric_type"],
                r["start"] - d * DAY,
                r["rows"],
                r["numbers"],
                blocks.shifted(r["data"], -shift),
                r["span"],
            )[: len(columns)]
            for r in rows
        ]
        await conn.copy_records_to_table(tier.table, columns=columns, records=records)
        copied += len(rows)
    return copied


async def _queries(
    admin_url: str, capture: Capture, days: int, runs: int, tmp: str
) -> dict[str, Any]:
    url = await fresh_database(admin_url, "perfpulse_bench_history")
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - DAY
    count = int((now - yesterday).total_seconds())
    settings = load_settings(database_url=url, data_dir=Path(tmp), hostname=HOST)
    conn = await asyncpg.connect(url)
    try:
        write_seconds = await _write(conn, capture, count, yesterday, 1, 1000)
        async with _database(url, tmp) as database:
            report, pass_seconds, pass_cpu = await _compact(database, datetime.now(UTC))
        t0 = time.perf_counter()
        copied = {
            "chunks": await _copy_back(conn, tiers.CHUNK_TIER, yesterday, days - 1),
            "minutes": await _copy_back(conn, tiers.MINUTE_TIER, yesterday, days - 1),
            "hours": await _copy_back(conn, tiers.HOUR_TIER, yesterday, 364),
        }
        # The months before this one sealed, as the compactor leaves them.
        async with _database(url, tmp) as database:
            compactor = Compactor(database, hot_seconds=settings.storage_hot_seconds)
            sealed = await compactor.seal(conn, tiers.HOUR_TIER, back=13)
        copy_seconds = time.perf_counter() - t0
        await conn.execute("VACUUM ANALYZE")
        stored = await stats.collect(conn, settings.storage_hot_seconds)
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    reader = reads.Reader(pool, settings.history_timeout_seconds)
    raw_max = timedelta(hours=settings.history_raw_max_hours)
    ranges = {
        "last hour": timedelta(hours=1),
        "24 hours": DAY,
        f"{days} days": days * DAY,
        "a year": 365 * DAY,
    }
    latencies: dict[str, dict[str, Any]] = {}
    try:
        for label, span in ranges.items():
            end = datetime.now(UTC)
            resolution, bucket = bucket_width(end - span, end, 1000, raw_max)
            per_type = {}
            for metric_type in FIELDS:
                fields = {paths.render(tuple(p)): tuple(p) for _, p in FIELDS[metric_type]}
                samples = []
                for _ in range(runs):
                    q0 = time.perf_counter()
                    series = await reads.series(
                        reader, HOST, metric_type, fields, end - span, end, resolution, bucket
                    )
                    samples.append(time.perf_counter() - q0)
                filled = sum(1 for s in series.samples if s)
                assert filled > 0.8 * len(series.timestamps) > 0, (label, metric_type, filled)
                per_type[metric_type] = {
                    "p50_ms": statistics.median(samples) * 1e3,
                    "p95_ms": percentile(samples, 95) * 1e3,
                    "buckets": len(series.timestamps),
                }
            latencies[label] = {
                "resolution": resolution,
                "bucket_seconds": bucket,
                "types": per_type,
            }
    finally:
        await pool.close()
    return {
        "written_snapshots": count,
        "write_seconds": write_seconds,
        "compaction": {
            "snapshots": report.snapshots,
            "seconds": pass_seconds,
            "cpu_seconds": pass_cpu,
        },
        "copied_rows": copied,
        "sealed_months": sealed,
        "copy_seconds": copy_seconds,
        "stored": {name: stored[name]["bytes"] for name in ("hot", "chunks", "minutes", "hours")},
        "queries": latencies,
    }


async def _drain(
    admin_url: str, capture: Capture, backlog_seconds: int, tmp: str
) -> dict[str, Any]:
    """An hour of 1 s snapshots buffered during an outage, then drained by the writer."""
    url = await fresh_database(admin_url, "perfpulse_bench_drain")
    settings = load_settings(
        database_url=url, data_dir=Path(tmp) / "drain", writer_max_buffered=backlog_seconds + 10
    )
    runtime = Runtime(settings, collectors=[])
    database, writer = runtime.database, runtime.writer
    start = datetime.now(UTC) - timedelta(seconds=backlog_seconds)
    for snapshot in capture.replay(backlog_seconds, start, HOST):
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


async def _run(
    database_url: str | None, capture_path: str | None, days: int, runs: int
) -> dict[str, Any]:
    capture = Capture.load(capture_path or FIXTURE)
    embedded = None
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-") as tmp:
        if database_url is None:
            embedded = EmbeddedPostgres(Path(tmp) / "pg")
            admin_url = url_for(await embedded.start(), "postgres")
        else:
            admin_url = database_url
        try:
            return {
                "machine": machine(),
                "date": datetime.now(UTC).date().isoformat(),
                "server": "embedded" if embedded else "external",
                "capture": {
                    "file": str(capture_path or FIXTURE),
                    "snapshots": len(capture.snapshots),
                    "seconds": capture.length,
                },
                "density": await _density(admin_url, capture, tmp),
                "history": await _queries(admin_url, capture, days, runs, tmp),
                "drain": await _drain(admin_url, capture, 3600, tmp),
            }
        finally:
            if embedded is not None:
                await embedded.stop()


def run(database_url: str | None, capture_path: str | None, days: int, runs: int) -> dict[str, Any]:
    return asyncio.run(_run(database_url, capture_path, days, runs))


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def report(result: dict[str, Any]) -> str:
    c = result["capture"]
    lines = [
        f"Machine: {result['machine']}; {result['date']}; PostgreSQL: {result['server']}; "
        f"capture: {c['snapshots']:,} snapshots over {c['seconds'] / 60:,.0f} min ({c['file']})",
        "",
        "| | at 1 s | at 5 s |",
        "|---|---|---|",
    ]
    d1, d5 = result["density"]["1s"], result["density"]["5s"]

    def row(label: str, get: Any) -> None:
        lines.append(f"| {label} | {get(d1)} | {get(d5)} |")

    row("snapshots written (hours)", lambda d: f"{d['snapshots']:,} ({d['hours']:.2f} h)")
    row("numbers per snapshot", lambda d: f"{d['numbers_per_snapshot']:.0f}")
    row(
        "hot tier, bytes per snapshot (per number)",
        lambda d: f"{d['hot']['bytes_per_snapshot']:,.0f} ({d['hot']['bytes_per_number']:.1f})",
    )
    for name in ("chunks", "minutes", "hours"):
        row(
            f"{name}: bytes per stored number",
            lambda d, n=name: f"{d['tiers'][n]['bytes_per_number']:.3f}",
        )
    row(
        "write: snapshots/s (batches of 10)", lambda d: f"{d['write']['snapshots_per_second']:,.0f}"
    )
    row("write: WAL per snapshot", lambda d: f"{d['write']['wal_bytes_per_snapshot']:,.0f} B")
    row(
        "compaction: CPU per snapshot (perfpulse)",
        lambda d: f"{d['compaction']['cpu_us_per_snapshot']:.0f} µs",
    )
    row(
        "compaction: wall per snapshot",
        lambda d: f"{d['compaction']['wall_us_per_snapshot']:.0f} µs",
    )
    row(
        "compaction: WAL per snapshot",
        lambda d: f"{d['compaction']['wal_bytes_per_snapshot']:,.0f} B",
    )
    for name in ("chunks", "minutes", "hours", "rollup_1m", "hot"):
        row(f"a day: {name}", lambda d, n=name: _mb(d["per_day_bytes"]["of_which"][n]))
    row("**a day, all tiers**", lambda d: f"**{_mb(d['per_day_bytes']['tiers'])}**")
    row(
        "a day stored as before tiered storage (rows as written + rollups; same run)",
        lambda d: _mb(d["per_day_bytes"]["as_before"]),
    )
    lines.append(
        f"| a day before tiered storage (bench/README.md, fleet) | "
        f"{BEFORE_MB_PER_DAY[1]} MB | {BEFORE_MB_PER_DAY[5]} MB |"
    )
    h = result["history"]
    lines += [
        "",
        f"History: {h['written_snapshots']:,} snapshots written in {h['write_seconds']:.1f} s "
        f"(batches of 1,000) and compacted in {h['compaction']['seconds']:.1f} s "
        f"({h['compaction']['cpu_seconds']:.1f} s CPU); copied back to "
        + ", ".join(f"{n:,} {t} rows" for t, n in h["copied_rows"].items())
        + f" in {h['copy_seconds']:.0f} s; stored: "
        + ", ".join(f"{t} {_mb(b)}" for t, b in h["stored"].items()),
        "",
        "| read, 1,000 points | tier | cpu p50 / p95 | worst section's p95 |",
        "|---|---|---|---|",
    ]
    for label, q in h["queries"].items():
        cpu = q["types"]["cpu"]
        worst = max(q["types"].items(), key=lambda item: item[1]["p95_ms"])
        lines.append(
            f"| {label} | {q['resolution']} ({q['bucket_seconds']:g} s buckets) | "
            f"{cpu['p50_ms']:.1f} / {cpu['p95_ms']:.1f} ms | {worst[1]['p95_ms']:.1f} ms "
            f"({worst[0]}) |"
        )
    d = result["drain"]
    lines += [
        "",
        f"Drain: {d['backlog_seconds_of_data']} s of 1 s snapshots written in "
        f"{d['drain_seconds']:.1f} s = {d['times_real_time']:.0f}x real time.",
    ]
    return "\n".join(lines)
