"""Tiered history on a real PostgreSQL: real snapshots of this machine (taken at 1 s,
tests/fixtures/snapshots-1s.jsonl.gz) replayed at shifted times, compacted by the real
compactor, read back through the real history API."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from bench.capture import Capture
from exporter.api.app import create_app
from exporter.storage import blocks, ingest, partitions
from exporter.storage import history as reads
from exporter.storage.chunks import micros
from exporter.storage.compactor import PACKER_NICE, Compactor
from exporter.storage.database import Database
from exporter.storage.documents import Template, shape
from exporter.storage.fields import FIELDS
from exporter.storage.ingest import StoredSnapshot
from tests.conftest import token_for
from tests.db import fetchval
from tests.servers import serve, serve_in_thread
from tests.test_ws import add_user

FIXTURE = Path(__file__).parent / "fixtures" / "snapshots-1s.jsonl.gz"
HOST = "replayed"
# Values that are neither integers nor decimals of at most 6 places keep 6 significant
# digits of the largest value of their column in their block (exporter/storage/blocks.py).
LOSSY = 5e-6


@functools.cache
def captured() -> Capture:
    return Capture.load(FIXTURE)


def replay(count: int, start: datetime, host: str = HOST) -> list[StoredSnapshot]:
    """`count` of the captured snapshots from `start`, as taken (bench/capture.py)."""
    return captured().replay(count, start, host)


@functools.cache
def _field_kinds() -> dict[str, dict[str, bool]]:
    """Every field of every section in the fixture -> whether it is always an integer."""
    kinds: dict[str, dict[str, bool]] = {}
    for _, rows in captured().snapshots:
        for metric_type, text in rows:
            template = Template.of(shape(orjson.loads(text))[0])
            known = kinds.setdefault(metric_type, {})
            for key, integer in zip(template.keys, template.integer, strict=True):
                known[key] = known.get(key, True) and integer
    return kinds


async def _write(url: str, snapshots: list[StoredSnapshot]) -> None:
    conn = await asyncpg.connect(url)
    try:
        for i in range(0, len(snapshots), 1000):
            await ingest.write_batch(conn, snapshots[i : i + 1000])
    finally:
        await conn.close()


def write(url: str, snapshots: list[StoredSnapshot]) -> None:
    asyncio.run(_write(url, snapshots))


async def _query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_query(url, sql, *args))


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "storage", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _start(days_ago: int) -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days_ago)


def _close(before: float | None, after: float | None, scale: float, exact: bool) -> bool:
    if before is None or after is None:
        return before is after
    if exact:
        return before == after
    return abs(before - after) <= LOSSY * scale + 1e-9


def _compare(before: dict[str, Any], after: dict[str, Any], exact_fields: set[str]) -> list[str]:
    """Where two history responses differ beyond the stored precision."""
    wrong = []
    for key in ("timestamps", "samples", "fields", "resolution", "bucket_seconds"):
        if before[key] != after[key]:
            wrong.append(f"{key}: {before[key]!r} != {after[key]!r}")
    for name in before["fields"]:
        values = [
            v for a in ("avg", "min", "max", "last") for v in before[a][name] if v is not None
        ]
        scale = max((abs(v) for v in values), default=0.0)
        for a in ("avg", "min", "max", "last"):
            # An average of integers is not an integer: exact only where no division is.
            exact = name in exact_fields and (a != "avg" or before["resolution"] == "raw")
            for i, (b, c) in enumerate(zip(before[a][name], after[a][name], strict=True)):
                if not _close(b, c, scale, exact):
                    wrong.append(f"{name} {a}[{i}] ({before['timestamps'][i]}): {b} != {c}")
    return wrong


@pytest.fixture
def api(make_settings, clean_database_url) -> Iterator[httpx.Client]:
    """The real app on the test database, its own compactor off (the tests compact); the
    replayed host registered in the fleet, as its agent's relay would have."""
    asyncio.run(add_user(clean_database_url))
    asyncio.run(
        fetchval(
            clean_database_url,
            "INSERT INTO hosts (host, interval_seconds, version) VALUES ($1, 1, 'test')",
            HOST,
        )
    )
    settings = make_settings(hostname="api-host", storage_compact=False, collect=False)
    headers = {"Authorization": f"Bearer {token_for('alice')}"}
    with (
        serve_in_thread(create_app(settings), settings) as url,
        httpx.Client(base_url=url, headers=headers, timeout=120) as client,
    ):
        yield client


def _history(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/api/metrics/history", params={"host": HOST, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_day_of_real_snapshots_reads_back_the_same_after_compaction(
    api, server_env, clean_database_url
):
    start = _start(days_ago=3)
    day = replay(86_400, start)
    write(clean_database_url, day)
    iso = lambda t: t.isoformat()  # noqa: E731
    queries: list[dict[str, Any]] = []
    exact_fields: set[str] = set()
    for metric_type, kinds in _field_kinds().items():
        if metric_type in ("processes", "cgroups"):
            continue
        exact_fields |= {k for k, integer in kinds.items() if integer}
        names = sorted(kinds)
        for i in range(0, len(names), 64):
            group = names[i : i + 64]
            # Every field: every snapshot of 20 minutes (three chunks), and 6 hours of
            # minutes.
            queries.append(
                {
                    "metric_type": metric_type,
                    "field": group,
                    "start": iso(start + timedelta(hours=7, minutes=55)),
                    "end": iso(start + timedelta(hours=8, minutes=15)),
                    "points": 1200,
                }
            )
            queries.append(
                {
                    "metric_type": metric_type,
                    "field": group,
                    "start": iso(start + timedelta(hours=12)),
                    "end": iso(start + timedelta(hours=18)),
                    "points": 360,
                }
            )
        # The plotted fields: the whole day by the hour, and in 15-minute buckets.
        for points in (24, 96):
            queries.append(
                {
                    "metric_type": metric_type,
                    "start": iso(start),
                    "end": iso(start + timedelta(days=1)),
                    "points": points,
                }
            )
    accounts = [
        {
            "metric_type": t,
            "start": iso(start + timedelta(hours=h)),
            "end": iso(start + timedelta(hours=h + 2)),
            "points": p,
        }
        for t in ("processes", "cgroups")
        for h, p in ((1, 120), (20, 8))
    ]
    before = [_history(api, **q) for q in queries]
    before_accounts = [_history(api, **q) for q in accounts]
    assert {b["resolution"] for b in before} == {"raw", "1m", "1h"}

    report = cli(server_env, "compact")
    assert report["locked"] is True
    stored_rows = sum(len(s.rows) for s in day)
    assert report["snapshots"] == stored_rows
    assert report["waiting"] == 0
    assert query(clean_database_url, "SELECT count(*) FROM metrics_snapshots")[0][0] == 0

    after = [_history(api, **q) for q in queries]
    for q, b, a in zip(queries, before, after, strict=True):
        wrong = _compare(b, a, exact_fields)
        assert not wrong, f"{q['metric_type']} {q['start']} {q['points']}: {wrong[:5]}"
    # Who was busy: the minute accounts come back as they were, exactly.
    assert [_history(api, **q) for q in accounts] == before_accounts
    assert sum(len(b["buckets"]) for b in before_accounts) > 0

    stats = cli(server_env, "stats")
    assert stats["hot"]["rows"] == 0
    assert stats["chunks"]["spans"] == stored_rows
    assert stats["chunks"]["bytes_per_number"] <= 2.0, stats["chunks"]
    assert stats["compactor_lag_seconds"] == 0.0


def _chunk_timestamps(url: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for row in query(url, "SELECT metric_type, data FROM metrics_chunks ORDER BY start"):
        found.setdefault(row["metric_type"], []).extend(
            blocks.decode(row["data"], []).timestamps.tolist()
        )
    return found


def _expected_timestamps(snapshots: list[StoredSnapshot]) -> dict[str, list[int]]:
    expected: dict[str, list[int]] = {}
    for s in snapshots:
        for metric_type, _ in s.rows:
            expected.setdefault(metric_type, []).append(micros(s.timestamp))
    return expected


def test_compaction_killed_mid_chunk_and_run_again_loses_nothing_and_repeats_nothing(
    server_env, clean_database_url
):
    hour = replay(3600, _start(days_ago=2) + timedelta(hours=5))
    write(clean_database_url, hour)
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "storage", "compact"],
        env={**os.environ, **server_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def kill_inside_a_transaction() -> int:
        conn = await asyncpg.connect(clean_database_url)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                # A unit's transaction is open while its chunk is being packed.
                busy = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                    "'%compactor' AND state = 'idle in transaction'"
                )
                chunks = await conn.fetchval("SELECT count(*) FROM metrics_chunks")
                if busy and chunks >= 5:
                    process.send_signal(signal.SIGKILL)
                    return int(chunks)
            raise AssertionError("the compactor never held a transaction open")
        finally:
            await conn.close()

    written = asyncio.run(kill_inside_a_transaction())
    assert process.wait(timeout=30) == -signal.SIGKILL
    hot_left = query(clean_database_url, "SELECT count(*) FROM metrics_snapshots")[0][0]
    assert hot_left > 0  # stopped part-way: some of the hour still hot
    assert written < 6 * len(_field_kinds())

    report = cli(server_env, "compact")
    assert report["locked"] is True
    assert query(clean_database_url, "SELECT count(*) FROM metrics_snapshots")[0][0] == 0
    expected = _expected_timestamps(hour)
    stored = _chunk_timestamps(clean_database_url)
    assert {t: len(v) for t, v in stored.items()} == {t: len(v) for t, v in expected.items()}
    assert stored == expected  # every snapshot once, in order: no gap, no duplicate


def test_a_late_batch_older_than_the_hot_window_is_compacted_exactly_once(
    server_env, clean_database_url
):
    start = _start(days_ago=1) + timedelta(hours=3)
    first = replay(600, start)  # one 10-minute window
    write(clean_database_url, first)
    assert cli(server_env, "compact")["dropped"]
    # Hours later, a spool replayed: snapshots of the same window, half already stored.
    late = [
        StoredSnapshot(s.timestamp + timedelta(milliseconds=500), s.host, s.rows)
        for s in replay(300, start)
    ]
    write(clean_database_url, first[:300] + late)
    report = cli(server_env, "compact")
    assert report["snapshots"] == sum(len(s.rows) for s in first[:300] + late)
    assert query(clean_database_url, "SELECT count(*) FROM metrics_snapshots")[0][0] == 0
    stored = _chunk_timestamps(clean_database_url)
    expected = _expected_timestamps(sorted(first + late, key=lambda s: s.timestamp))
    assert stored == expected
    rows = query(clean_database_url, "SELECT count(*) FROM metrics_chunks")[0][0]
    assert rows == len(expected)  # one chunk per section for the window


async def _series_now(url: str, resolution: str, start: datetime, end: datetime) -> Any:
    conn = await asyncpg.connect(url)
    try:
        fields = {
            "usage_percent": ("usage_percent",),
            "times_seconds.user": ("times_seconds", "user"),
        }
        bucket = 60.0 if resolution == "1m" else 3600.0
        return await reads.series(conn, HOST, "cpu", fields, start, end, resolution, bucket)
    finally:
        await conn.close()


def test_days_and_months_that_are_over_are_sealed_into_one_row_and_read_the_same(
    server_env, clean_database_url
):
    """The minutes of a day that is over become one row, the hours of a month that is
    over one row; reads give what the hot rows gave; a late snapshot of a sealed month
    goes into its row."""
    today = _start(days_ago=0)
    month = today.replace(day=1)
    previous_month = (month - timedelta(days=1)).replace(day=1)
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    days += [previous_month + timedelta(days=3), previous_month + timedelta(days=10)]
    snapshots = []
    for day in days:  # two hours of each day: two rows of minutes per day before sealing
        for hour in (10, 14):
            snapshots += replay(300, day + timedelta(hours=hour))
    write(clean_database_url, snapshots)
    span = (days[2], today)
    before = {r: asyncio.run(_series_now(clean_database_url, r, *span)) for r in ("1m", "1h")}

    report = cli(server_env, "compact")
    assert report["sealed"] == 3 * len(FIELDS)  # each aggregated section's 2 days, 1 month
    minutes = query(
        clean_database_url,
        "SELECT start, span, rows FROM metrics_minutes WHERE metric_type = 'cpu' ORDER BY start",
    )
    by_day = {r["start"]: r for r in minutes}
    for day in days[:2]:
        written = {
            s.timestamp.replace(second=0, microsecond=0)
            for s in snapshots
            if day <= s.timestamp < day + timedelta(days=1)
        }
        assert by_day[day]["span"] == timedelta(days=1)
        assert by_day[day]["rows"] == len(written)
    hours = query(
        clean_database_url,
        "SELECT start, span, rows FROM metrics_hours WHERE metric_type = 'cpu' "
        "AND start >= $1 AND start < $2",
        previous_month,
        month,
    )
    in_month = {
        s.timestamp.replace(minute=0, second=0, microsecond=0)
        for s in snapshots
        if previous_month <= s.timestamp < month
    }
    assert [(r["start"], r["rows"]) for r in hours] == [(previous_month, len(in_month))]
    assert hours[0]["span"] == month - previous_month
    after = {r: asyncio.run(_series_now(clean_database_url, r, *span)) for r in ("1m", "1h")}
    for resolution in ("1m", "1h"):
        a, b = before[resolution], after[resolution]
        assert a.timestamps == b.timestamps and a.samples == b.samples
        for key in a.avg:
            for x, y in zip(a.avg[key] + a.max[key], b.avg[key] + b.max[key], strict=True):
                assert _close(x, y, 100.0, False), (resolution, key, x, y)

    late = replay(60, days[2] + timedelta(hours=16))
    write(clean_database_url, late)
    assert cli(server_env, "compact")["snapshots"] == sum(len(s.rows) for s in late)
    hours = query(
        clean_database_url,
        "SELECT start, rows FROM metrics_hours WHERE metric_type = 'cpu' "
        "AND start >= $1 AND start < $2",
        previous_month,
        month,
    )
    assert [(r["start"], r["rows"]) for r in hours] == [(previous_month, len(in_month) + 1)]
    series = asyncio.run(
        _series_now(
            clean_database_url, "1h", days[2] + timedelta(hours=16), days[2] + timedelta(hours=17)
        )
    )
    assert series.samples == [60]


async def _legacy_partition(url: str, day: datetime) -> None:
    conn = await asyncpg.connect(url)
    try:
        await partitions.ensure(conn, partitions.LEGACY_HOT, [day])
    finally:
        await conn.close()


def test_history_from_before_tiered_storage_is_compacted_and_its_daily_partition_goes(
    server_env, clean_database_url
):
    """A daily hot partition as databases migrated from before 0006 hold: its snapshots
    end up in chunks, once each, and the partition is dropped."""
    day = _start(days_ago=3)
    asyncio.run(_legacy_partition(clean_database_url, day))
    old = replay(1200, day + timedelta(hours=7, minutes=5))
    write(clean_database_url, old)  # into the daily partition: no 10-minute one is made
    legacy = partitions.LEGACY_HOT.name(day)
    held = query(clean_database_url, f"SELECT count(*) FROM {legacy}")[0][0]
    assert held == sum(len(s.rows) for s in old)

    report = cli(server_env, "compact")
    assert legacy in report["dropped"]
    assert query(clean_database_url, "SELECT count(*) FROM metrics_snapshots")[0][0] == 0
    assert _chunk_timestamps(clean_database_url) == _expected_timestamps(old)


def test_two_instances_on_one_database_compact_once(make_settings, clean_database_url):
    write(clean_database_url, replay(1200, _start(days_ago=1)))
    windows = query(
        clean_database_url,
        "SELECT count(*) FROM (SELECT DISTINCT metric_type, "
        "date_bin('10 minutes', \"timestamp\", '2000-01-01') FROM metrics_snapshots) AS u",
    )[0][0]

    async def both() -> list[Any]:
        databases = [Database(make_settings(hostname=f"i{n}")) for n in range(2)]
        for database in databases:
            await database.start(wait=True)
        try:
            compactors = [Compactor(db, hot_seconds=600) for db in databases]
            return list(await asyncio.gather(*(c.pass_once() for c in compactors)))
        finally:
            for database in databases:
                await database.stop()

    reports = asyncio.run(both())
    assert sorted(r.locked for r in reports) == [False, True]
    assert sum(r.units for r in reports) == windows
    assert query(clean_database_url, "SELECT count(*) FROM metrics_chunks")[0][0] == windows


def test_packing_in_a_child_process_stores_the_same_and_outlives_the_child(
    make_settings, clean_database_url
):
    """On a shared database the compactor packs in a child process, below the instance's
    own CPU priority. Killed (the fault a real child cannot be asked for: SIGKILL, as the
    kernel's OOM killer would), the pass
    that needed it fails and rolls back; the next pass starts another and stores every
    snapshot once, the same as packing on a thread does."""
    window = replay(600, _start(days_ago=1) + timedelta(hours=2))
    write(clean_database_url, window)

    async def passes() -> tuple[Any, Any, int]:
        database = Database(make_settings())
        await database.start(wait=True)
        compactor = Compactor(database, hot_seconds=600, in_process=True)
        try:
            assert await compactor._work(sum, [1, 2]) == 3  # the child is up
            assert compactor._packer is not None
            child = next(iter(compactor._packer._processes.values()))
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(
                19, os.getpriority(os.PRIO_PROCESS, 0) + PACKER_NICE
            )
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
            with pytest.raises(OSError, match="packing process died"):
                await compactor.pass_once()
            chunks_after_failure = await database.pool.fetchval(
                "SELECT count(*) FROM metrics_chunks"
            )
            return await compactor.pass_once(), compactor._packer, chunks_after_failure
        finally:
            compactor.close()
            await database.stop()

    report, packer, chunks_after_failure = asyncio.run(passes())
    assert chunks_after_failure == 0  # the failed unit rolled back
    assert packer is not None  # a new child
    assert report.locked and report.dropped
    assert query(clean_database_url, "SELECT count(*) FROM metrics_snapshots")[0][0] == 0
    assert _chunk_timestamps(clean_database_url) == _expected_timestamps(window)


@pytest.mark.e2e
def test_a_running_server_compacts_on_its_own_and_says_so(tmp_path, server_env, clean_database_url):
    old = replay(600, _start(days_ago=1) + timedelta(hours=1))
    write(clean_database_url, old)
    env = {
        **server_env,
        "PERFPULSE_STORAGE_HOT_SECONDS": "60",
        "PERFPULSE_STORAGE_COMPACT_INTERVAL_SECONDS": "1",
    }
    with serve(tmp_path, env=env) as server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = httpx.get(server.url + "/metrics").text
            if "perfpulse_storage_compacted_snapshots_total " in metrics and (
                f"perfpulse_storage_compacted_snapshots_total {float(sum(len(s.rows) for s in old))}"
                in metrics
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(metrics)
        assert "perfpulse_storage_compactor_holder 1.0" in metrics
        assert "perfpulse_storage_compaction_lag_seconds" in metrics
    counted = query(
        clean_database_url,
        "SELECT coalesce(sum(rows), 0) FROM metrics_chunks WHERE host = $1",
        HOST,
    )[0][0]
    assert counted == sum(len(s.rows) for s in old)
    plotted = {t for t in FIELDS}
    assert plotted <= {
        r[0]
        for r in query(clean_database_url, "SELECT DISTINCT metric_type FROM metrics_rollup_1m")
    }
