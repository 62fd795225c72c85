"""GET /api/ws/metrics: the authenticated live stream of snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, HTTPException, WebSocket
from starlette.websockets import WebSocketDisconnect

from exporter.api.deps import (
    AccessDep,
    BroadcasterDep,
    DatabaseDep,
    FleetDep,
    SecretDep,
    SessionsDep,
    SettingsDep,
    proxy_session,
)
from exporter.auth.access import may_see, sees_all
from exporter.auth.proxy import ProxyAuth
from exporter.auth.sessions import TooManyStreams
from exporter.auth.tokens import Claims, TokenError, session_for_token
from exporter.config import Settings
from exporter.fleet.listener import FleetListener, TooManyChannels, send_fleet
from exporter.protocols import ADMIT_EXTENSION
from exporter.sinks.protocol import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    SUBPROTOCOL,
    TOO_MANY_MESSAGES,
    TRY_AGAIN_LATER,
)
from exporter.sinks.stream import Broadcaster, Client, close_within, send_until_evicted
from exporter.sinks.wire import EXTENSION, DirectWriter, abort_later
from exporter.storage import history as reads
from exporter.storage.database import DATABASE_ERRORS, Database, describe
from exporter.storage.users import User

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

CLOSE_GRACE_SECONDS = 2.0


def token_from(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to echo): `Sec-WebSocket-Protocol: bearer, <token>` or `?token=`."""
    offered = websocket.scope.get("subprotocols") or []
    if len(offered) >= 2 and offered[0].lower() == SUBPROTOCOL:
        return offered[1], offered[0]
    return websocket.query_params.get("token"), None


def origin_allowed(websocket: WebSocket, allowed: frozenset[str]) -> bool:
    """Browsers always send Origin: it must be this server or a configured origin.

    Clients that are not browsers send none and cannot be hijacked cross-site.
    """
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in allowed:
        return True
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


@router.websocket("/api/ws/metrics")
async def metrics_stream(
    websocket: WebSocket,
    settings: SettingsDep,
    database: DatabaseDep,
    broadcaster: BroadcasterDep,
    fleet: FleetDep,
    secret: SecretDep,
    sessions: SessionsDep,
    access: AccessDep,
) -> None:
    token, subprotocol = token_from(websocket)
    extensions = websocket.scope.get("extensions", {})
    raw_send = extensions.get(EXTENSION)
    # The protocol reads nothing past the handshake until told the client is checked.
    admitted_by_protocol = extensions.get(ADMIT_EXTENSION, lambda: None)
    try:
        # Admission (accept, origin, token) has the same deadline as request headers: a
        # client that stops reading cannot hold the handler here.
        async with asyncio.timeout(settings.request_header_timeout_seconds):
            admitted = await _admit(
                websocket, raw_send, subprotocol, token, settings, database, secret, access.proxy
            )
    except TimeoutError:
        abort_later(raw_send, 0)
        return
    finally:
        admitted_by_protocol()
    if admitted is None:
        return
    user, claims = admitted
    target = _target(websocket.query_params.get("host"), settings, broadcaster, fleet, user)
    if isinstance(target, tuple):
        await _refuse(websocket, raw_send, *target)
        return
    backfill = _backfill_seconds(websocket.query_params.get("backfill"))
    if backfill is None or (backfill and isinstance(target, _Fleet)):
        if isinstance(target, _Relayed):
            target.fleet.release_channel(target.host)
        await _refuse(
            websocket,
            raw_send,
            POLICY_VIOLATION,
            f"backfill: whole seconds from 1 to {MAX_BACKFILL_SECONDS}, on one host's stream",
        )
        return
    closing: set[asyncio.Task[None]] = set()

    def close_session(reason: str) -> None:
        """Called by the session sweeper or a logout: the user is gone, changed password
        or logged this token out."""
        task = asyncio.create_task(_refuse(websocket, raw_send, POLICY_VIOLATION, reason))
        closing.add(task)
        task.add_done_callback(closing.discard)

    try:
        session = sessions.open(
            user.username,
            claims.version,
            claims.token_id,
            close_session,
            (user.role, tuple(user.hosts)),
        )
    except TooManyStreams:
        if isinstance(target, _Relayed):
            target.fleet.release_channel(target.host)
        await _refuse(
            websocket,
            raw_send,
            TOO_MANY_MESSAGES,
            f"too many streams for this user (at most {sessions.max_per_user})",
        )
        return
    log.debug("stream client connected: %s", user.username)
    expires_in = (claims.expires_at - datetime.now(UTC)).total_seconds()
    try:
        async with asyncio.timeout(max(0.0, expires_in)):
            if isinstance(target, _Fleet):
                await _stream_fleet(websocket, target, settings)
            else:
                host = target.host if isinstance(target, _Relayed) else settings.hostname
                first = (
                    (lambda: _backfill(database, host, backfill, settings)) if backfill else None
                )
                channel = target.channel if isinstance(target, _Relayed) else target
                await _stream_snapshots(websocket, raw_send, channel, settings, first)
    except TimeoutError:
        await _refuse(websocket, raw_send, POLICY_VIOLATION, "token expired")
    finally:
        sessions.end(session)
        if isinstance(target, _Relayed):
            target.fleet.release_channel(target.host)


@dataclass(frozen=True, slots=True)
class _Relayed:
    """Another host's stream, relayed through PostgreSQL by this instance's listener."""

    fleet: FleetListener
    host: str
    channel: Broadcaster


@dataclass(frozen=True, slots=True)
class _Fleet:
    """The fleet list, of the hosts this user may see."""

    fleet: FleetListener
    sees: Callable[[str], bool] | None


def _target(
    requested: str | None,
    settings: Settings,
    local: Broadcaster,
    fleet: FleetListener | None,
    user: User,
) -> Broadcaster | _Fleet | _Relayed | tuple[int, str]:
    """What `?host=` asks for: this host's stream (no host, or its own name), the fleet
    list (`*`), another host's relayed stream; or (close code, reason). A host outside the
    user's scope is refused exactly as a host that does not exist."""
    if requested is None or (settings.collect and requested == settings.hostname):
        if not settings.collect:
            return POLICY_VIOLATION, "this instance collects no host: pass host=NAME or host=*"
        if not may_see(user, settings.hostname):
            if requested is None:
                return (
                    POLICY_VIOLATION,
                    "this instance collects no host you may see: pass host=NAME or host=*",
                )
            return POLICY_VIOLATION, "unknown host"
        return local
    if (
        not requested
        or len(requested) > 255
        or any(ord(c) < 32 or ord(c) == 127 for c in requested)
    ):
        return POLICY_VIOLATION, "invalid host"
    if fleet is None:  # the embedded database: this host alone
        return POLICY_VIOLATION, "no fleet: this instance's embedded database holds one host"
    if not fleet.ready.is_set():
        return TRY_AGAIN_LATER, "fleet not available yet (database unreachable), try again later"
    if requested == "*":
        return _Fleet(fleet, None if sees_all(user) else functools.partial(may_see, user))
    if not fleet.knows(requested) or not may_see(user, requested):
        return POLICY_VIOLATION, "unknown host"
    try:
        return _Relayed(fleet, requested, fleet.open_channel(requested))
    except TooManyChannels:
        return TRY_AGAIN_LATER, "too many hosts streamed from this instance, try again later"


MAX_BACKFILL_SECONDS = 600
BACKFILL_TIMEOUT_SECONDS = 5.0


def _backfill_seconds(text: str | None) -> int | None:
    """`?backfill=SECONDS`: 0 without it; None when it is not 1 to MAX_BACKFILL_SECONDS."""
    if text is None:
        return 0
    if not text.isdigit() or not 1 <= int(text) <= MAX_BACKFILL_SECONDS:
        return None
    return int(text)


async def _backfill(database: Database, host: str, seconds: int, settings: Settings) -> str:
    """The stream's first message with `?backfill=`: the host's stored snapshots of the
    last `seconds`, from the hot tier (what every host's batch writer has stored; a few
    seconds behind live), as `{"type": "backfill", "host", "snapshots": [...]}`; live
    snapshots follow. An unreachable database gives no snapshots and says why."""
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    limit = min(MAX_BACKFILL_SECONDS, int(seconds / settings.sampling_interval_seconds) + 1)
    message: dict[str, object] = {"type": "backfill", "host": host, "snapshots": []}
    try:
        async with asyncio.timeout(BACKFILL_TIMEOUT_SECONDS):
            message["snapshots"] = await reads.recent(database.reader, host, since, limit)
    except DATABASE_ERRORS as exc:
        message["error"] = f"history unavailable: {describe(exc)}"
    return orjson.dumps(message).decode()


async def _stream_snapshots(
    websocket: WebSocket,
    raw_send: object,
    broadcaster: Broadcaster,
    settings: Settings,
    first: Callable[[], Awaitable[str]] | None = None,
) -> None:
    client = broadcaster.connect()  # live snapshots queue from here: none missed
    if first is not None:
        try:
            async with asyncio.timeout(settings.ws_send_timeout_seconds):
                await websocket.send_text(await first())
        except TimeoutError:
            broadcaster.disconnect(client)
            await close_within(websocket, TRY_AGAIN_LATER, "too slow: not reading")
            return
    client.direct = DirectWriter.for_send(raw_send)
    # One extra task per client (the sender); receiving happens in this one. Every task
    # is a few KiB at thousands of clients.
    sender = asyncio.create_task(
        send_until_evicted(websocket, client, settings.ws_send_timeout_seconds)
    )
    try:
        await _receive(websocket, client, broadcaster, settings)
    finally:
        broadcaster.disconnect(client)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _stream_fleet(websocket: WebSocket, target: _Fleet, settings: Settings) -> None:
    fleet = target.fleet
    client = fleet.connect_fleet(target.sees)
    sender = asyncio.create_task(send_fleet(websocket, client, settings.ws_send_timeout_seconds))
    try:
        await _receive(websocket, None, None, settings)
    finally:
        fleet.disconnect_fleet(client)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _admit(
    websocket: WebSocket,
    raw_send: object,
    subprotocol: str | None,
    token: str | None,
    settings: Settings,
    database: Database,
    secret: bytes,
    proxy: ProxyAuth,
) -> tuple[User, Claims] | None:
    """Accept, then check origin and token (or, without one, the user a trusted SSO proxy
    names); None (closed with the reason) if refused."""
    # Accept first, then close with a reason: a close before accept reaches the browser as
    # 1006 with no reason, and the dashboard could not tell a bad token from a dead server.
    await websocket.accept(subprotocol=subprotocol)
    if not origin_allowed(websocket, settings.origins):
        await _refuse(websocket, raw_send, POLICY_VIOLATION, "origin not allowed")
        return None
    try:
        if not token:
            found = await proxy_session(websocket, database.pool, proxy)
            if found is None:
                await _refuse(websocket, raw_send, POLICY_VIOLATION, "missing token")
            return found
        return await session_for_token(database.pool, secret, token)
    except HTTPException as exc:
        await _refuse(websocket, raw_send, POLICY_VIOLATION, str(exc.detail))
    except TokenError as exc:
        await _refuse(websocket, raw_send, POLICY_VIOLATION, str(exc))
    except DATABASE_ERRORS as exc:
        database.note_failure(describe(exc))
        await _refuse(websocket, raw_send, TRY_AGAIN_LATER, "database unavailable, try again later")
    return None


async def _refuse(websocket: WebSocket, raw_send: object, code: int, reason: str) -> None:
    """Close with `code` and `reason`; a client that does not answer the close within
    CLOSE_GRACE_SECONDS (it may not be reading at all) is dropped."""
    await close_within(websocket, code, reason)
    abort_later(raw_send, CLOSE_GRACE_SECONDS)


async def _receive(
    websocket: WebSocket,
    client: Client | None,
    broadcaster: Broadcaster | None,
    settings: Settings,
) -> None:
    """Handle `{"resume_from": seq}`, or `{"resume_from": seq, "limit": n}` for only the
    newest n missed snapshots (what the client's window holds); the fleet list has nothing
    to resume: it starts whole. Anything too fast or malformed ends the connection."""
    window_start, count = time.monotonic(), 0
    resumed = False
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        now = time.monotonic()
        if now - window_start >= 1.0:
            window_start, count = now, 0
        count += 1
        if count > settings.ws_max_messages_per_second:
            await close_within(websocket, TOO_MANY_MESSAGES, "too many messages")
            return
        raw = message.get("text") or message.get("bytes") or b""
        # uvicorn refuses larger frames itself (ws_max_size); this holds under any server.
        if len(raw) > settings.ws_max_message_bytes:
            await close_within(websocket, MESSAGE_TOO_BIG, "message too big")
            return
        resume_from, limit = _resume_request(raw, settings.ws_resume_buffer)
        if resume_from is None:
            await close_within(
                websocket,
                INVALID_PAYLOAD,
                'expected {"resume_from": <seq>} or {"resume_from": <seq>, "limit": <n>}',
            )
            return
        if resumed:
            # A replay can be the whole resume buffer: one per connection.
            await close_within(websocket, TOO_MANY_MESSAGES, "one resume_from per connection")
            return
        resumed = True
        if client is not None and broadcaster is not None:
            client.resume(broadcaster.since(resume_from, limit))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resume_request(raw: str | bytes, most: int) -> tuple[int | None, int | None]:
    """(resume_from, limit) from a client's message; (None, None) if malformed."""
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(request, dict) or not set(request) <= {"resume_from", "limit"}:
        return None, None
    resume_from, limit = request.get("resume_from"), request.get("limit", most)
    if not _is_int(resume_from) or not _is_int(limit) or limit < 0:
        return None, None
    return resume_from, min(limit, most)
