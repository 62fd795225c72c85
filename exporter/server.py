"""The uvicorn configuration perfpulse runs under (shared by `serve` and the tests): the
guarded protocols (exporter/protocols.py) with the configured bounds, the open-file limit
raised, and a server loop that wakes once a second."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from exporter.api.webconfig import load_web_config
from exporter.auth.proxy import RememberPeer
from exporter.config import Settings, StartError
from exporter.logs import logging_config
from exporter.memory import FloodTrim
from exporter.protocols import MAX_DEFAULT_CONNECTIONS, GuardedWebSocketsProtocol, guarded_protocols
from exporter.sinks.wire import DIRECT_WS, describe_frame_path

log = logging.getLogger(__name__)

WS_PROTOCOL = DIRECT_WS


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    max_connections = settings.max_connections or default_max_connections()
    http, ws = guarded_protocols(
        max_connections=max_connections,
        header_timeout=settings.request_header_timeout_seconds,
        body_timeout=settings.request_body_timeout_seconds,
        per_client=settings.max_connections_per_client or default_per_client(max_connections),
        exempt=settings.proxies,
        max_control_per_second=settings.ws_max_control_frames_per_second,
    )
    options: dict[str, object] = {
        "http": http,
        # X-Forwarded-For is believed only from PERFPULSE_TRUSTED_PROXIES (none by default):
        # anyone else could name any address and dodge the login throttle. Applied below,
        # after the TCP peer is kept (the SSO proxy header is believed by the peer alone).
        "proxy_headers": False,
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
        "ws": ws,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
    if settings.web_config_file is not None:
        web = load_web_config(settings.web_config_file)
        if web.tls:
            options["ssl_certfile"] = str(web.cert_file)
            options["ssl_keyfile"] = str(web.key_file)
    options.update(overrides)
    chosen = options["ws"]
    direct = isinstance(chosen, type) and issubclass(chosen, GuardedWebSocketsProtocol)
    log.info("live stream: %s", describe_frame_path(WS_PROTOCOL if direct else str(chosen)))
    asgi: Any = app
    if settings.proxies:
        asgi = ProxyHeadersMiddleware(asgi, trusted_hosts=settings.proxies)
    return uvicorn.Config(RememberPeer(asgi), **options)  # type: ignore[arg-type]


# --- descriptors and connections ----------------------------------------------------

FD_RESERVE = 256  # descriptors kept for the database pool, the perf child, files


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


def default_per_client(max_connections: int) -> int:
    """An eighth of the connection slots for one client address, and at least 64."""
    return max(64, max_connections // 8)


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

    def __init__(self, config: uvicorn.Config, *, freeze_heap: bool = False) -> None:
        super().__init__(config)
        self.freeze_heap = freeze_heap
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.flood_trim = FloodTrim()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.freeze_heap:
            # Started: what was built to serve (modules, the app, the runtime's parts)
            # lives as long as the process. Frozen, the collector's full passes no longer
            # walk it each time; on a busy machine such a pass had stopped the loop for
            # 37-178 ms (bench/README.md, "fleet"). For the process that serves only:
            # an app started in a test process would keep its objects forever.
            gc.collect()
            gc.freeze()
        while not await self.on_tick(0):  # counter 0: refresh the Date header each time
            self.flood_trim.observe(len(self.server_state.connections))
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
