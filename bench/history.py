"""History: one host's 24 h series, as the dashboard asks for it, piece by piece.

Two hosts with the same stored history in one database: 24 hours of the cpu section's
minute aggregates (24 hourly rows, as the hours of a day are until it is over and sealed:
the most blocks such a read decodes) and HOT hot rows of this machine's real cpu section
at 1 s (up to 13 minutes of them are hot at 1 s: 700 is most of that). One host's hot rows
have their plotted numbers (as written since migration 0011); the other's have none (as
written before it), so its series parses the JSON. Both are read in turns, `--query-runs` times,
through the history API's reader and bucket rule (500 points over 24 h: 1m, 180 s
buckets), on an otherwise idle machine.

    python -m bench history --query-runs 200 [--history-hot 700]

Needs the machine's PostgreSQL (PERFPULSE_BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres): a database of its own is created there
and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.common import machine, percentile, scratch_database
from bench.fleet import ADMIN_URL, _prefill_history, _template
from exporter.api.history import bucket_width
from exporter.sinks.writer import to_stored
from exporter.storage import blocks, ingest, paths, tiers
from exporter.storage import history as reads
from exporter.storage.fields import FIELDS
from exporter.storage.ingest import StoredSnapshot

NAME = "perfpulse_bench_history_read"
PLOTTED, JSON_ONLY = "sim-00001", "sim-00002"


async def _setup(url: str, hot: int, now: datetime) -> None:
    await _prefill_history(url, 2, now - timedelta(seconds=hot))
    rows = to_stored(await _template()).rows
    conn = await asyncpg.connect(url)
    try:
        for host in (PLOTTED, JSON_ONLY):
            snapshots = [
                StoredSnapshot(now - timedelta(seconds=hot - i), host, rows) for i in range(hot)
            ]
            for start in range(0, hot, 100):
                await ingest.write_batch(conn, snapshots[start : start + 100])
        await conn.execute("UPDATE metrics_snapshots SET plotted = NULL WHERE host = $1", JSON_ONLY)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def _measure(url: str, hot: int, runs: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    await _setup(url, hot, now)
    fields = {paths.render(tuple(p)): tuple(p) for _, p in FIELDS["cpu"]}
    start, end = now - timedelta(hours=24), now + timedelta(seconds=1)
    resolution, bucket = bucket_width(start, end, 500)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    reader = reads.Reader(pool, 10.0)
    series: dict[str, list[float]] = {PLOTTED: [], JSON_ONLY: []}
    answers: dict[str, reads.Series] = {}
    hot_only: dict[str, list[float]] = {PLOTTED: [], JSON_ONLY: []}
    try:
        async with pool.acquire() as conn:
            blobs = await tiers.blobs(conn, tiers.MINUTE_TIER, PLOTTED, "cpu", start, end)
        for _ in range(runs):
            for host in (PLOTTED, JSON_ONLY):  # in turns: the machine's moods hit both
                began = time.perf_counter()
                answer = await reads.series(
                    reader, host, "cpu", fields, start, end, resolution, bucket
                )
                series[host].append(time.perf_counter() - began)
                answers[host] = answer
                async with pool.acquire() as conn:
                    began = time.perf_counter()
                    block = await reads.hot_picked(conn, host, "cpu", start, end, fields)
                    hot_only[host].append(time.perf_counter() - began)
                assert block.rows == hot
        # The same numbers whichever way the hot rows were read; 23 hours and more stored.
        assert answers[PLOTTED] == answers[JSON_ONLY]
        assert sum(answers[PLOTTED].samples) > 23 * 3600 + hot, sum(answers[PLOTTED].samples)
    finally:
        await pool.close()
    keys = reads._aggregate_keys(list(fields))
    decode: dict[str, list[float]] = {"together": [], "one_by_one": []}
    for _ in range(runs):  # in turns
        began = time.perf_counter()
        blocks.decode_many(blobs, keys)
        decode["together"].append(time.perf_counter() - began)
        began = time.perf_counter()
        [blocks.decode(blob, keys) for blob in blobs]
        decode["one_by_one"].append(time.perf_counter() - began)

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(statistics.median(values) * 1000, 2),
            "p95": round(percentile(values, 95) * 1000, 2),
        }

    return {
        "hot_rows": hot,
        "runs": runs,
        "resolution": resolution,
        "bucket_seconds": bucket,
        "minute_blocks": len(blobs),
        "series_ms": {"plotted": ms(series[PLOTTED]), "json": ms(series[JSON_ONLY])},
        "hot_rows_ms": {"plotted": ms(hot_only[PLOTTED]), "json": ms(hot_only[JSON_ONLY])},
        "decode_minutes_ms": {name: ms(values) for name, values in decode.items()},
        "series_ratio_json_to_plotted": round(
            statistics.median(series[JSON_ONLY]) / statistics.median(series[PLOTTED]), 2
        ),
    }


async def _run(hot: int, runs: int) -> dict[str, Any]:
    async with scratch_database(ADMIN_URL, NAME) as url:
        return await _measure(url, hot, runs)


def run(hot: int, runs: int) -> dict[str, Any]:
    return {"machine": machine(), **asyncio.run(_run(hot, runs))}


def report(result: dict[str, Any]) -> str:
    s, h, d = result["series_ms"], result["hot_rows_ms"], result["decode_minutes_ms"]
    return "\n".join(
        [
            f"Machine: {result['machine']}",
            "",
            f"One host's 24 h cpu series ({result['resolution']}, "
            f"{result['bucket_seconds']:g} s buckets) over {result['minute_blocks']} blocks of "
            f"minutes and {result['hot_rows']} hot rows, {result['runs']} runs each, in turns:",
            "",
            "| hot rows read from | series p50 / p95 ms | the hot rows alone p50 / p95 ms |",
            "|---|---|---|",
            f"| their plotted numbers (0011) | {s['plotted']['p50']} / {s['plotted']['p95']} | "
            f"{h['plotted']['p50']} / {h['plotted']['p95']} |",
            f"| their JSON (before 0011) | {s['json']['p50']} / {s['json']['p95']} | "
            f"{h['json']['p50']} / {h['json']['p95']} |",
            "",
            f"Series, JSON / plotted (medians): {result['series_ratio_json_to_plotted']}x. "
            f"Decoding the {result['minute_blocks']} blocks of minutes p50 / p95: together "
            f"(`decode_many`) {d['together']['p50']} / {d['together']['p95']} ms, one by one "
            f"{d['one_by_one']['p50']} / {d['one_by_one']['p95']} ms.",
        ]
    )
