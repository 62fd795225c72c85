"""The FastAPI app factory; resources live in typed lifespan state, not globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypedDict

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.api import health, landing, metrics
from exporter.collectors import build_collectors
from exporter.collectors.base import Collector
from exporter.config import Settings
from exporter.metrics import build_registry
from exporter.sampler import Sampler

log = logging.getLogger(__name__)


class State(TypedDict):
    settings: Settings
    sampler: Sampler
    registry: CollectorRegistry


def create_app(settings: Settings, collectors: Sequence[Collector] | None = None) -> FastAPI:
    """Build the app; sampling starts with the lifespan and stops with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        sampler = Sampler(
            collectors if collectors is not None else build_collectors(settings),
            interval=settings.sampling_interval_seconds,
            deadline=settings.collector_deadline,
            host=settings.hostname,
        )
        registry = build_registry(sampler)
        task = asyncio.create_task(sampler.run(), name="sampler")
        task.add_done_callback(_report_crash)
        try:
            yield {"settings": settings, "sampler": sampler, "registry": registry}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info(
                "sampler stopped after %d snapshots", sampler.latest.seq if sampler.latest else 0
            )

    app = FastAPI(
        title="perfpulse",
        version=__version__,
        summary="Host-performance exporter",
        lifespan=lifespan,
    )
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(landing.router)
    return app


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("sampler stopped unexpectedly", exc_info=task.exception())
