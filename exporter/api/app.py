"""The FastAPI app factory; the running parts live in typed lifespan state, not globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypedDict

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from exporter import __version__
from exporter.api import access as access_routes
from exporter.api import (
    alerts,
    auth,
    health,
    history,
    hosts,
    landing,
    metrics,
    processes,
    ws,
)
from exporter.api.dashboard import default_directory, mount_dashboard
from exporter.api.deps import Access
from exporter.api.guards import BodyLimit, HostAllowList, SecurityHeaders, default_allowed_hosts
from exporter.api.querygate import QueryGate, QueryGateCollector
from exporter.api.webconfig import WebConfig, load_web_config
from exporter.auth.bootstrap import create_initial_admin
from exporter.auth.proxy import ProxyAuth
from exporter.auth.sessions import Sessions
from exporter.auth.throttle import LoginCollector, LoginGate
from exporter.auth.tokens import load_jwt_secret
from exporter.collectors.base import Collector
from exporter.config import Settings
from exporter.runtime import Runtime
from exporter.sinks.wire import RawSendCapture
from exporter.storage.database import DATABASE_ERRORS, describe, from_database

log = logging.getLogger(__name__)


class State(TypedDict):
    runtime: Runtime
    access: Access


def create_app(settings: Settings, collectors: Sequence[Collector] | None = None) -> FastAPI:
    """Build the app; sampling, streaming and the database start with the lifespan."""
    access = Access(
        jwt_secret=load_jwt_secret(settings),  # a bad secret fails here, before serving
        login_gate=LoginGate(
            max_failures=settings.login_max_failures,
            account_max_failures=settings.login_account_max_failures,
            window_seconds=settings.login_failure_window_seconds,
            queue_size=settings.login_queue_size,
        ),
        web_config=(
            load_web_config(settings.web_config_file) if settings.web_config_file else WebConfig()
        ),
        sessions=Sessions(settings.session_recheck_seconds, settings.ws_max_streams_per_user),
        queries=QueryGate(
            concurrency=settings.history_concurrency,
            queue=settings.history_queue,
            per_user=settings.history_per_user,
        ),
        proxy=ProxyAuth(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        runtime = Runtime(
            settings,
            collectors=collectors,
            # An agent serves no login: its database may hold users, it creates none.
            on_database_ready=(
                (lambda pool: create_initial_admin(pool, settings)) if settings.dashboard else None
            ),
        )
        runtime.registry.register(LoginCollector(access.login_gate))
        runtime.registry.register(QueryGateCollector(access.queries))
        async with runtime:
            sweeper = asyncio.create_task(access.sessions.run(runtime.database), name="sessions")
            try:
                yield {"runtime": runtime, "access": access}
            finally:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

    app = FastAPI(
        title="perfpulse",
        version=__version__,
        summary="Host-performance exporter",
        lifespan=lifespan,
        # Swagger UI and ReDoc come from a CDN, on the origin whose storage holds the
        # dashboard's token: off unless asked for (the schema stays at /openapi.json).
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _database_error)
    # Outermost last: headers on every response, then the Host check, the body limit,
    # then the stream's.
    app.add_middleware(RawSendCapture)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        HostAllowList,
        allowed=default_allowed_hosts(settings.hostname, settings.host, settings.allowed_hosts),
    )
    app.add_middleware(SecurityHeaders)
    app.include_router(metrics.router)
    app.include_router(health.router)
    if not settings.dashboard:
        log.info("agent: collecting, writing and serving /metrics; no dashboard, login or stream")
        return app
    app.include_router(auth.router)
    app.include_router(access_routes.router)
    app.include_router(ws.router)
    app.include_router(history.router)
    app.include_router(hosts.router)
    app.include_router(alerts.router)
    app.include_router(processes.router)
    dashboard = settings.dashboard_dir or default_directory()
    if mount_dashboard(app, dashboard):
        log.info("serving the dashboard from %s", dashboard)
    else:
        log.info("no built dashboard in %s (make run builds it); serving a landing page", dashboard)
        app.include_router(landing.router)
    return app


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, naming each bad field and why, without echoing what was sent
    (it may be a password)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {key: value for key, value in error.items() if key not in ("input", "url", "ctx")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database is down, restarting or full: nothing wrong with the request, so a
    503 to retry, and readiness (/healthz) says so too."""
    if not from_database(exc):
        raise exc  # not the database's: a plain 500
    reason = describe(exc)
    runtime: Runtime = request.state.runtime
    runtime.database.note_failure(reason)
    return JSONResponse(
        {"detail": f"database unavailable ({reason}); try again later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )
