"""Opening the database: the configured URL or the embedded server, then migrations.

The server never waits on PostgreSQL to sample or stream: `Database.start` returns at
once and a background task connects and migrates, retrying with backoff. Routes that
need the database get a 503 until it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg

from exporter.config import Settings
from exporter.storage.embedded import EmbeddedPostgres
from exporter.storage.migrate import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_MAX_SECONDS = 30.0


class TransactionPooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection for a transaction-mode pooler (PgBouncer): a statement with
    parameters is parsed, then bound and run, in two round trips, and between them the
    pooler may hand the server connection to another client, unless a transaction holds
    it. So every such statement outside a transaction runs in one of its own."""

    # asyncpg's own signatures, passed through (query, args, limit, timeout, ...).
    async def _execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.is_in_transaction():
            return await super()._execute(*args, **kwargs)
        async with self.transaction():
            return await super()._execute(*args, **kwargs)

    async def _executemany(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.is_in_transaction():
            return await super()._executemany(*args, **kwargs)
        async with self.transaction():
            return await super()._executemany(*args, **kwargs)


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Released connections keep no session state to undo (no LISTEN, SET or session
    lock is taken on pooled connections; asyncpg still rolls back an open transaction), so
    the pool's reset query (UNLISTEN, RESET ALL...) would be a wasted round trip each
    time."""


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached (yet); the message says why."""


# What asyncpg raises when the server is gone, refusing, restarting or full: the request
# cannot be served now, but nothing is wrong with it (HTTP 503, WebSocket 1013).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def from_database(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable: an asyncpg connection error, or
    an OSError or timeout raised from inside asyncpg (not, say, a missing file)."""
    if not isinstance(exc, (OSError, TimeoutError)):
        return isinstance(exc, DATABASE_ERRORS)
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_globals.get("__name__", "").startswith("asyncpg"):
            return True
        traceback = traceback.tb_next
    return False


def describe(exc: BaseException) -> str:
    """A one-line reason that never includes the URL (it may carry a password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Database:
    """The pool, once connected and migrated; `pool` raises DatabaseUnavailable before."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_ready: Callable[[asyncpg.Pool], Awaitable[object]] | None = None,
    ) -> None:
        self.settings = settings
        self._on_ready = on_ready
        self.ready = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._reader: asyncpg.Pool | None = None
        self._relay: asyncpg.Pool | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error = "connecting"
        self._failing: str | None = None
        self._url: str | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None or not self.ready.is_set():
            raise DatabaseUnavailable(f"database not ready ({self._last_error})")
        return self._pool

    @property
    def reader(self) -> asyncpg.Pool:
        """Connections of their own for history reads: however long those run, the
        writer, logins and the stream never wait behind them."""
        if self._reader is None or not self.ready.is_set():
            raise DatabaseUnavailable(f"database not ready ({self._last_error})")
        return self._reader

    @property
    def relay(self) -> asyncpg.Pool:
        """Where the live relay publishes: a pool of one connection on the relay URL when
        one is set (a PgBouncer pool of its own), else the main pool."""
        if self._relay is not None and self.ready.is_set():
            return self._relay
        return self.pool

    @property
    def status(self) -> str:
        """ "ready", or why not (never the URL): the last connection attempt, query or
        flush that failed, until one succeeds again."""
        if self.ready.is_set() and self._failing is None:
            return "ready"
        return f"unavailable: {self._failing or self._last_error}"

    def note_failure(self, reason: str) -> None:
        """A query or flush failed for a database reason: readiness says so."""
        if self._failing is None:
            log.warning("database unavailable: %s", reason)
        self._failing = reason

    def note_success(self) -> None:
        if self._failing is not None:
            log.info("database available again")
        self._failing = None

    async def start(self, *, wait: bool = False) -> None:
        """Begin connecting; with `wait`, return only when ready or raise the reason."""
        if self.settings.database_url is not None:
            url = self.settings.database_url.get_secret_value()
        else:
            self._embedded = EmbeddedPostgres(self.settings.data_dir)
            url = await self._embedded.start()
        self._url = url
        if wait:
            await self._connect(url)
        else:
            self._task = asyncio.create_task(self._connect_with_retry(url), name="database")

    async def _create_pool(self, url: str, size: int, role: str = "") -> asyncpg.Pool:
        pooled = self.settings.database_transaction_pooling
        name = f"perfpulse {self.settings.hostname}{role}"
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=0,
            max_size=size,
            reset=_no_session_state,
            connection_class=TransactionPooledConnection if pooled else asyncpg.Connection,
            statement_cache_size=0 if pooled else 100,
            # Which host (and which part) each connection serves, in pg_stat_activity.
            server_settings={"application_name": name[:63]},
        )
        return pool

    async def _connect(self, url: str) -> None:
        try:
            pool = await self._create_pool(url, self.settings.pool_size)
            async with pool.acquire() as conn:
                await migrate(conn)
            reader = (
                await self._create_pool(url, self.settings.history_concurrency, " history")
                if self.settings.dashboard
                else None
            )
            relay_url = self.settings.database_relay_url
            relay = (
                await self._create_pool(relay_url.get_secret_value(), 1, " relay")
                if relay_url is not None and self.settings.collect
                else None
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(describe(exc)) from exc
        self._pool = pool
        self._reader = reader
        self._relay = relay
        if self._on_ready is not None:
            await self._on_ready(pool)
        self.ready.set()

    @property
    def direct_url(self) -> str | None:
        """A URL that reaches PostgreSQL itself, where session state (an advisory lock)
        holds: the main one unless it goes through a transaction pooler, else the listen
        URL when one is set; None when there is none."""
        if not self.settings.database_transaction_pooling:
            return self._url
        if self.settings.database_listen_url is not None:
            return self.settings.database_listen_url.get_secret_value()
        return None

    @property
    def listen_url(self) -> str:
        """Where to LISTEN: a direct URL (a transaction pooler cannot keep a LISTEN)."""
        if self.settings.database_listen_url is not None:
            return self.settings.database_listen_url.get_secret_value()
        if self._url is None:
            raise DatabaseUnavailable("database not started")
        return self._url

    async def _connect_with_retry(self, url: str) -> None:
        delay = 0.5
        while True:
            try:
                await self._connect(url)
            except DatabaseUnavailable as exc:
                self._last_error = str(exc)
                log.error("database unavailable, retrying in %.0fs: %s", delay, exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            else:
                log.info("database ready")
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pool in (self._relay, self._reader, self._pool):
            if pool is not None:
                await pool.close()
        if self._embedded is not None:
            await self._embedded.stop()


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool, or DatabaseUnavailable at once (for the CLI and tests)."""
    database = Database(settings)
    try:
        await database.start(wait=True)
        yield database.pool
    finally:
        await database.stop()


def with_database(settings: Settings, action: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run one database action with a migrated pool, then close it (for the CLI)."""

    async def run() -> T:
        async with open_database(settings) as pool:
            return await action(pool)

    return asyncio.run(run())
