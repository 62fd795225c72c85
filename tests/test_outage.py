"""A real PostgreSQL stopped and restarted under a running perfpulse (fault test).

The server is perfpulse's embedded PostgreSQL binaries in a directory of this test's own,
whatever PERFPULSE_TEST_DATABASE_URL says: stopping a shared server is not an option.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import warnings
from datetime import datetime, timedelta

import asyncpg
import httpx
import pytest
import websockets

from exporter.api.app import create_app
from exporter.auth.tokens import issue_token
from exporter.config import load_settings
from exporter.sinks.writer import PER_MINUTE
from exporter.storage.embedded import url_for
from exporter.storage.fields import METRIC_TYPES
from tests.conftest import TEST_SECRET
from tests.servers import serve_in_thread
from tests.test_ws import add_user

OUTAGE_SECONDS = 6.0

pytestmark = pytest.mark.e2e


def _pgserver(pgdata):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server
    return get_server(pgdata, cleanup_mode="stop")


def _writer_buffered(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("perfpulse_writer_buffered_snapshots "):
            return float(line.split()[1])
    raise AssertionError("no writer metric")


async def test_database_outage_never_pauses_the_stream_and_loses_nothing(tmp_path):
    pgdata = tmp_path / "pgdata"
    server = _pgserver(pgdata)
    admin_url = server.get_uri()
    conn = await asyncpg.connect(admin_url)
    await conn.execute("CREATE DATABASE outage")
    await conn.close()
    url = url_for(admin_url, "outage")
    settings = load_settings(
        database_url=url,
        data_dir=tmp_path / "data",
        jwt_secret=TEST_SECRET,
        sampling_interval_seconds=0.2,
        batch_size=5,
        batch_max_age_seconds=0.5,
    )
    with serve_in_thread(create_app(settings), settings) as http:
        await add_user(url)
        token = issue_token(TEST_SECRET.encode(), "alice", timedelta(minutes=10)).token
        received: list[tuple[int, str, float]] = []
        stop = asyncio.Event()

        async def follow() -> None:
            ws_url = http.replace("http", "ws") + f"/api/ws/metrics?token={token}"
            async with websockets.connect(ws_url) as ws:
                while not stop.is_set():
                    snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    received.append((snapshot["seq"], snapshot["timestamp"], time.monotonic()))

        reader = asyncio.create_task(follow())
        await asyncio.sleep(2)
        await asyncio.to_thread(server.cleanup)  # PostgreSQL stops
        outage_started = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        during = await asyncio.to_thread(_writer_buffered, http)
        server = await asyncio.to_thread(_pgserver, pgdata)  # and comes back
        outage = time.monotonic() - outage_started
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(_writer_buffered, http) > 0:
            assert time.monotonic() < deadline, "backlog never drained"
            await asyncio.sleep(0.2)
        stop.set()
        await reader

    try:
        conn = await asyncpg.connect(url)
        rows = await conn.fetch(
            'SELECT "timestamp", count(*) AS n FROM metrics_snapshots '
            "WHERE metric_type = 'cpu' GROUP BY 1"
        )
        types_per_snapshot = await conn.fetch(
            'SELECT array_agg(metric_type) AS types FROM metrics_snapshots GROUP BY "timestamp"'
        )
        await conn.close()
    finally:
        server.cleanup()

    assert outage >= OUTAGE_SECONDS
    assert during >= OUTAGE_SECONDS / 0.2 * 0.8  # the writer held the outage's snapshots
    # The stream never paused: consecutive seqs, no gap much longer than an interval.
    seqs = [seq for seq, _, _ in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    arrivals = [t for _, _, t in received]
    # (a pause would be the outage: 6 s; a 0.2 s interval leaves room for a busy machine)
    assert max(b - a for a, b in itertools.pairwise(arrivals)) < OUTAGE_SECONDS / 3
    # Every snapshot streamed during the test is stored, exactly once per collector.
    stored = {row["timestamp"] for row in rows}
    streamed = {datetime.fromisoformat(ts) for _, ts, _ in received}
    assert streamed <= stored
    assert all(row["n"] == 1 for row in rows)
    # Each snapshot holds every per-tick section; processes and cgroups come once a minute,
    # on the snapshot that closes the minute.
    for row in types_per_snapshot:
        assert sorted(set(row["types"]) - set(PER_MINUTE)) == sorted(METRIC_TYPES)
        assert len(row["types"]) == len(set(row["types"]))
