"""Live stream sessions: what each open stream was authorized by, re-checked while it runs.

A token is checked once, at connect; a stream can stay open for days. Each stream closes
itself when its token expires (a timer of its own), and one sweeper asks the database
every `recheck_seconds` about the users that have streams open, in one query, closing
those whose user is gone or whose password changed after the token was issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from exporter.storage.database import DATABASE_ERRORS, Database, DatabaseUnavailable, describe

log = logging.getLogger(__name__)

Close = Callable[[str], None]


@dataclass(eq=False)
class Session:
    username: str
    issued_at: datetime
    close: Close = field(repr=False)


class Sessions:
    """The open streams' sessions, and the sweeper that re-checks them."""

    def __init__(self, recheck_seconds: float = 30.0) -> None:
        self.recheck_seconds = recheck_seconds
        self._open: set[Session] = set()
        self.closed_total = 0

    def open(self, username: str, issued_at: datetime, close: Close) -> Session:
        session = Session(username, issued_at, close)
        self._open.add(session)
        return session

    def end(self, session: Session) -> None:
        self._open.discard(session)

    async def run(self, database: Database) -> None:
        """Re-check every `recheck_seconds`, until cancelled; a database outage only
        postpones the check (the streams go on)."""
        while True:
            await asyncio.sleep(self.recheck_seconds)
            with contextlib.suppress(DatabaseUnavailable):
                await self.recheck(database.pool)

    async def recheck(self, pool: asyncpg.Pool) -> int:
        """Close the sessions whose user is gone or changed password; returns how many."""
        if not self._open:
            return 0
        names = sorted({s.username for s in self._open})
        try:
            rows = await pool.fetch(
                "SELECT username, password_changed_at FROM users WHERE username = ANY($1)",
                names,
            )
        except DATABASE_ERRORS as exc:
            log.debug("session recheck postponed: %s", describe(exc))
            return 0
        changed = {row["username"]: row["password_changed_at"] for row in rows}
        closed = 0
        for session in list(self._open):
            since = changed.get(session.username)
            if since is None:
                reason = "user no longer exists"
            elif session.issued_at < since.replace(microsecond=0):
                reason = "password changed"
            else:
                continue
            self._open.discard(session)
            session.close(reason)
            closed += 1
        self.closed_total += closed
        return closed
