"""The relay: what an agent sends each tick, and what a listening instance makes of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from exporter.collectors.base import CollectorResult
from exporter.fleet.hosts import list_hosts
from exporter.fleet.listener import (
    MAX_CHANNELS,
    WATCH,
    FleetClient,
    FleetListener,
    TooManyChannels,
    _parse_notice,
)
from exporter.sampler import Snapshot
from exporter.sinks.relay import PUBLISH, RelayPublisher, publish_args, publish_sql
from exporter.sinks.summary import summarize
from exporter.storage.database import Database
from exporter.storage.literals import literal
from tests.conftest import FakeClock


class Figures:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> Mapping[str, Any]:
        return self.data

    def metrics(self) -> Iterable[Any]:
        return []


def snapshot(host: str = "web-1", seq: int = 7, cpu: float = 25.0) -> Snapshot:
    sections = {
        "cpu": {"usage_percent": cpu},
        "memory": {"percent": 50.0},
        "network": {"total": {"receive_bytes_per_second": 10.0, "transmit_bytes_per_second": 20}},
        "disk": {"total": {"read_bytes_per_second": 1.5}},  # written_bytes missing
    }
    results = {
        name: CollectorResult(name, Figures(data), None, 0.001) for name, data in sections.items()
    }
    results["perf_events"] = CollectorResult("perf_events", None, "not supported", 0.0)
    return Snapshot(seq, datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC), host, results)


HOSTILE = [
    "it's",
    "back\\slash",
    "\\'; DROP TABLE hosts; --",
    "E'quoted'",
    "$$dollar$$",
    "ünïcødé ☃",
    "line\nbreak\ttab",
    "\\x41\\101",
]


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_literals_read_back_exactly_whatever_the_server_setting(database_url, conforming):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"SET standard_conforming_strings = {conforming}")
        for text in HOSTILE:
            assert await conn.fetchval(f"SELECT {literal(text)}") == text
        assert await conn.fetchval("SELECT count(*) FROM hosts") is not None  # still there
    finally:
        await conn.close()
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


async def test_a_publish_commits_without_waiting_for_wal_and_only_itself(clean_database_url):
    """The publish's transaction commits asynchronously (its `hosts` refresh must not
    wait for a WAL flush behind write batches), and the setting ends with it."""
    conn = await asyncpg.connect(clean_database_url)
    try:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        async with conn.transaction():
            await conn.execute(publish_sql(publish_args(snapshot("async"), 1.0)))
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        # Registered (the refresh that used to wait for the flush) and live.
        assert await conn.fetchval("SELECT count(*) FROM hosts WHERE host = 'async'") == 1
        assert await conn.fetchval("SELECT seq FROM live_snapshots WHERE host = 'async'") == 7
    finally:
        await conn.close()


async def test_the_simple_query_and_the_prepared_statement_store_the_same(clean_database_url):
    conn = await asyncpg.connect(clean_database_url)
    try:
        await conn.execute(WATCH, ["prepared", HOSTILE[2]], 30.0)
        await conn.execute(PUBLISH, *publish_args(snapshot("prepared"), 1.0))
        hostile = snapshot(HOSTILE[2])
        await conn.execute(publish_sql(publish_args(hostile, 1.0)))
        rows = await conn.fetch(
            'SELECT host, seq, "timestamp", summary::text, snapshot FROM live_snapshots '
            "ORDER BY host"
        )
        hosts = await list_hosts(conn)
    finally:
        await conn.close()
    assert [row["host"] for row in rows] == sorted(["prepared", HOSTILE[2]])
    for row in rows:
        assert row["seq"] == 7
        assert row["timestamp"] == datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
        assert orjson.loads(row["summary"]) == {
            "cpu_busy_ratio": 0.25,
            "memory_used_ratio": 0.5,
            "network_receive_bytes_per_second": 10.0,
            "network_transmit_bytes_per_second": 20.0,
            "disk_read_bytes_per_second": 1.5,
            "disk_write_bytes_per_second": None,
            "top_process": None,
            "top_process_cpu_percent": None,
            "top_group": None,
            "top_group_cpu_percent": None,
        }
        assert orjson.loads(row["snapshot"])["host"] == row["host"]
    by_name = {info.host: info for info, _, _ in hosts}
    assert by_name["prepared"].collectors == ["cpu", "disk", "memory", "network"]
    assert by_name[HOSTILE[2]].interval_seconds == 1.0
    assert not by_name["prepared"].stale


async def test_only_watched_hosts_store_their_snapshot(clean_database_url):
    conn = await asyncpg.connect(clean_database_url)
    stored = "SELECT snapshot IS NOT NULL FROM live_snapshots WHERE host = $1"
    try:
        await conn.execute(PUBLISH, *publish_args(snapshot("quiet", seq=1), 1.0))
        assert await conn.fetchval(stored, "quiet") is False
        await conn.execute(WATCH, ["quiet"], 30.0)
        await conn.execute(PUBLISH, *publish_args(snapshot("quiet", seq=2), 1.0))
        assert await conn.fetchval(stored, "quiet") is True
        await conn.execute("UPDATE watched_hosts SET until = now() - interval '1 second'")
        await conn.execute(PUBLISH, *publish_args(snapshot("quiet", seq=3), 1.0))
        assert await conn.fetchval(stored, "quiet") is False
        # The summary and seq are kept either way.
        assert await conn.fetchval("SELECT seq FROM live_snapshots WHERE host = 'quiet'") == 3
    finally:
        await conn.close()


async def _seqs(client: FleetClient) -> list[tuple[str, int]]:
    """What a fleet client has been sent since its last read: (host, seq) per message."""
    out = []
    while True:
        try:
            async with asyncio.timeout(0.05):
                message = orjson.loads(await client.next())
        except TimeoutError:
            return out
        if message["type"] == "host":
            out.append((message["host"], message["seq"]))


async def test_a_listener_reads_what_changed_and_catches_up_after_a_reconnect_once(
    clean_database_url, make_settings
):
    """The poll sees each write once: a write that commits after a later one still
    arrives, a read with nothing new sends nothing, and after a reconnect (everything
    read again) only what is new is sent, never a seq twice."""
    listener = FleetListener(Database(make_settings()))
    client = listener.connect_fleet()
    await client.next()  # the (empty) list
    conn = await asyncpg.connect(clean_database_url)
    slow = await asyncpg.connect(clean_database_url)
    try:
        for host in ("a", "b"):
            await conn.execute(PUBLISH, *publish_args(snapshot(host, seq=1), 1.0))
        assert await listener.poll(conn) == 2
        assert sorted(await _seqs(client)) == [("a", 1), ("b", 1)]
        assert await listener.poll(conn) == 0
        assert await _seqs(client) == []
        # A write still in flight when a later one commits and is read: read next time.
        async with slow.transaction():
            await slow.execute(PUBLISH, *publish_args(snapshot("c", seq=1), 1.0))
            await conn.execute(PUBLISH, *publish_args(snapshot("a", seq=2), 1.0))
            assert await listener.poll(conn) == 1
            assert await _seqs(client) == [("a", 2)]
        assert await listener.poll(conn) == 1
        assert await _seqs(client) == [("c", 1)]
        # Away for a while (a reconnect reads everything again): only the new is sent.
        await conn.execute(PUBLISH, *publish_args(snapshot("b", seq=2), 1.0))
        await conn.execute(PUBLISH, *publish_args(snapshot("a", seq=3), 1.0))
        listener.horizon = 0
        assert await listener.poll(conn) == 2
        assert sorted(await _seqs(client)) == [("a", 3), ("b", 2)]
        assert listener.rows_read_total >= 3 + 3  # read again, recognised by seq
        assert await listener.poll(conn) == 0
    finally:
        await conn.close()
        await slow.close()


async def test_a_publish_is_skipped_not_queued_while_the_database_is_away(make_settings):
    database = Database(make_settings())  # never started: not ready
    publisher = RelayPublisher(database, 1.0)
    assert await publisher.publish(snapshot()) is False
    assert (publisher.published_total, publisher.skipped_total) == (0, 1)


def test_the_summary_names_the_busiest_process_and_the_busiest_service():
    def group(path: str, kind: str, cpu: float | None) -> dict[str, Any]:
        return {"path": path, "kind": kind, "name": path.rsplit("/", 1)[-1], "cpu_percent": cpu}

    sections = {
        "processes": {
            "top": [
                {"name": "sshd", "cpu_percent": 0.5},
                {"name": "postgres", "cpu_percent": 91.0},
            ]
        },
        "cgroups": {
            "groups": [
                # A slice holds services: the busiest leaf is what the fleet row names.
                group("/system.slice", "slice", 150.0),
                group("/system.slice/nginx.service", "service", 12.0),
                group("/system.slice/postgresql.service", "service", 95.5),
                group("/system.slice/docker-0123456789ab.scope", "container", None),
            ]
        },
    }
    summary = summarize(sections)
    assert (summary["top_process"], summary["top_process_cpu_percent"]) == ("postgres", 91.0)
    assert (summary["top_group"], summary["top_group_cpu_percent"]) == (
        "postgresql.service",
        95.5,
    )
    only_slices = {"cgroups": {"groups": [group("/user.slice", "slice", 50.0)]}}
    assert summarize(only_slices)["top_group"] is None
    assert summarize({})["top_group"] is None and summarize({})["top_process"] is None


def test_notices_are_checked_before_use():
    good = {"host": "a", "seq": 1, "interval_seconds": 1, "summary": {"cpu_busy_ratio": 0.5}}
    parsed = _parse_notice(orjson.dumps(good).decode())
    assert parsed is not None
    assert parsed["summary"]["cpu_busy_ratio"] == 0.5
    assert parsed["summary"]["memory_used_ratio"] is None
    named = {**good, "summary": {"top_process": "postgres", "top_process_cpu_percent": 93}}
    checked = _parse_notice(orjson.dumps(named).decode())
    assert checked is not None and checked["summary"]["top_process"] == "postgres"
    assert checked["summary"]["top_process_cpu_percent"] == 93.0
    for hostile in ("x" * 65, "line\nbreak", 42):
        notice = {
            **good,
            "summary": {
                "top_process": hostile,
                "top_process_cpu_percent": 1,
                "top_group": hostile,
                "top_group_cpu_percent": 1,
            },
        }
        parsed_hostile = _parse_notice(orjson.dumps(notice).decode())
        assert parsed_hostile is not None and parsed_hostile["summary"]["top_process"] is None
        assert parsed_hostile["summary"]["top_group"] is None
        assert parsed_hostile["summary"]["top_group_cpu_percent"] is None
    for bad in [
        "not json",
        "[]",
        orjson.dumps({**good, "host": ""}).decode(),
        orjson.dumps({**good, "host": "x" * 256}).decode(),
        orjson.dumps({**good, "seq": "1"}).decode(),
        orjson.dumps({**good, "interval_seconds": 0}).decode(),
        orjson.dumps({**good, "summary": None}).decode(),
    ]:
        assert _parse_notice(bad) is None, bad
    removed = _parse_notice(orjson.dumps({"host": "a", "removed": True}).decode())
    assert removed == {"host": "a", "removed": True}


async def test_a_silent_host_turns_stale_after_three_intervals_and_live_on_its_next_notice(
    make_settings,
):
    clock = FakeClock()
    listener = FleetListener(Database(make_settings()), clock=clock)
    client = listener.connect_fleet()
    assert orjson.loads(await client.next()) == {"type": "hosts", "hosts": []}

    def notice(seq: int) -> str:
        body = {"host": "a", "seq": seq, "interval_seconds": 2, "summary": {}, "version": "v"}
        return orjson.dumps(body).decode()

    listener._on_notice(None, 0, "perfpulse_live", notice(1))
    first = orjson.loads(await client.next())
    assert (first["type"], first["host"], first["stale"], first["seq"]) == ("host", "a", False, 1)
    clock.advance(5.9)
    assert listener.sweep() == 0
    clock.advance(0.2)  # 6.1 s: three intervals of 2 s
    assert listener.sweep() == 1
    assert listener.sweep() == 0  # said once
    stale = orjson.loads(await client.next())
    assert (stale["host"], stale["stale"]) == ("a", True)
    listener._on_notice(None, 0, "perfpulse_live", notice(2))
    live = orjson.loads(await client.next())
    assert (live["stale"], live["seq"]) == (False, 2)
    listener._on_notice(
        None, 0, "perfpulse_live", orjson.dumps({"host": "a", "removed": True}).decode()
    )
    assert orjson.loads(await client.next()) == {"type": "host_removed", "host": "a"}
    assert not listener.knows("a")


async def test_a_slow_fleet_reader_gets_each_hosts_newest_state_not_a_backlog():
    client = FleetClient()
    for seq in range(1000):
        client.offer("a", f"a{seq}")
        client.offer("b", f"b{seq}")
    client.offer("a", "a-last")
    assert [await client.next() for _ in range(2)] == ["b999", "a-last"]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await client.next()


async def test_other_hosts_streamed_at_once_are_bounded(make_settings):
    listener = FleetListener(Database(make_settings()), resume_buffer=3)
    for i in range(MAX_CHANNELS):
        listener.open_channel(f"h{i}")
    assert listener.open_channel("h0") is listener.channels["h0"]  # one channel per host
    with pytest.raises(TooManyChannels):
        listener.open_channel("one-more")
    listener.release_channel("h0")  # nobody watching: the first to go for a new one
    listener.open_channel("one-more")
    channel = listener.channels["one-more"]
    for seq in range(10):
        channel.publish_json(seq, b"{}")
    assert [frame.seq for frame in channel.since(-1)] == [7, 8, 9]


async def test_a_stream_left_by_its_last_client_lingers_for_a_reconnect(make_settings):
    from exporter.fleet.listener import LINGER_SECONDS

    clock = FakeClock()
    listener = FleetListener(Database(make_settings()), resume_buffer=5, clock=clock)
    channel = listener.open_channel("web-1")
    for seq in range(3):
        channel.publish_json(seq, b"{}")
    listener.release_channel("web-1")
    clock.advance(LINGER_SECONDS - 1)
    listener.sweep()
    again = listener.open_channel("web-1")  # reconnected: the same stream, its frames kept
    assert again is channel and [f.seq for f in again.since(0)] == [1, 2]
    listener.release_channel("web-1")
    clock.advance(LINGER_SECONDS + 1)
    listener.sweep()
    assert "web-1" not in listener.channels
