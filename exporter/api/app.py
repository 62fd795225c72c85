"""The FastAPI app factory; the running parts live in typed lifespan state, not globals."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypedDict

from fastapi import FastAPI

from exporter import __version__
from exporter.api import auth, health, history, landing, metrics, ws
from exporter.api.dashboard import default_directory, mount_dashboard
from exporter.api.deps import Access
from exporter.api.webconfig import WebConfig, load_web_config
from exporter.auth.bootstrap import create_initial_admin
from exporter.auth.throttle import LoginThrottle
from exporter.auth.tokens import load_jwt_secret
from exporter.collectors.base import Collector
from exporter.config import Settings
from exporter.runtime import Runtime
from exporter.sinks.wire import RawSendCapture

log = logging.getLogger(__name__)


class State(TypedDict):
    runtime: Runtime
    access: Access


def create_app(settings: Settings, collectors: Sequence[Collector] | None = None) -> FastAPI:
    """Build the app; sampling, streaming and the database start with the lifespan."""
    access = Access(
        jwt_secret=load_jwt_secret(settings),  # a bad secret fails here, before serving
        login_throttle=LoginThrottle(
            settings.login_max_failures, settings.login_failure_window_seconds
        ),
        web_config=(
            load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        runtime = Runtime(
            settings,
            collectors=collectors,
            on_database_ready=lambda pool: create_initial_admin(pool, settings),
        )
        async with runtime:
            yield {"runtime": runtime, "access": access}

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
