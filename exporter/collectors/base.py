"""What every collector shares: the protocol, rate arithmetic, and the runner that turns
failures and timeouts into unavailable results (the design's `safe_collect`).

The one concurrency story: a collector that only reads procfs or sysfs (answered from
kernel memory, never waiting on a device) sets `blocking = False` and runs inline on the
event loop. Anything that can wait on a device or a remote server (statvfs) is blocking:
the runner calls it on its own worker thread and waits at most the collector deadline.
No collector has a mechanism of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024  # /proc/stat on a 256-CPU machine is about 40 KiB

Clock = Callable[[], float]
JSON = dict[str, Any]
T = TypeVar("T")


class Unavailable(Exception):
    """The source does not exist here (no file, no PMU): "no data", not "broken"."""


class Sample(Protocol):
    """One reading of one collector: JSON for the live snapshot, raw families for /metrics."""

    def to_dict(self) -> Mapping[str, Any]: ...  # a section type (collectors/sections.py)

    def metrics(self) -> Iterable[Metric]: ...


class Collector(Protocol):
    """Anything with a name and a `collect()`; it keeps its own previous reading.

    A collector may set `blocking = False` when it only reads procfs, which the kernel
    answers from memory without waiting on any device: it then runs inline on the event
    loop, sparing a thread handoff per tick. Anything else runs on a worker thread.

    A collector with `part_of = "<section>"` adds its figures to another collector's
    section of the snapshot; when it has none, the section carries its `placeholder` and
    `<name>_error` (a hung statvfs never hides disk I/O, nor the other way round).
    """

    name: str

    def collect(self) -> Sample: ...


@dataclass(frozen=True, slots=True)
class CollectorResult:
    """The outcome of one collector in one tick."""

    name: str
    sample: Sample | None
    error: str | None
    duration_seconds: float
    part_of: str | None = None
    placeholder: JSON | None = None

    @property
    def ok(self) -> bool:
        return self.sample is not None

    def to_dict(self) -> JSON:
        if self.sample is None:
            return {"available": False, "error": self.error}
        return {"available": True, **self.sample.to_dict()}

    def part(self) -> JSON:
        """What this result adds to the section it is `part_of`."""
        if self.sample is None:
            return {**(self.placeholder or {}), f"{self.name}_error": self.error}
        return dict(self.sample.to_dict())


def rate(current: float, previous: float | None, elapsed: float | None) -> float | None:
    """Per-second change of a monotonic counter, or None when it cannot be known.

    None on the first reading, on a non-positive interval, and when the counter went
    backwards (wrap, reset, device replaced): a reset is reported as unknown, never as a
    negative or a spurious huge rate.
    """
    if previous is None or elapsed is None or elapsed <= 0:
        return None
    delta = current - previous
    if delta < 0:
        return None
    return delta / elapsed


def rates(
    current: Mapping[str, float], previous: Mapping[str, float] | None, elapsed: float | None
) -> dict[str, float | None]:
    """`rate` for every key of `current`."""
    before = previous or {}
    return {key: rate(value, before.get(key), elapsed) for key, value in current.items()}


def sum_rates(
    rows: Iterable[Mapping[str, float | None]], keys: Iterable[str]
) -> dict[str, float | None]:
    """Add per-device rates into a total; one unknown rate makes that total unknown."""
    total: dict[str, float | None] = dict.fromkeys(keys, 0.0)
    for row in rows:
        for key, value in total.items():
            if value is not None:
                rate_ = row[key]
                total[key] = None if rate_ is None else value + rate_
    return total


class LastReading(Generic[T]):
    """The previous reading of a collector and when it was taken, for rates."""

    def __init__(self) -> None:
        self._last: tuple[float, T] | None = None

    def swap(self, now: float, reading: T) -> tuple[T | None, float | None]:
        """Keep `reading`; return the one before it and the seconds between (None first)."""
        last, self._last = self._last, (now, reading)
        if last is None:
            return None, None
        return last[1], now - last[0]


def read_text(path: Path | str) -> str:
    """Read a kernel text file; a missing file means the source is unavailable here.

    Unbuffered: open, read until the end, close. A text-mode `open()` adds an fstat, an
    ioctl, two lseeks and another fstat to every read, on every file, every tick.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unavailable(f"{path} does not exist") from None
    except PermissionError:
        raise Unavailable(f"{path} is not readable (permission denied)") from None
    try:
        chunks = []
        while chunk := os.read(fd, READ_SIZE):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


class TickReads:
    """Kernel files that several inline collectors read in one tick, read once per tick.

    /proc/vmstat is ~200 lines that both `memory` (swap traffic) and `memory_bandwidth`
    (paging) need; the sampler calls `new_tick()` before each tick. Only for inline
    collectors: they run one after another on the event loop, never concurrently.
    """

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self.reads = 0

    def new_tick(self) -> None:
        self._texts.clear()

    def read(self, path: str) -> str:
        text = self._texts.get(path)
        if text is None:
            text = self._texts[path] = read_text(path)
            self.reads += 1
        return text


class CollectorRunner:
    """Runs one collector under a deadline, never raising.

    Blocking collectors run on their own worker thread, non-blocking ones inline.
    A collector stuck in a system call (a hung statvfs, a wedged driver) cannot be
    cancelled; the runner remembers the stuck call and reports the collector as
    unavailable instead of piling a new thread onto it every tick.
    """

    def __init__(
        self,
        collector: Collector,
        *,
        executor: Executor | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.collector = collector
        self.inline = getattr(collector, "blocking", True) is False
        self._executor = executor
        if self._executor is None and not self.inline:
            self._executor = WorkerThread(f"collector-{collector.name}")
        self.name = collector.name
        self.part_of: str | None = getattr(collector, "part_of", None)
        self.placeholder: JSON | None = getattr(collector, "placeholder", None)
        self._clock = clock
        # A collector whose figures change slowly may say how often it needs running
        # (`refresh_seconds`); between runs the last good result stands in.
        self.refresh_seconds: float = getattr(collector, "refresh_seconds", 0.0)
        self._fresh: tuple[float, CollectorResult] | None = None
        self._inflight: asyncio.Future[Sample] | None = None
        self._inflight_since = 0.0
        self._last_error: str | None = None
        self._last_level = logging.DEBUG

    async def run(self, deadline: float) -> CollectorResult:
        return await self.start(deadline)

    def start(self, deadline: float) -> Awaitable[CollectorResult]:
        """Begin one collection now; await the result within `deadline` of this call.

        Inline collectors have finished when this returns; a threaded one is already at
        work on its thread, so starting several and then awaiting them runs them together.
        """
        started = self._clock()
        if self._fresh is not None and started - self._fresh[0] < self.refresh_seconds:
            return _ready(self._fresh[1])
        if self._inflight is not None and not self._inflight.done():
            stuck_for = started - self._inflight_since
            return _ready(
                self._fail(f"previous collection still running after {stuck_for:.1f}s", 0.0)
            )
        if self.inline:
            return _ready(self._run_inline(started))
        future = asyncio.wrap_future(self._executor.submit(self.collector.collect))  # type: ignore[union-attr]
        self._inflight, self._inflight_since = future, started
        return self._finish(future, started, deadline)

    async def _finish(
        self, future: asyncio.Future[Sample], started: float, deadline: float
    ) -> CollectorResult:
        remaining = deadline - (self._clock() - started)
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                sample = await asyncio.shield(future)
        except TimeoutError:
            future.add_done_callback(_consume_exception)
            return self._fail(f"timed out after {deadline:g}s", self._clock() - started)
        except Exception as exc:
            return self._failed(exc, started)
        self._inflight = None
        return self._succeed(sample, started)

    def _run_inline(self, started: float) -> CollectorResult:
        try:
            sample = self.collector.collect()
        except Exception as exc:
            return self._failed(exc, started)
        return self._succeed(sample, started)

    def _failed(self, exc: Exception, started: float) -> CollectorResult:
        """ "No data here" is logged at debug; anything else is a warning."""
        if isinstance(exc, Unavailable):
            return self._fail(str(exc), self._clock() - started, level=logging.DEBUG)
        return self._fail(f"{type(exc).__name__}: {exc}", self._clock() - started)

    def _succeed(self, sample: Sample, started: float) -> CollectorResult:
        if self._last_error is not None:
            # A recovery is news when the failure was (a warning), not after "no data here".
            level = logging.INFO if self._last_level >= logging.WARNING else logging.DEBUG
            log.log(level, "collector %s recovered", self.name)
            self._last_error = None
        result = CollectorResult(
            self.name, sample, None, self._clock() - started, self.part_of, self.placeholder
        )
        if self.refresh_seconds > 0:
            self._fresh = (started, result)
        return result

    def _fail(self, error: str, duration: float, level: int = logging.WARNING) -> CollectorResult:
        self._fresh = None  # a failure is news at once; the next tick tries again
        if error != self._last_error:
            log.log(level, "collector %s unavailable: %s", self.name, error)
            self._last_error, self._last_level = error, level
        return CollectorResult(self.name, None, error, duration, self.part_of, self.placeholder)


class WorkerThread(Executor):
    """One persistent daemon thread that runs submitted calls in order.

    Daemon, so a collector stuck in a system call never keeps the process from exiting
    (ThreadPoolExecutor's workers are joined at interpreter exit).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, lambda: fn(*args, **kwargs)))
        return future

    def _work(self) -> None:
        while True:
            future, call = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)


def _ready(result: CollectorResult) -> asyncio.Future[CollectorResult]:
    future: asyncio.Future[CollectorResult] = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


def _consume_exception(future: asyncio.Future[Sample]) -> None:
    if not future.cancelled():
        future.exception()
