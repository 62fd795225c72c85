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
from exporter.api import auth, health, landing, metrics, ws
from exporter.auth import load_jwt_secret
from exporter.bootstrap import create_initial_admin
from exporter.collectors import build_collectors
from exporter.collectors.base import Collector
from exporter.config import Settings
from exporter.metrics import build_registry
from exporter.sampler import Sampler
from exporter.storage.database import Database
from exporter.stream import Broadcaster, StreamCollector
from exporter.throttle import LoginThrottle

log = logging.getLogger(__name__)


class State(TypedDict):
    settings: Settings
    sampler: Sampler
    registry: CollectorRegistry
    database: Database
    broadcaster: Broadcaster
    jwt_secret: bytes
    login_throttle: LoginThrottle


def create_app(settings: Settings, collectors: Sequence[Collector] | None = None) -> FastAPI:
    """Build the app; sampling, streaming and the database start with the lifespan."""
    jwt_secret = load_jwt_secret(settings)  # a bad secret fails here, before serving

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        sampler = Sampler(
            collectors if collectors is not None else build_collectors(settings),
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
        tasks = [
            _task(sampler.run(), "sampler"),
            _task(broadcaster.run(sampler), "broadcaster"),
        ]
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
            }
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await database.stop()
            seq = sampler.latest.seq if sampler.latest else 0
            log.info("sampler stopped after %d snapshots", seq)

    app = FastAPI(
        title="perfpulse",
        version=__version__,
        summary="Host-performance exporter",
        lifespan=lifespan,
    )
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(ws.router)
    app.include_router(landing.router)
    return app


def _task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report_crash)
    return task


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s stopped unexpectedly", task.get_name(), exc_info=task.exception())
