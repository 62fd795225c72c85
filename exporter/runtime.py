"""The running perfpulse: every part built from one `Settings`, started and stopped in order.

    collectors ─► sampler ─┬─► Prometheus registry (reads the latest snapshot at scrape)
      (perf child)         ├─► broadcaster ─► live stream clients (this host)
                           ├─► batch writer ─► PostgreSQL ◄── retention, compactor
                           └─► relay publisher ─► PostgreSQL ─► fleet listener ─► clients
                                                  (NOTIFY)       (any host, or host=*)

PERFPULSE_COLLECT=false leaves out the sampler and its sinks (a dashboard-only instance);
PERFPULSE_DASHBOARD=false leaves out the listener (an agent).

The HTTP app's lifespan, `perfpulse snapshot` and the benchmarks all use this one object,
so the order below is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from exporter.alerts.deliver import AlertmanagerReceiver, Receiver, WebhookReceiver
from exporter.alerts.engine import AlertEngine, AlertsCollector
from exporter.alerts.rules import load_rules
from exporter.collectors import build_collectors, build_perf
from exporter.collectors.base import Collector, TickReads
from exporter.collectors.perfstat import PerfStat
from exporter.collectors.processes import ProcessesCollector
from exporter.config import Settings
from exporter.fleet.listener import FleetCollector, FleetListener
from exporter.sampler import Sampler
from exporter.sinks.prometheus import build_registry
from exporter.sinks.relay import RelayCollector, RelayPublisher
from exporter.sinks.stream import Broadcaster, StreamCollector
from exporter.sinks.writer import BatchWriter, WriterCollector
from exporter.storage.compactor import Compactor, CompactorCollector
from exporter.storage.database import Database
from exporter.storage.retention import Retention
from exporter.system import identity

log = logging.getLogger(__name__)

OnDatabaseReady = Callable[[asyncpg.Pool], Awaitable[object]]
# Sampling stops first, so every snapshot taken reaches the sinks before they stop.
# Snapshots kept for `resume_from` per relayed host being watched (2 minutes at 1 s).
RELAYED_RESUME_BUFFER = 120
STOP_ORDER = (
    "sampler",
    "broadcaster",
    "relay",
    "writer",
    "alerts",
    "fleet",
    "retention",
    "compactor",
    "perf",
)


class Runtime:
    """perfpulse's parts, wired: built now, started by `start()` (or `async with`).

    `collectors` replaces the machine's collectors (tests, benchmarks); without it the
    six collectors and the supervised perf child are built from the settings.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        collectors: Sequence[Collector] | None = None,
        on_database_ready: OnDatabaseReady | None = None,
    ) -> None:
        self.settings = settings
        self.perf: PerfStat | None = (
            build_perf(settings) if collectors is None and settings.collect else None
        )
        tick_reads = TickReads()
        self.sampler = Sampler(
            (
                collectors
                if collectors is not None
                else build_collectors(settings, self.perf, tick_reads)
                if settings.collect
                else []
            ),
            interval=settings.sampling_interval_seconds,
            deadline=settings.collector_deadline,
            host=settings.hostname,
            tick_reads=tick_reads,
            system=identity(settings.sampling_interval_seconds) if settings.collect else None,
        )
        # Replays (`resume_from`) sent at once, for this host's stream and relayed ones.
        replay_slots = asyncio.Semaphore(settings.ws_max_replays)
        self.broadcaster = Broadcaster(
            queue_size=settings.ws_queue_size,
            resume_buffer=settings.ws_resume_buffer,
            replay_slots=replay_slots,
        )
        self.database = Database(settings, on_ready=on_database_ready)
        self.writer = BatchWriter(
            self.database,
            batch_size=settings.batch_size,
            max_age=settings.batch_max_age_seconds,
            max_buffered=settings.writer_max_buffered,
            drain_batch=settings.writer_drain_batch,
            spool_path=settings.data_dir / "spool.jsonl" if settings.writer_spool else None,
        )
        self.retention = Retention(
            self.database,
            settings.retention_days,
            settings.retention_minutes_days,
            settings.retention_hours_days,
        )
        self.compactor = Compactor(
            self.database,
            hot_seconds=settings.storage_hot_seconds,
            interval=settings.storage_compact_interval_seconds,
            name=f"perfpulse {settings.hostname}",
            # On a shared database it may pack a whole fleet's windows: in a process of
            # its own. A single host's are small enough for a thread.
            in_process=settings.database_url is not None,
        )
        # The relay and the listener serve other instances on the same database; the
        # embedded server is this instance's alone (a socket in its data directory), so
        # with it they would only cost (a third of the server's CPU at 1 s).
        self.shared = settings.database_url is not None
        self.relay = RelayPublisher(
            self.database,
            settings.sampling_interval_seconds,
            simple=settings.database_transaction_pooling,
        )
        self.fleet: FleetListener | None = (
            FleetListener(
                self.database,
                queue_size=settings.ws_queue_size,
                # Kept per watched host: bounded tighter than this host's own buffer.
                resume_buffer=min(settings.ws_resume_buffer, RELAYED_RESUME_BUFFER),
                replay_slots=replay_slots,
            )
            if settings.dashboard and self.shared
            else None
        )
        # The process table, for the whole of it on demand (GET /api/processes).
        self.processes: ProcessesCollector | None = next(
            (
                r.collector
                for r in self.sampler.runners
                if isinstance(r.collector, ProcessesCollector)
            ),
            None,
        )
        self.registry: CollectorRegistry = build_registry(self.sampler)
        if settings.collect:
            self.registry.register(StreamCollector(self.broadcaster))
            self.registry.register(WriterCollector(self.writer))
            if self.shared:
                self.registry.register(RelayCollector(self.relay))
        if self.fleet is not None:
            self.registry.register(FleetCollector(self.fleet))
        self.registry.register(CompactorCollector(self.compactor))
        # Alerts on this host's own snapshots, and on a fleet instance the hosts gone
        # silent (rules checked before serving: cli.py).
        self.alerts: AlertEngine | None = None
        if settings.alerts and (settings.collect or self.fleet is not None):
            secret = settings.alert_webhook_secret
            receivers: list[Receiver] = [
                AlertmanagerReceiver(url, settings.alert_resend_seconds)
                for url in settings.alertmanager_urls
            ]
            receivers += [
                WebhookReceiver(url, secret.get_secret_value().encode() if secret else None)
                for url in settings.webhook_urls
            ]
            self.alerts = AlertEngine(
                load_rules(settings.alert_rules),
                settings.hostname,
                self.database,
                receivers,
                watch_silence=self.fleet is not None,
            )
            self.registry.register(AlertsCollector(self.alerts))
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """The database (it connects in the background: nothing waits on it), the sinks,
        then sampling and the perf child."""
        await self.database.start()
        if self.fleet is not None:
            self._spawn(self.fleet.run(), "fleet")
        if self.alerts is not None:
            if self.settings.collect:
                self.sampler.annotate = self.alerts.annotate
            self._spawn(self.alerts.run(), "alerts")
        if self.settings.collect:
            self._spawn(self.broadcaster.run(self.sampler), "broadcaster")
            self._spawn(self.writer.run(self.sampler), "writer")
            if self.shared:
                self._spawn(self.relay.run(self.sampler), "relay")
            # The sinks subscribe first, so the first snapshot reaches them too.
            await asyncio.sleep(0)
            self._spawn(self.sampler.run(), "sampler")
        if self.perf is not None:
            self._spawn(self.perf.run(), "perf")  # the child is reaped when this is cancelled
        self._spawn(self.retention.run(), "retention")
        if self.settings.storage_compact:
            self._spawn(self.compactor.run(), "compactor")

    async def stop(self) -> None:
        """Stop sampling first, hand every snapshot taken to the writer, flush it (or spool
        it), and only then close the database."""
        await self._cancel_tasks()
        self.compactor.close()
        if not self.settings.collect:
            await self.database.stop()
            return
        log.info("sampler stopped after %d snapshots", self.sampler.taken)
        await self.writer.stop(self.settings.shutdown_timeout_seconds)
        log.info(
            "writer stopped: %d snapshots written, %d dropped",
            self.writer.written_total,
            self.writer.dropped_total,
        )
        await self.database.stop()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def sampling_only(self) -> AsyncIterator[Sampler]:
        """The sampler and its perf child, nothing else (no database, no sinks): for
        one-off snapshots and benchmarks that drive `sample_once` themselves."""
        if self.perf is not None:
            self._spawn(self.perf.run(), "perf")
        try:
            yield self.sampler
        finally:
            await self._cancel_tasks()

    async def perf_reported(self, within: float = 1.0) -> bool:
        """Wait up to `within` seconds for the perf child's first interval (or failure)."""
        if self.perf is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (self.perf.state.intervals or self.perf.state.restarts):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        self._tasks[name] = task

    async def _cancel_tasks(self) -> None:
        for name in STOP_ORDER:
            task = self._tasks.pop(name, None)
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s stopped unexpectedly", task.get_name(), exc_info=task.exception())
