"""The FastAPI app factory; resources live in typed lifespan state, not globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypedDict

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.api import auth, health, history, landing, metrics, ws
from exporter.api.dashboard import default_directory, mount_dashboard
from exporter.auth import load_jwt_secret
from exporter.bootstrap import create_initial_admin
from exporter.collectors import build_collectors, build_perf
from exporter.collectors.base import Collector
from exporter.config import Settings
from exporter.metrics import build_registry
from exporter.sampler import Sampler
from exporter.storage.database import Database
from exporter.stream import Broadcaster, StreamCollector
from exporter.throttle import LoginThrottle
from exporter.webconfig import WebConfig, load_web_config
from exporter.wire import RawSendCapture
from exporter.writer import BatchWriter, Retention, WriterCollector

log = logging.getLogger(__name__)


class State(TypedDict):
    settings: Settings
    sampler: Sampler
    registry: CollectorRegistry
    database: Database
    broadcaster: Broadcaster
    jwt_secret: bytes
    login_throttle: LoginThrottle
    writer: BatchWriter
    web_config: WebConfig


def create_app(settings: Settings, collectors: Sequence[Collector] | None = None) -> FastAPI:
    """Build the app; sampling, streaming and the database start with the lifespan."""
    jwt_secret = load_jwt_secret(settings)  # a bad secret fails here, before serving
    web_config = (
        load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        perf = build_perf(settings) if collectors is None else None
        sampler = Sampler(
            collectors if collectors is not None else build_collectors(settings, perf),
            interval=settings.sampling_interval_seconds,
            deadline=settings.collector_deadline,
            host=settings.hostname,
        )
        broadcaster = Broadcaster(
            queue_size=settings.ws_queue_size, resume_buffer=settings.ws_resume_buffer
        )
        registry = build_registry(sampler)
        registry.register(StreamCollector(broadcaster))
        database = Database(settings, on_ready=lambda pool: create_initial_admin(pool, settings))
        await database.start()
        writer = BatchWriter(
            database,
            batch_size=settings.batch_size,
            max_age=settings.batch_max_age_seconds,
            max_buffered=settings.writer_max_buffered,
            drain_batch=settings.writer_drain_batch,
            spool_path=settings.data_dir / "spool.jsonl" if settings.writer_spool else None,
        )
        registry.register(WriterCollector(writer))
        # Subscribers first, so the first snapshot reaches them too.
        consumers = [
            _task(broadcaster.run(sampler), "broadcaster"),
            _task(writer.run(sampler), "writer"),
        ]
        await asyncio.sleep(0)
        sampling = _task(sampler.run(), "sampler")
        # The perf child is reaped when this task is cancelled.
        perf_task = _task(perf.run(), "perf") if perf is not None else None
        retention = _task(Retention(database, settings.retention_days).run(), "retention")
        try:
            yield {
                "settings": settings,
                "sampler": sampler,
                "registry": registry,
                "database": database,
                "broadcaster": broadcaster,
                "jwt_secret": jwt_secret,
                "login_throttle": LoginThrottle(
                    settings.login_max_failures, settings.login_failure_window_seconds
                ),
                "writer": writer,
                "web_config": web_config,
            }
        finally:
            # Stop sampling first, then hand every snapshot taken to the writer, flush it
            # (or spool it), and only then close the database.
            for task in (sampling, *consumers, retention, *([perf_task] if perf_task else [])):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info("sampler stopped after %d snapshots", sampler.taken)
            await writer.stop(settings.shutdown_timeout_seconds)
            log.info(
                "writer stopped: %d snapshots written, %d dropped",
                writer.written_total,
                writer.dropped_total,
            )
            await database.stop()

    app = FastAPI(
        title="perfpulse",
        version=__version__,
        summary="Host-performance exporter",
        lifespan=lifespan,
    )
    app.add_middleware(RawSendCapture)
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(ws.router)
    app.include_router(history.router)
    dashboard = settings.dashboard_dir or default_directory()
    if mount_dashboard(app, dashboard):
        log.info("serving the dashboard from %s", dashboard)
    else:
        log.info("no built dashboard in %s (make run builds it); serving a landing page", dashboard)
        app.include_router(landing.router)
    return app


def _task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report_crash)
    return task


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s stopped unexpectedly", task.get_name(), exc_info=task.exception())
