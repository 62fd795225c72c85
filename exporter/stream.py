"""The live stream's broadcaster: serialize each snapshot once, fan it out to clients.

Each client has its own small queue (drop the oldest: snapshots are state, not events)
and its own sender, so a slow client loses old snapshots and, if it stalls, is evicted;
it never delays anyone else. Recent snapshots are kept for clients that resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.sampler import Sampler, Snapshot
from exporter.wire import DirectWriter, text_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    text: str
    wire: bytes | None = None  # the WebSocket frame, built once for every client


class Client:
    """One connected client's pending frames."""

    def __init__(self, queue_size: int, owner: Broadcaster) -> None:
        self._queue: deque[Frame] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self._owner = owner  # keeps the counters
        self.dropped = 0
        self.direct: DirectWriter | None = None
        self.sending = False

    def deliver(self, frame: Frame) -> None:
        """Write the frame now when nothing is waiting before it, else queue it."""
        direct = self.direct
        if (
            direct is not None
            and frame.wire is not None
            and not self.sending
            and not self._queue
            and direct.write(frame.wire)
        ):
            self._owner.sent_direct_total += 1
            return
        self.offer(frame)

    def offer(self, frame: Frame) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            self._owner.dropped_total += 1
        self._queue.append(frame)
        self._ready.set()

    def resume(self, frames: list[Frame]) -> int:
        """Put missed frames before the queued ones, in order; returns how many."""
        first_queued = self._queue[0].seq if self._queue else None
        missed = [f for f in frames if first_queued is None or f.seq < first_queued]
        if missed:
            size = max(self._queue.maxlen or 0, len(missed) + len(self._queue))
            self._queue = deque([*missed, *self._queue], maxlen=size)
            self._ready.set()
        return len(missed)

    async def next(self) -> Frame:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class Broadcaster:
    """Receives every snapshot from the sampler and offers it to every client."""

    def __init__(self, *, queue_size: int = 8, resume_buffer: int = 600) -> None:
        self.queue_size = queue_size
        self.clients: set[Client] = set()
        self._recent: deque[Frame] = deque(maxlen=resume_buffer)
        self.dropped_total = 0
        self.evictions_total = 0
        self.sent_total = 0  # through the queue and the ASGI send
        self.sent_direct_total = 0  # the pre-built frame written to the connection

    def connect(self) -> Client:
        client = Client(self.queue_size, self)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    def publish(self, snapshot: Snapshot) -> None:
        payload = snapshot.to_json()
        frame = Frame(snapshot.seq, payload.decode(), text_frame(payload))
        self._recent.append(frame)
        for client in self.clients:
            client.deliver(frame)

    def since(self, seq: int) -> list[Frame]:
        """Kept frames newer than `seq`, oldest first."""
        return [frame for frame in self._recent if frame.seq > seq]

    async def run(self, sampler: Sampler) -> None:
        subscription = sampler.subscribe(maxsize=4)
        try:
            async for snapshot in subscription:
                self.publish(snapshot)
        finally:
            subscription.close()


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
