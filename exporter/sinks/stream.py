"""The live stream's broadcaster: serialize each snapshot once, fan it out to clients.

Each client has its own small queue (drop the oldest: snapshots are state, not events)
and its own sender, so a slow client loses old snapshots and, if it stalls, is evicted;
it never delays anyone else. Recent snapshots are kept for clients that resume.

Two paths deliver a frame: written straight to the connection when it keeps up
(`wire.DirectWriter`), or queued and sent by the client's sender task
(`send_until_evicted`): the pre-built frame again once the connection can take it, or
through ASGI under another server. Both, and their counters, live here and in `wire.py`.

A resume is a replay of kept frames, sent by the same sender task before anything queued
after it: in chunks, each under one of a server-wide number of replay slots, yielding to
the event loop after every frame, and stopping the moment the connection closes. Hundreds
of clients resuming at once share the slots instead of holding the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.sampler import Sampler, Snapshot
from exporter.sinks.protocol import TRY_AGAIN_LATER
from exporter.sinks.wire import DirectWriter, text_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    text: str
    wire: bytes | None = None  # the WebSocket frame, built once for every client


class Evicted(Exception):
    """The client stopped reading: a send did not complete within the send timeout."""


class TextSocket(Protocol):
    """What the sender needs of a connection (Starlette's WebSocket has it)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


REPLAY_CHUNK = 16  # frames sent under one replay slot before it is given up


class Client:
    """One connected client's pending frames."""

    def __init__(self, queue_size: int, owner: Broadcaster) -> None:
        self._queue: deque[Frame] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self.owner = owner  # keeps the counters
        self.dropped = 0
        self.direct: DirectWriter | None = None
        self.sending = False
        self._replay: list[Frame] | None = None

    def deliver(self, frame: Frame) -> None:
        """Write the frame now when nothing is waiting before it, else queue it.

        A direct write happens only while the connection is not paused, so frames never
        pile up here; what a client that does not read can pile up (pongs) is bounded by
        the server's WebSocket protocol (exporter/server.py).
        """
        direct = self.direct
        if (
            direct is not None
            and frame.wire is not None
            and not self.sending
            and self._replay is None
            and not self._queue
            and direct.write(frame.wire)
        ):
            self.owner.sent_direct_total += 1
            return
        self.offer(frame)

    def offer(self, frame: Frame) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            self.owner.dropped_total += 1
        self._queue.append(frame)
        self._ready.set()

    def resume(self, frames: list[Frame]) -> int:
        """Replay missed frames before the queued ones, in order; returns how many. Frames
        published meanwhile wait in the queue behind them."""
        first_queued = self._queue[0].seq if self._queue else None
        missed = [f for f in frames if first_queued is None or f.seq < first_queued]
        if missed:
            self._replay = missed
            self._ready.set()
        return len(missed)

    def pending_replay(self) -> list[Frame]:
        """The frames to replay; the client stays in replay (new frames queue behind it)
        until `replayed()`."""
        return self._replay or []

    def replayed(self) -> None:
        self._replay = None

    async def next(self) -> Frame | None:
        """The next queued frame; None when a replay is waiting to be sent first."""
        while not self._queue and self._replay is None:
            self._ready.clear()
            await self._ready.wait()
        if self._replay is not None:
            return None
        return self._queue.popleft()


class Broadcaster:
    """Receives every snapshot from the sampler and offers it to every client."""

    def __init__(
        self,
        *,
        queue_size: int = 8,
        resume_buffer: int = 600,
        replay_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.queue_size = queue_size
        # Shared by every broadcaster of the process (relayed hosts too): replays at once.
        self.replay_slots = replay_slots or asyncio.Semaphore(8)
        self.clients: set[Client] = set()
        self._recent: deque[Frame] = deque(maxlen=resume_buffer)
        self.dropped_total = 0
        self.evictions_total = 0
        self.sent_total = 0  # through the queue and the ASGI send
        self.sent_direct_total = 0  # the pre-built frame written to the connection
        self.replayed_total = 0
        self.last_seq: int | None = None

    def connect(self) -> Client:
        client = Client(self.queue_size, self)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    def publish(self, snapshot: Snapshot) -> None:
        self.publish_json(snapshot.seq, snapshot.to_json())

    def publish_json(self, seq: int, payload: bytes) -> None:
        """Offer one snapshot, already JSON (a relayed host's comes from PostgreSQL)."""
        frame = Frame(seq, payload.decode(), text_frame(payload))
        self.last_seq = seq
        self._recent.append(frame)
        for client in self.clients:
            client.deliver(frame)

    def since(self, seq: int, limit: int | None = None) -> list[Frame]:
        """Kept frames newer than `seq`, oldest first: the newest `limit` of them."""
        frames = [frame for frame in self._recent if frame.seq > seq]
        return frames if limit is None else frames[max(0, len(frames) - limit) :]

    async def run(self, sampler: Sampler) -> None:
        subscription = sampler.subscribe(maxsize=4)
        try:
            async for snapshot in subscription:
                self.publish(snapshot)
        finally:
            subscription.close()


async def send_until_evicted(socket: TextSocket, client: Client, send_timeout: float) -> None:
    """Send the client's queued frames until cancelled; evict it when a send stalls."""
    try:
        await send_queued(socket, client, send_timeout)
    except Evicted:
        client.owner.evictions_total += 1
        log.info("stream client evicted: its sends stalled past the send timeout")
        closed = await close_within(socket, TRY_AGAIN_LATER, "too slow: not reading")
        if not closed and client.direct is not None:
            client.direct.abort()  # the close frame could not get through a full buffer


async def send_queued(socket: TextSocket, client: Client, send_timeout: float) -> None:
    """Send a replay, then queued frames, one by one; raise Evicted when one takes longer
    than `send_timeout`. Returns when the connection has closed."""
    while True:
        frame = await client.next()
        if frame is None:
            if not await _replay(socket, client, send_timeout):
                return
            continue
        if not await _send(socket, client, frame, send_timeout):
            return
        client.owner.sent_total += 1


async def _replay(socket: TextSocket, client: Client, send_timeout: float) -> bool:
    """Send the client's replay in chunks, a replay slot held for each (and the send
    timeout for each chunk); False once the connection has closed. Frames published
    meanwhile wait in the client's queue, behind the replay."""
    frames = client.pending_replay()
    slots = client.owner.replay_slots
    try:
        for start in range(0, len(frames), REPLAY_CHUNK):
            async with slots:
                try:
                    async with asyncio.timeout(send_timeout):
                        for frame in frames[start : start + REPLAY_CHUNK]:
                            if not await _write(socket, client, frame):
                                return False
                            client.owner.replayed_total += 1
                            await asyncio.sleep(0)  # a fast reader never holds the loop
                except TimeoutError:
                    raise Evicted from None
    finally:
        client.replayed()
    return True


async def _send(socket: TextSocket, client: Client, frame: Frame, send_timeout: float) -> bool:
    """One frame within `send_timeout` (Evicted past it); False if the connection is
    closed."""
    try:
        # asyncio.timeout, not wait_for: no extra task per message (measurable at 5,000
        # clients).
        async with asyncio.timeout(send_timeout):
            return await _write(socket, client, frame)
    except TimeoutError:
        raise Evicted from None


async def _write(socket: TextSocket, client: Client, frame: Frame) -> bool:
    """The pre-built bytes where the connection allows, else through ASGI; False if the
    connection is closed."""
    direct = client.direct
    client.sending = True
    try:
        if direct is not None and frame.wire is not None:
            return await direct.send(frame.wire)
        await socket.send_text(frame.text)
        return True
    finally:
        client.sending = False


async def close_within(socket: TextSocket, code: int, reason: str, seconds: float = 1.0) -> bool:
    """Send a close frame within `seconds`; False if it could not be sent."""
    try:
        async with asyncio.timeout(seconds):
            await socket.close(code, reason)
    except Exception:
        return False
    return True


class StreamCollector(Collector):
    """perfpulse_ws_* metrics."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._broadcaster = broadcaster

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        b = self._broadcaster
        yield GaugeMetricFamily(
            "perfpulse_ws_clients", "Clients connected to the live stream.", value=len(b.clients)
        )
        yield CounterMetricFamily(
            "perfpulse_ws_messages_dropped_total",
            "Snapshots dropped from a slow client's queue (it got a newer one instead).",
            value=b.dropped_total,
        )
        yield CounterMetricFamily(
            "perfpulse_ws_evictions_total",
            "Clients disconnected because a send stalled past the send timeout.",
            value=b.evictions_total,
        )
        sent = CounterMetricFamily(
            "perfpulse_ws_messages_sent_total",
            "Snapshots sent to clients: written at once (direct), or after waiting in the "
            "client's queue (queued: the client was slow, or resuming).",
            labels=("path",),
        )
        sent.add_metric(["direct"], b.sent_direct_total)
        sent.add_metric(["queued"], b.sent_total)
        yield sent
        yield CounterMetricFamily(
            "perfpulse_ws_messages_replayed_total",
            "Kept snapshots sent to clients that resumed (`resume_from`).",
            value=b.replayed_total,
        )
