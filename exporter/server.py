"""The uvicorn configuration perfpulse runs under (shared by `serve` and the tests), and
the guards a server reachable without logging in needs: the open-file limit raised,
concurrent connections bounded, and a deadline on request headers so idle or half-sent
connections cannot hold the server's descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from exporter.api.webconfig import load_web_config
from exporter.config import Settings, StartError
from exporter.logs import logging_config
from exporter.sinks.wire import DIRECT_WS, describe_frame_path

log = logging.getLogger(__name__)

WS_PROTOCOL = DIRECT_WS


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    options: dict[str, object] = {
        "http": guarded_protocol(
            max_connections=settings.max_connections or default_max_connections(),
            header_timeout=settings.request_header_timeout_seconds,
        ),
        # X-Forwarded-For is believed only from PERFPULSE_TRUSTED_PROXIES (none by default):
        # anyone else could name any address and dodge the login throttle.
        "proxy_headers": bool(settings.proxies),
        "forwarded_allow_ips": settings.proxies or "",
        "host": settings.host,
        "port": settings.port,
        "log_config": logging_config(settings.log_level),
        "access_log": False,
        "server_header": False,
        # Open WebSockets must not hold a shutdown for long.
        "timeout_graceful_shutdown": 5,
        # Bounds on what a client can send, and keepalive: a client that stops reading
        # stops answering pings and is disconnected after interval + timeout.
        "ws_max_size": settings.ws_max_message_bytes,
        "ws_ping_interval": settings.ws_ping_interval_seconds,
        "ws_ping_timeout": settings.ws_ping_interval_seconds,
        "ws_max_queue": 4,
        # Compression would deflate every snapshot once per client and hold a zlib state
        # (~256 KiB) per connection; a snapshot is a few KiB a second.
        "ws_per_message_deflate": False,
        # The live stream writes pre-built frames straight to this protocol's transport
        # (exporter/sinks/wire.py); any other implementation takes the slower ASGI path.
        "ws": GuardedWebSocketsProtocol,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
    if settings.web_config_file is not None:
        web = load_web_config(settings.web_config_file)
        if web.tls:
            options["ssl_certfile"] = str(web.cert_file)
            options["ssl_keyfile"] = str(web.key_file)
    options.update(overrides)
    ws = options["ws"]
    log.info(
        "live stream: %s",
        describe_frame_path(WS_PROTOCOL if ws is GuardedWebSocketsProtocol else str(ws)),
    )
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


# --- descriptors and connections ----------------------------------------------------

FD_RESERVE = 256  # descriptors kept for the database pool, the perf child, files
MAX_DEFAULT_CONNECTIONS = 16_384
# Bytes a WebSocket may hold unread in this process before it is dropped: a few
# snapshots' worth (the kernel's socket buffer absorbs a slow reader long before this).
MAX_UNSENT_BYTES = 1 << 20
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 5\r\n"
    b"connection: close\r\ncontent-length: 31\r\n\r\ntoo many connections, try later\n"
)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections() -> int:
    """What the open-file limit allows, less a reserve, at most 16,384."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    return max(16, min(MAX_DEFAULT_CONNECTIONS, limit - FD_RESERVE))


class Server(uvicorn.Server):
    """uvicorn's server, woken once a second instead of ten times.

    uvicorn polls every 0.1 s for a shutdown request and refreshes the Date header every
    tenth poll. Here the loop sleeps until the next second (the Date header's resolution)
    or until a shutdown signal wakes it: an idle exporter wakes for its own work, not for
    the poll, and a signal is acted on as quickly as before.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not await self.on_tick(0):  # counter 0: refresh the Date header each time
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._wake_up()

    def exit_soon(self) -> None:
        """Ask the server to shut down, from any thread."""
        self.should_exit = True
        self._wake_up()

    def _wake_up(self) -> None:
        if self._loop is not None and self._wake is not None:
            # RuntimeError: the loop has already closed, nothing is left to wake.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)


class PortInUse(StartError):
    """The address cannot be bound; the message says which and why."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts (uvicorn listens on it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUse(f"cannot resolve PERFPULSE_HOST {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with two guards.

    - At most `max_connections` connections (stream clients included) are served; one
      more gets a 503 and is closed at once, before it can hold a descriptor.
    - A connection must send complete request headers within `header_timeout` seconds of
      connecting (or of its previous response): idle sockets and half-sent requests or
      WebSocket handshakes are closed instead of being held open for ever.
    """

    max_connections = MAX_DEFAULT_CONNECTIONS
    header_timeout = 5.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.server_state.connections) > self.max_connections:
            transport.write(BUSY)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # the headers are in: the request is being served

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(*, max_connections: int, header_timeout: float) -> type[H11Protocol]:
    """A GuardedH11Protocol class with these bounds (uvicorn takes a class as `http`)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"max_connections": max_connections, "header_timeout": header_timeout},
    )


class GuardedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol (the one the stream writes frames to directly),
    dropping a connection that holds more than MAX_UNSENT_BYTES unread.

    websockets answers every ping as it is parsed, even before the app has accepted: a
    client that sends pings and never reads makes the pongs pile up in this process. The
    check runs on every read from the client, so the pile never grows past the bound.
    """

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES and not transport.is_closing():
            log.info("WebSocket client dropped: %d bytes unread", transport.get_write_buffer_size())
            transport.abort()
