"""The HTTP and WebSocket protocols perfpulse serves under: uvicorn's, with the bounds a
server reachable without logging in needs.

- Connections: at most `max_connections` in all, and at most `per_client` from one client
  address (an IPv6 client's whole /64), so no single address can take every slot; trusted
  proxies, which carry many clients, are exempt. One more gets a 503 and is closed at once.
- Time: a request's headers must arrive within `header_timeout` of connecting (or of the
  previous response), and its body within `body_timeout` of its headers; a slow or
  stalled request is answered 408 and closed.
- WebSocket: nothing is read past the handshake until the app has decided on the
  connection (`ADMIT_EXTENSION`); control frames (pings, pongs) are limited per second;
  more than MAX_UNSENT_BYTES left unread drops the connection; invalid UTF-8 and malformed
  frames close with their code and one line at INFO.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger(__name__)

MAX_DEFAULT_CONNECTIONS = 16_384
# Bytes a WebSocket may hold unread in this process before it is dropped: a few
# snapshots' worth (the kernel's socket buffer absorbs a slow reader long before this).
MAX_UNSENT_BYTES = 1 << 20
# The app calls scope["extensions"][ADMIT_EXTENSION]() once it has accepted or refused.
ADMIT_EXTENSION = "perfpulse.admitted"


def _refusal(status: str, text: str, retry: bool) -> bytes:
    body = text.encode() + b"\n"
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n"
    if retry:
        head += "retry-after: 5\r\n"
    head += f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


BUSY = _refusal("503 Service Unavailable", "too many connections, try later", retry=True)
BUSY_CLIENT = _refusal(
    "503 Service Unavailable", "too many connections from this address, try later", retry=True
)
TOO_SLOW = _refusal("408 Request Timeout", "request not received in time", retry=False)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionLimiter:
    """Open connections per client address: an IPv4 address, or an IPv6 /64 (what one
    subscriber is usually given). Addresses in `exempt` (trusted proxies) are not bounded."""

    def __init__(self, per_client: int, exempt: Sequence[str] = ()) -> None:
        self.per_client = per_client
        self._exempt: list[Network] = [ipaddress.ip_network(e, strict=False) for e in exempt]
        self._open: Counter[str] = Counter()
        self.refused_total = 0

    def key(self, host: str) -> str | None:
        """The bucket `host` counts in; None when it is not bounded."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None  # a Unix socket: no address to tell clients apart
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._exempt):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def acquire(self, host: str) -> tuple[bool, str | None]:
        """(admitted, the key to release later)."""
        key = self.key(host)
        if key is None:
            return True, None
        if self._open[key] >= self.per_client:
            self.refused_total += 1
            return False, None
        self._open[key] += 1
        return True, key

    def release(self, key: str | None) -> None:
        if key is None:
            return
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]

    def open_for(self, host: str) -> int:
        key = self.key(host)
        return self._open[key] if key is not None else 0


class _Slot:
    """A connection's place in the limiter, released exactly once (it moves from the
    HTTP protocol to the WebSocket one on upgrade)."""

    __slots__ = ("_key", "_limiter")

    def __init__(self, limiter: ConnectionLimiter | None, key: str | None) -> None:
        self._limiter, self._key = limiter, key

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.release(self._key)
            self._limiter = None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the connection and time bounds of the module doc."""

    max_connections = MAX_DEFAULT_CONNECTIONS
    header_timeout = 5.0
    body_timeout = 10.0
    limiter: ConnectionLimiter | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._body_of: object = None  # the request cycle whose body is being waited for
        self.slot = _Slot(None, None)
        super().connection_made(transport)
        if len(self.server_state.connections) > self.max_connections:
            self._refuse(BUSY)
            return
        if self.limiter is not None and self.client is not None:
            admitted, key = self.limiter.acquire(self.client[0])
            if not admitted:
                self._refuse(BUSY_CLIENT)
                return
            self.slot = _Slot(self.limiter, key)
        self._arm(self.header_timeout)

    def _refuse(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        if cycle.more_body:
            if self._body_of is not cycle:  # the headers are in: now the body's deadline
                self._body_of = cycle
                self._arm(self.body_timeout)
        elif self._body_of is not None or self._deadline is not None:
            self._body_of = None
            self._disarm()  # the whole request is in: it is being served

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()
        super().handle_websocket_upgrade(event)
        protocol = self.transport.get_protocol()
        if isinstance(protocol, GuardedWebSocketsProtocol):
            protocol.slot, self.slot = self.slot, _Slot(None, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._body_of = None
        if not self.transport.is_closing():
            self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.slot.release()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.response_started:
            # The app is waiting for a body that does not come: tell the client why, and
            # the app sees a disconnect.
            self.transport.write(TOO_SLOW)
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class GuardedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol (the one the stream writes frames to directly)
    with the WebSocket bounds of the module doc.

    websockets answers every ping as it is parsed, even before the app has accepted: a
    client that sends pings and never reads makes the pongs pile up in this process, and
    one that sends them fast makes the server spend a core answering. Reads stop after
    the handshake until the app has admitted the connection, control frames past
    `max_control_per_second` drop it, and the unread bytes are checked on every read.
    """

    max_control_per_second = 10.0
    clock: Callable[[], float] = time.monotonic

    def connection_made(self, transport: Any) -> None:
        self.slot: _Slot = getattr(self, "slot", _Slot(None, None))
        self._held = False
        self._control_window = 0.0
        self._control_count = 0
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.slot.release()
        super().connection_lost(exc)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.close_sent or self.transport.is_closing():
            return  # the handshake was refused
        # Nothing more is read (pings included) until the app has checked the client.
        self._held = True
        self.transport.pause_reading()
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[ADMIT_EXTENSION] = self.admitted

    def admitted(self) -> None:
        """The app has accepted or refused: read again (a refused client's close reply)."""
        if self._held:
            self._held = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES and not transport.is_closing():
            log.info("WebSocket client dropped: %d bytes unread", transport.get_write_buffer_size())
            transport.abort()

    def handle_ping(self) -> None:
        if self._control_frame():
            super().handle_ping()

    def handle_pong(self, event: Any) -> None:
        if self._control_frame():
            super().handle_pong(event)

    def _control_frame(self) -> bool:
        """Count one control frame; False (and the connection dropped) past the rate."""
        now = self.clock()
        if now - self._control_window >= 1.0:
            self._control_window, self._control_count = now, 0
        self._control_count += 1
        if self._control_count <= self.max_control_per_second:
            return True
        if not self.transport.is_closing():
            log.info(
                "WebSocket client dropped: more than %g control frames a second",
                self.max_control_per_second,
            )
            self.transport.abort()
        return False

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError:
                self.frames = []
                log.info("WebSocket client sent invalid UTF-8: closed with 1007")
                self.conn.send_close(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        if self.conn.parser_exc is not None:
            close = self.conn.close_sent
            log.info(
                "WebSocket client sent a malformed frame: closed with %s (%s)",
                close.code if close else "no code",
                self.conn.parser_exc,
            )
        super().handle_parser_exception()


def guarded_protocols(
    *,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    per_client: int,
    exempt: Sequence[str] = (),
    max_control_per_second: float = 10.0,
) -> tuple[type[GuardedH11Protocol], type[GuardedWebSocketsProtocol]]:
    """The two protocol classes with these bounds, sharing one connection limiter
    (uvicorn takes classes, and builds one instance per connection)."""
    limiter = ConnectionLimiter(per_client, exempt)
    http = type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "max_connections": max_connections,
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "limiter": limiter,
        },
    )
    ws = type(
        "GuardedWebSocketsProtocol",
        (GuardedWebSocketsProtocol,),
        {"max_control_per_second": max_control_per_second},
    )
    return http, ws
