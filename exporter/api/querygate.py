"""What history reads may cost: how many run at once, how many wait, how many one user may
have, and that a read whose client has gone is cancelled.

History reads run on database connections of their own (`Database.reader`), so the writer,
logins and the stream never wait behind them; each read also has a statement timeout
there (exporter/storage/history.py). Here: `concurrency` reads run at once and `queue`
more wait (up to `wait_seconds`), more get 503 with Retry-After; one user may have
`per_user` running or waiting, more get 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, MutableMapping
from typing import Any, TypeVar

from fastapi import HTTPException, status
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

T = TypeVar("T")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class QueryGate:
    """Admits history reads (see the module doc); one per process."""

    def __init__(
        self, *, concurrency: int, queue: int, per_user: int, wait_seconds: float = 5.0
    ) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.per_user = per_user
        self.wait_seconds = wait_seconds
        self._running = asyncio.Semaphore(concurrency)
        self._waiting = 0
        self._per_user: Counter[str] = Counter()
        self.refused_total = 0
        self.cancelled_total = 0
        self.timed_out_total = 0

    @contextlib.asynccontextmanager
    async def admitted(self, user: str) -> AsyncIterator[None]:
        """Hold one of the running slots for `user`'s read, or raise 429 / 503."""
        if self._per_user[user] >= self.per_user:
            self.refused_total += 1
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"at most {self.per_user} history queries per user at once; try again shortly",
                headers={"Retry-After": "1"},
            )
        if self._running.locked() and self._waiting >= self.queue:
            self.refused_total += 1
            raise _busy()
        self._per_user[user] += 1
        self._waiting += 1
        try:
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._running.acquire()
            except TimeoutError:
                self.refused_total += 1
                raise _busy() from None
            finally:
                self._waiting -= 1
            try:
                yield
            finally:
                self._running.release()
        finally:
            self._per_user[user] -= 1
            if self._per_user[user] <= 0:
                del self._per_user[user]

    async def until_disconnect(self, receive: Receive, work: Coroutine[Any, Any, T]) -> T:
        """Run `work`, cancelling it (and so its query, which asyncpg cancels on the
        server) if the client disconnects first; then there is nobody to answer."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                self.cancelled_total += 1
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if task.cancelled():
            raise HTTPException(499, "client closed the request")
        return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _busy() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "too many history queries in progress; try again shortly",
        headers={"Retry-After": "2"},
    )


class QueryGateCollector(Collector):
    """perfpulse_history_queries_* metrics."""

    def __init__(self, gate: QueryGate) -> None:
        self._gate = gate

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        g = self._gate
        yield CounterMetricFamily(
            "perfpulse_history_queries_refused_total",
            "History reads refused: too many at once in all (503) or for one user (429).",
            value=g.refused_total,
        )
        yield CounterMetricFamily(
            "perfpulse_history_queries_cancelled_total",
            "History reads cancelled because their client went away.",
            value=g.cancelled_total,
        )
        yield CounterMetricFamily(
            "perfpulse_history_queries_timed_out_total",
            "History reads stopped by the statement timeout.",
            value=g.timed_out_total,
        )
