"""The relay's receiving half, on every instance that serves the dashboard.

One direct connection (a transaction pooler cannot hold a LISTEN, hence
PERFPULSE_DATABASE_LISTEN_URL) reads, every POLL_SECONDS, the live rows that changed
since its previous read: each row stamped with the id of the transaction that wrote it,
the read takes every row stamped at or after the oldest transaction still running at the
previous read (so a write committing late is never missed, and one read twice is known by
its seq). One query per read whatever the number of hosts, and no NOTIFY per tick: a
transaction that NOTIFYs holds an instance-wide lock through its commit, which put every
agent's commit in one line (bench/README.md, "fleet"). It still LISTENs, for a host
removed. From the rows this keeps the fleet list (stale hosts found by a sweep, against
this process's own clock: agents' clocks may disagree) and feeds:

- fleet clients (`host=*`): one message per host update, coalesced per host for a slow
  reader (it gets each host's newest state, never a backlog);
- single-host clients (`host=NAME`): a Broadcaster per watched host, fed by fetching the
  snapshot itself from `live_snapshots`, for watched hosts only, in one query per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.fleet.hosts import (
    CHANNEL,
    STALE_AFTER_INTERVALS,
    HostInfo,
    list_hosts,
)
from exporter.sinks.protocol import TRY_AGAIN_LATER
from exporter.sinks.stream import Broadcaster, TextSocket, close_within
from exporter.sinks.summary import checked
from exporter.storage.database import Database, DatabaseUnavailable, describe

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.25
FETCH_GATHER_SECONDS = 0.01  # notices arriving together are fetched in one query
RETRY_MAX_SECONDS = 30.0
MAX_HOST_NAME = 255
# What a query on the listen connection or the pool raises when it cannot be answered now.
QUERY_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    DatabaseUnavailable,
)
# Other hosts streamed from this instance at once, each with its own kept snapshots: what
# clients can make it hold is bounded (at most this x the per-host resume buffer).
MAX_CHANNELS = 100
# A host's stream that nobody watches any more is kept this long (its snapshots still
# arriving), so that a client that reconnects resumes from it (`resume_from`) as from
# this instance's own host; the longest idle one goes first when MAX_CHANNELS are open.
LINGER_SECONDS = 60.0


class TooManyChannels(Exception):
    """MAX_CHANNELS other hosts are streamed already."""


FETCH = (
    "SELECT host, seq, snapshot FROM live_snapshots "
    "WHERE host = ANY($1::text[]) AND snapshot IS NOT NULL"
)
POLL_SECONDS = 0.25
# The rows stamped since `$1` (the previous read's horizon), with the snapshot of the
# hosts streamed here ($2); and this read's horizon: the oldest transaction still running,
# whose rows (and any later one's) the next read takes.
CHANGES = """
WITH now AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon)
SELECT now.horizon, c.host, c.seq, c.summary, c.interval_seconds, c.version, c.snapshot
FROM now LEFT JOIN LATERAL (
    SELECT l.host, l.seq, l.summary::text AS summary, h.interval_seconds, h.version,
           CASE WHEN l.host = ANY($2::text[]) THEN l.snapshot END AS snapshot
    FROM live_snapshots l JOIN hosts h USING (host)
    WHERE l.xid >= $1
) c ON true
"""
# Agents store their snapshot only while some instance has renewed its watch: renewed
# every WATCH_RENEW_SECONDS for WATCH_SECONDS.
WATCH = """
INSERT INTO watched_hosts AS w (host, until)
SELECT unnest($1::text[]), now() + make_interval(secs => $2)
ON CONFLICT (host) DO UPDATE SET until = greatest(w.until, excluded.until)
"""
WATCH_SECONDS = 30.0
WATCH_RENEW_SECONDS = 10.0


class FleetClient:
    """A fleet stream client's pending messages: the newest per host, oldest host first.
    `sees` (a user's host scope) leaves out the hosts it may not see, as if they did not
    exist."""

    def __init__(self, sees: Callable[[str], bool] | None = None) -> None:
        self._pending: dict[str, str] = {}
        self._ready = asyncio.Event()
        self.sees = sees

    def offer(self, key: str, text: str) -> None:
        if key and self.sees is not None and not self.sees(key):
            return
        self._pending.pop(key, None)
        self._pending[key] = text
        self._ready.set()

    async def next(self) -> str:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        key = next(iter(self._pending))
        return self._pending.pop(key)


@dataclass(slots=True)
class _Host:
    info: HostInfo
    seen: float  # this process's monotonic clock at the host's last notice
    seq: int | None

    def to_json(self) -> dict[str, Any]:
        """/api/hosts' fields, plus the seq of the host's latest snapshot."""
        return {**self.info.to_json(), "seq": self.seq}


def _parse_notice(payload: str) -> dict[str, Any] | None:
    """A notice, checked: anything with database access can NOTIFY this channel."""
    try:
        notice = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(notice, dict):
        return None
    host = notice.get("host")
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_NAME:
        return None
    if notice.get("removed") is True:
        return notice
    seq, interval = notice.get("seq"), notice.get("interval_seconds")
    if not isinstance(seq, int) or not isinstance(interval, int | float) or interval <= 0:
        return None
    summary = notice.get("summary")
    if not isinstance(summary, dict):
        return None
    notice["summary"] = checked(summary)
    version = notice.get("version")
    notice["version"] = version if isinstance(version, str) else ""
    return notice


class FleetListener:
    """The fleet as this instance sees it, kept current from PostgreSQL notices."""

    def __init__(
        self,
        database: Database,
        *,
        queue_size: int = 8,
        resume_buffer: int = 600,
        replay_slots: asyncio.Semaphore | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self.horizon = 0  # the previous read's: rows stamped at or after it are read
        self.polls_total = 0
        self.rows_read_total = 0
        self.queue_size = queue_size
        self.resume_buffer = resume_buffer
        self.replay_slots = replay_slots
        self._clock = clock
        self.hosts: dict[str, _Host] = {}
        self.channels: dict[str, Broadcaster] = {}
        self._idle_since: dict[str, float] = {}
        self.fleet_clients: set[FleetClient] = set()
        self.ready = asyncio.Event()
        self._wanted: set[str] = set()
        self._fetch_wake = asyncio.Event()
        self._watch_now: set[str] = set()
        self._watch_wake = asyncio.Event()

    # --- what the WebSocket route uses ---------------------------------------------------

    def knows(self, host: str) -> bool:
        return host in self.hosts

    def open_channel(self, host: str) -> Broadcaster:
        """The stream of one relayed host; a new one has its current snapshot fetched at
        once."""
        channel = self.channels.get(host)
        if channel is None:
            if len(self.channels) >= MAX_CHANNELS:
                self._drop_idle(self._clock(), oldest=True)
            if len(self.channels) >= MAX_CHANNELS:
                raise TooManyChannels(f"{MAX_CHANNELS} other hosts are streamed already")
            channel = self.channels[host] = Broadcaster(
                queue_size=self.queue_size,
                resume_buffer=self.resume_buffer,
                replay_slots=self.replay_slots,
            )
            self._watch_now.add(host)
            self._watch_wake.set()
            self._want(host)
        self._idle_since.pop(host, None)
        return channel

    def release_channel(self, host: str) -> None:
        """A host's stream whose last client left: kept LINGER_SECONDS for a reconnect."""
        channel = self.channels.get(host)
        if channel is not None and not channel.clients:
            self._idle_since.setdefault(host, self._clock())

    def _drop_idle(self, now: float, *, oldest: bool = False) -> None:
        """Drop the streams idle for LINGER_SECONDS (and their kept snapshots); with
        `oldest`, the longest idle one whatever its age."""
        for host, since in sorted(self._idle_since.items(), key=lambda item: item[1]):
            channel = self.channels.get(host)
            if channel is not None and channel.clients:
                del self._idle_since[host]  # watched again
                continue
            if oldest or now - since >= LINGER_SECONDS:
                self.channels.pop(host, None)
                del self._idle_since[host]
                if oldest:
                    return

    def connect_fleet(self, sees: Callable[[str], bool] | None = None) -> FleetClient:
        """A fleet client, its first message the whole list (of the hosts it `sees`)."""
        client = FleetClient(sees)
        listing = [
            host.to_json() for name, host in self.hosts.items() if sees is None or sees(name)
        ]
        client.offer("", orjson.dumps({"type": "hosts", "hosts": listing}).decode())
        self.fleet_clients.add(client)
        return client

    def disconnect_fleet(self, client: FleetClient) -> None:
        self.fleet_clients.discard(client)

    # --- keeping the fleet current ------------------------------------------------------

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff; each (re)connection reloads
        the list, so nothing missed while away stays missed."""
        fetcher = asyncio.create_task(self._fetch_loop(), name="fleet-fetch")
        sweeper = asyncio.create_task(self._sweep_loop(), name="fleet-sweep")
        watcher = asyncio.create_task(self._watch_loop(), name="fleet-watch")
        delay = 0.5
        try:
            while True:
                try:
                    await self._listen_once()  # returns only by raising
                except QUERY_ERRORS as exc:
                    if self.ready.is_set():  # a connection that had worked: back off anew
                        delay = 0.5
                    log.warning("fleet listener: %s; reconnecting in %.0fs", describe(exc), delay)
                self.ready.clear()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        finally:
            for task in (fetcher, sweeper, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen_once(self) -> None:
        await self.database.ready.wait()  # migrations first: the channel's tables exist
        conn = await asyncpg.connect(self.database.listen_url, statement_cache_size=0)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notice)  # hosts removed
            self._load(await list_hosts(conn))
            # Everything once after a (re)connection: what changed while away arrives,
            # and what was already seen is recognised by its seq.
            self.horizon = 0
            self.ready.set()
            log.info("fleet listener: %d hosts known", len(self.hosts))
            while not lost.is_set():
                await self.poll(conn)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self.poll_seconds)
            raise DatabaseUnavailable("listen connection lost")
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _load(self, rows: list[tuple[HostInfo, float, int | None]]) -> None:
        now = self._clock()
        current = {}
        for info, age, seq in rows:
            current[info.host] = _Host(info, now - age, seq)
        for gone in self.hosts.keys() - current.keys():
            self._broadcast(gone, {"type": "host_removed", "host": gone})
        self.hosts = current
        for host in current.values():
            self._broadcast_host(host)
        for watched in self.channels:
            self._want(watched)

    async def poll(self, conn: asyncpg.Connection) -> int:
        """Read the live rows changed since the previous read; returns how many were new."""
        rows = await conn.fetch(CHANGES, self.horizon, list(self.channels))
        self.polls_total += 1
        fresh = 0
        for row in rows:
            if row["host"] is None:
                continue  # nothing changed: the one row carries the horizon alone
            self.rows_read_total += 1
            known = self.hosts.get(row["host"])
            if known is not None and known.seq is not None and row["seq"] <= known.seq:
                continue  # read before (its transaction was at or after the horizon)
            try:
                summary = orjson.loads(row["summary"])
            except orjson.JSONDecodeError:
                continue
            if not isinstance(summary, dict):
                continue
            notice = {
                "host": row["host"],
                "seq": row["seq"],
                "interval_seconds": row["interval_seconds"],
                "version": row["version"],
                "summary": checked(summary),
            }
            fresh += 1
            self._apply(notice, fetch=row["snapshot"] is None)
            channel = self.channels.get(row["host"])
            newer = channel is not None and (
                channel.last_seq is None or row["seq"] > channel.last_seq
            )
            if row["snapshot"] is not None and channel is not None and newer:
                channel.publish_json(row["seq"], row["snapshot"].encode())
        if rows:
            self.horizon = rows[0]["horizon"]
        return fresh

    def _on_notice(self, conn: object, pid: int, channel: str, payload: str) -> None:
        notice = _parse_notice(payload)
        if notice is None:
            return
        if notice.get("removed"):
            name = notice["host"]
            if self.hosts.pop(name, None) is not None:
                self._broadcast(name, {"type": "host_removed", "host": name})
            return
        self._apply(notice)

    def _apply(self, notice: dict[str, Any], *, fetch: bool = True) -> None:
        """A host wrote a snapshot: the list and its fleet clients learn it; a host
        streamed here has its snapshot fetched unless it came along (`fetch`)."""
        name = notice["host"]
        entry = self.hosts.get(name)
        now = datetime.now(UTC)
        if entry is None:
            info = HostInfo(
                name,
                now,
                float(notice["interval_seconds"]),
                notice["version"],
                False,
                notice["summary"],
                [],
            )
            entry = self.hosts[name] = _Host(info, self._clock(), notice["seq"])
        else:
            info = entry.info
            info.last_seen = now
            info.interval_seconds = float(notice["interval_seconds"])
            info.version = notice["version"]
            info.stale = False
            info.summary = notice["summary"]
            entry.seen = self._clock()
            entry.seq = notice["seq"]
        self._broadcast_host(entry)
        if fetch and name in self.channels:
            self._want(name)

    def _broadcast_host(self, host: _Host) -> None:
        self._broadcast(host.info.host, {"type": "host", **host.to_json()})

    def _broadcast(self, key: str, message: dict[str, Any]) -> None:
        if not self.fleet_clients:
            return
        text = orjson.dumps(message).decode()
        for client in self.fleet_clients:
            client.offer(key, text)

    def sweep(self) -> int:
        """Mark hosts silent for STALE_AFTER_INTERVALS of their intervals; returns how many
        turned stale now."""
        now = self._clock()
        self._drop_idle(now)
        turned = 0
        for host in self.hosts.values():
            info = host.info
            if not info.stale and now - host.seen > STALE_AFTER_INTERVALS * info.interval_seconds:
                info.stale = True
                turned += 1
                self._broadcast_host(host)
        return turned

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep()

    async def _watch_loop(self) -> None:
        """Tell agents which hosts are streamed from here: a new one at once, all of them
        every WATCH_RENEW_SECONDS."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_RENEW_SECONDS):
                    await self._watch_wake.wait()
            self._watch_wake.clear()
            fresh, self._watch_now = self._watch_now, set()
            hosts = list(fresh | self.channels.keys())
            if not hosts:
                continue
            try:
                await self.database.pool.execute(WATCH, hosts, WATCH_SECONDS)
            except QUERY_ERRORS as exc:
                log.debug("fleet listener: watch failed: %s", describe(exc))
                self._watch_now |= fresh

    def _want(self, host: str) -> None:
        self._wanted.add(host)
        self._fetch_wake.set()

    async def _fetch_loop(self) -> None:
        while True:
            await self._fetch_wake.wait()
            await asyncio.sleep(FETCH_GATHER_SECONDS)
            self._fetch_wake.clear()
            wanted = [host for host in self._wanted if host in self.channels]
            self._wanted.clear()
            if not wanted:
                continue
            try:
                rows = await self.database.pool.fetch(FETCH, wanted)
            except QUERY_ERRORS as exc:
                log.debug("fleet listener: fetch failed: %s", describe(exc))
                continue
            for row in rows:
                channel = self.channels.get(row["host"])
                if channel is not None and (
                    channel.last_seq is None or row["seq"] > channel.last_seq
                ):
                    channel.publish_json(row["seq"], row["snapshot"].encode())


async def send_fleet(socket: TextSocket, client: FleetClient, send_timeout: float) -> None:
    """Send a fleet client's messages until cancelled; close it when a send stalls."""
    while True:
        text = await client.next()
        try:
            async with asyncio.timeout(send_timeout):
                await socket.send_text(text)
        except TimeoutError:
            log.info("fleet stream client evicted: its sends stalled past the send timeout")
            await close_within(socket, TRY_AGAIN_LATER, "too slow: not reading")
            return


class FleetCollector(Collector):
    """perfpulse_fleet_* metrics, on instances that listen."""

    def __init__(self, listener: FleetListener) -> None:
        self._listener = listener

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        hosts = GaugeMetricFamily(
            "perfpulse_fleet_hosts", "Hosts this instance knows of, by state.", labels=("state",)
        )
        stale = sum(1 for h in self._listener.hosts.values() if h.info.stale)
        hosts.add_metric(["live"], len(self._listener.hosts) - stale)
        hosts.add_metric(["stale"], stale)
        yield hosts
        yield GaugeMetricFamily(
            "perfpulse_fleet_stream_clients",
            "Clients streaming the fleet list (host=*).",
            value=len(self._listener.fleet_clients),
        )
