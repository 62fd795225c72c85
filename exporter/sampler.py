"""The tick loop: every interval, run all collectors concurrently and publish one Snapshot."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from exporter.collectors.base import (
    JSON,
    Collector,
    CollectorResult,
    CollectorRunner,
    TickReads,
)

log = logging.getLogger(__name__)

WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one tick saw, stamped with the tick's start time (UTC)."""

    seq: int
    timestamp: datetime
    host: str
    results: dict[str, CollectorResult]
    system: JSON | None = None  # the host's identity (exporter/system.py), same every tick
    _sections: dict[str, tuple[JSON, bytes]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Set once, before the snapshot is published: this host's open alerts (alerts/).
    _alerts: list[JSON] = field(default_factory=list, init=False, repr=False, compare=False)
    _annotated: list[bool] = field(default_factory=list, init=False, repr=False, compare=False)

    def set_alerts(self, alerts: list[JSON]) -> None:
        """The pending and firing alerts as of this snapshot (the stream carries them)."""
        self._alerts[:] = alerts
        self._annotated[:] = [True]

    @property
    def alerts(self) -> list[JSON] | None:
        return list(self._alerts) if self._annotated else None

    def sections(self) -> dict[str, tuple[JSON, bytes]]:
        """Each collector's part and its JSON, built once: the stream and the writer both
        need them."""
        if not self._sections:
            parts = [r for r in self.results.values() if r.part_of is not None]
            for name, result in self.results.items():
                if result.part_of is not None:
                    continue
                data = result.to_dict()
                if result.ok:
                    for part in parts:
                        if part.part_of == name:
                            data.update(part.part())
                self._sections[name] = (data, orjson.dumps(data))
        return self._sections

    def _header(self) -> JSON:
        return {
            "seq": self.seq,
            "timestamp": self.timestamp.isoformat(timespec="microseconds"),
            "host": self.host,
            **({"system": self.system} if self.system is not None else {}),
            **({"alerts": list(self._alerts)} if self._annotated else {}),
        }

    def to_dict(self) -> JSON:
        data = self._header()
        data.update((name, part) for name, (part, _) in self.sections().items())
        return data

    def to_json(self) -> bytes:
        """The whole snapshot, from the parts' JSON (no second serialization)."""
        parts = [orjson.dumps(self._header())[:-1]]  # without the closing brace
        for name, (_, text) in self.sections().items():
            parts += (b",", orjson.dumps(name), b":", text)
        parts.append(b"}")
        return b"".join(parts)


class Subscription:
    """A bounded queue of snapshots for one consumer; when full, the oldest is dropped.

    Snapshots are state, not events: a consumer that falls behind wants the newest.
    """

    def __init__(self, maxsize: int, on_close: Callable[[Subscription], None]) -> None:
        self._queue: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize)
        self._on_close = on_close
        self.dropped = 0

    def offer(self, snapshot: Snapshot) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(snapshot)

    async def get(self) -> Snapshot:
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()

    def drain(self) -> list[Snapshot]:
        """Everything queued, without waiting."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def close(self) -> None:
        self._on_close(self)

    def __aiter__(self) -> AsyncIterator[Snapshot]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Snapshot]:
        while True:
            yield await self.get()


class Sampler:
    """Runs the collectors on a drift-free schedule and keeps the latest Snapshot.

    Tick N starts at start + N * interval whatever the previous ticks took; a tick that
    overruns makes the loop skip to the next slot rather than shift every later tick.
    """

    def __init__(
        self,
        collectors: Sequence[Collector],
        *,
        interval: float,
        deadline: float,
        host: str,
        wall_clock: WallClock = utc_now,
        first_seq: int | None = None,
        tick_reads: TickReads | None = None,
        system: JSON | None = None,
    ) -> None:
        self.interval = interval
        self.system = system
        # Called with each snapshot before it is published (alert evaluation: a few
        # microseconds); it must not block.
        self.annotate: Callable[[Snapshot], None] | None = None
        self.deadline = deadline
        self.host = host
        self._wall_clock = wall_clock
        self._tick_reads = tick_reads
        self.runners = [CollectorRunner(c) for c in collectors]
        # Inline collectors first, then the threaded ones start while the loop waits. A
        # thread started first would contend with the inline collectors for the
        # interpreter lock (a futex ping-pong between the threads on every tick) to
        # overlap a call that takes microseconds when the device answers.
        self._start_order = sorted(self.runners, key=lambda runner: not runner.inline)
        self._subscribers: list[Subscription] = []
        # seq grows by one per tick and keeps growing across restarts: it starts from the
        # start time in milliseconds, and ticks are at least 100 ms apart. A client that
        # resumes after a restart therefore never mistakes new snapshots for old ones.
        if first_seq is None:
            first_seq = int(wall_clock().timestamp() * 1000)
        self._seq = first_seq - 1
        self.latest: Snapshot | None = None
        self.skipped_ticks = 0
        self.taken = 0

    def subscribe(self, maxsize: int = 16) -> Subscription:
        """A queue that receives every snapshot from now on (drop-oldest when full)."""
        subscription = Subscription(maxsize, self._subscribers.remove)
        self._subscribers.append(subscription)
        return subscription

    async def sample_once(self) -> Snapshot:
        """Run every collector once, concurrently, each under the deadline."""
        timestamp = self._wall_clock()
        if self._tick_reads is not None:
            self._tick_reads.new_tick()
        started = {runner.name: runner.start(self.deadline) for runner in self._start_order}
        results = [await started[runner.name] for runner in self.runners]
        self._seq += 1
        snapshot = Snapshot(
            self._seq, timestamp, self.host, {r.name: r for r in results}, self.system
        )
        if self.annotate is not None:
            try:
                self.annotate(snapshot)
            except Exception:  # one bad rule never stops sampling
                log.exception("annotating snapshot %d failed", snapshot.seq)
        self.latest = snapshot
        self.taken += 1
        for subscription in list(self._subscribers):
            subscription.offer(snapshot)
        return snapshot

    async def run(self) -> None:
        """Sample forever, until cancelled."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        log.info(
            "sampling every %gs with collectors %s",
            self.interval,
            ", ".join(r.name for r in self.runners),
        )
        while True:
            await self.sample_once()
            tick += 1
            now = loop.time()
            due = start + tick * self.interval
            if now > due:
                late_ticks = math.ceil((now - due) / self.interval)
                tick += late_ticks
                self.skipped_ticks += late_ticks
                log.warning(
                    "tick took %.3fs, longer than the %gs interval; skipped %d tick(s)",
                    now - due + self.interval,
                    self.interval,
                    late_ticks,
                )
                due = start + tick * self.interval
            await asyncio.sleep(due - now)
