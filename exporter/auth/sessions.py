"""Live stream sessions: what each open stream was authorized by, re-checked while it runs.

A token is checked once, at connect; a stream can stay open for days. Each stream closes
itself when its token expires (a timer of its own), and one sweeper asks the database
every `recheck_seconds` about the users and tokens that have streams open, closing those
whose user is gone, whose password changed after the token was issued (its token version
moved on), or whose token was logged out on any instance. A logout here closes this
instance's streams of that token at once.

Streams are also counted per user, so that one account cannot hold the server's
connections (`max_per_user`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from exporter.auth.access import api_token_id
from exporter.storage import users
from exporter.storage.database import DATABASE_ERRORS, Database, DatabaseUnavailable, describe

log = logging.getLogger(__name__)

Close = Callable[[str], None]


@dataclass(eq=False)
class Session:
    username: str
    version: int | None  # None: an API token (a password change does not end it)
    token_id: str
    close: Close = field(repr=False)
    access: tuple[str, tuple[str, ...]] = ("", ())  # role and hosts when it opened

    @property
    def api_token_id(self) -> int | None:
        return api_token_id(self.token_id)


class TooManyStreams(Exception):
    """The user has `max_per_user` streams open here already."""


class Sessions:
    """The open streams' sessions, and the sweeper that re-checks them."""

    def __init__(self, recheck_seconds: float = 30.0, max_per_user: int = 32) -> None:
        self.recheck_seconds = recheck_seconds
        self.max_per_user = max_per_user
        self._open: set[Session] = set()
        self._per_user: Counter[str] = Counter()
        self.closed_total = 0

    def open(
        self,
        username: str,
        version: int | None,
        token_id: str,
        close: Close,
        access: tuple[str, tuple[str, ...]] = ("", ()),
    ) -> Session:
        """Count a new stream of `username`; TooManyStreams past the bound. `access` (the
        user's role and hosts now): a stream ends when they change."""
        if self._per_user[username] >= self.max_per_user:
            raise TooManyStreams(username)
        session = Session(username, version, token_id, close, access)
        self._open.add(session)
        self._per_user[username] += 1
        return session

    def end(self, session: Session) -> None:
        if session in self._open:
            self._open.discard(session)
            self._per_user[session.username] -= 1
            if self._per_user[session.username] <= 0:
                del self._per_user[session.username]

    def open_for(self, username: str) -> int:
        return self._per_user[username]

    def revoked(self, token_id: str, reason: str = "token revoked (logged out)") -> int:
        """Close this instance's streams of a token just logged out or revoked; returns
        how many."""
        return self._close([s for s in self._open if s.token_id == token_id], lambda _: reason)

    def changed(self, username: str, reason: str) -> int:
        """Close this instance's streams of a user just changed or deleted."""
        return self._close([s for s in self._open if s.username == username], lambda _: reason)

    def _close(self, sessions: list[Session], reason: Callable[[Session], str]) -> int:
        for session in sessions:
            self.end(session)
            session.close(reason(session))
        self.closed_total += len(sessions)
        return len(sessions)

    async def run(self, database: Database) -> None:
        """Re-check every `recheck_seconds`, until cancelled; a database outage only
        postpones the check (the streams go on)."""
        while True:
            await asyncio.sleep(self.recheck_seconds)
            with contextlib.suppress(DatabaseUnavailable):
                await self.recheck(database.pool)

    async def recheck(self, pool: asyncpg.Pool) -> int:
        """Close the sessions whose user is gone, whose password changed or whose token
        was logged out; returns how many."""
        if not self._open:
            return 0
        names = sorted({s.username for s in self._open})
        api_ids = sorted({i for s in self._open if (i := s.api_token_id) is not None})
        try:
            rows = await pool.fetch(
                "SELECT username, token_version, role, hosts FROM users WHERE username = ANY($1)",
                names,
            )
            revoked = await users.revoked_among(pool, sorted({s.token_id for s in self._open}))
            live = await users.live_api_tokens(pool, api_ids) if api_ids else set()
        except DATABASE_ERRORS as exc:
            log.debug("session recheck postponed: %s", describe(exc))
            return 0
        known = {row["username"]: row for row in rows}

        def reason(session: Session) -> str | None:
            row = known.get(session.username)
            if row is None:
                return "user no longer exists"
            api_id = session.api_token_id
            if api_id is not None and api_id not in live:
                return "token revoked or expired"
            if session.version is not None and session.version != row["token_version"]:
                return "password changed"
            if session.token_id in revoked:
                return "token revoked (logged out)"
            if session.access[0] and session.access != (row["role"], tuple(row["hosts"])):
                return "access changed"
            return None

        ending = {s: why for s in self._open if (why := reason(s)) is not None}
        return self._close(list(ending), ending.__getitem__)
