"""Writing a pre-built WebSocket frame straight to a connection, when the server allows.

Every stream client receives the same bytes for a snapshot. Through ASGI, each send
re-encodes the text and re-frames it per client; at thousands of clients that is most
of the server's work (bench/README.md). Under uvicorn's websockets-sansio protocol the
frame can be built once and written to each connection's transport. Anything else (another
server, another protocol class, a paused or closing connection) takes the ASGI path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
EXTENSION = "perfpulse.raw_send"
# The uvicorn protocol (its `ws=` name and class) whose connections DirectWriter can write to.
DIRECT_WS = "websockets-sansio"
DIRECT_PROTOCOL_CLASS = "WebSocketsSansIOProtocol"
_NEEDED = ("transport", "writable", "disconnected", "close_sent", "handshake_complete")

log = logging.getLogger(__name__)
_fallback_logged = False


def describe_frame_path(ws: str) -> str:
    """One line for the start-up log: which path stream frames take under uvicorn's `ws`."""
    if ws == DIRECT_WS:
        return f"frames built once per snapshot, written directly (uvicorn ws={ws})"
    return f"frames sent per client through ASGI (uvicorn ws={ws}, not {DIRECT_WS})"


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (server to client) around UTF-8 `payload`."""
    return WsFrame(Opcode.TEXT, payload).serialize(mask=False)


class RawSendCapture:
    """Plain ASGI middleware: hands WebSocket endpoints the server's own `send` callable
    (Starlette wraps it) under scope["extensions"]["perfpulse.raw_send"]."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), EXTENSION: send}}
        await self.app(scope, receive, send)


class DirectWriter:
    """Writes frames to one connection's transport while it is open and not paused."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def for_send(cls, send: Any) -> DirectWriter | None:
        """A writer for the connection behind `send`, or None where that is not safe."""
        protocol = getattr(send, "__self__", None)
        if (
            protocol is None
            or DIRECT_PROTOCOL_CLASS not in (k.__name__ for k in type(protocol).__mro__)
            or not all(hasattr(protocol, name) for name in _NEEDED)
        ):
            _log_fallback_once(protocol)
            return None
        return cls(protocol)

    def write(self, frame: bytes) -> bool:
        """True if written; False if the caller must queue it (paused, closing, closed)."""
        p = self._protocol
        if p.disconnected or p.close_sent or not p.handshake_complete or not p.writable.is_set():
            return False
        if p.transport.is_closing():
            return False
        p.transport.write(frame)
        return True

    def closed(self) -> bool:
        p = self._protocol
        return bool(p.disconnected or p.close_sent or p.transport.is_closing())

    async def send(self, frame: bytes) -> bool:
        """Write once the connection can take it (not paused); False if it has closed."""
        p = self._protocol
        if self.closed():
            return False
        if not p.writable.is_set():
            await p.writable.wait()
            if self.closed():
                return False
        p.transport.write(frame)
        return True

    def abort(self) -> None:
        """Drop the connection at once (a client whose buffers never drain)."""
        transport = self._protocol.transport
        if not transport.is_closing():
            transport.abort()


def abort_later(send: Any, seconds: float) -> None:
    """Drop the connection behind `send` in `seconds` unless it has closed by then."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return

    def abort() -> None:
        if not transport.is_closing():
            transport.abort()

    asyncio.get_running_loop().call_later(seconds, abort)


def _log_fallback_once(protocol: object) -> None:
    """A uvicorn upgrade that renames what DirectWriter needs slows the stream without
    breaking it: say so once, at the first connection."""
    global _fallback_logged
    if not _fallback_logged and send_is_uvicorn(protocol):
        _fallback_logged = True
        log.warning(
            "live stream: %s connections lack what direct frame writes need; "
            "every frame goes through ASGI (slower with many clients)",
            type(protocol).__name__,
        )


def send_is_uvicorn(protocol: object) -> bool:
    return protocol is not None and type(protocol).__module__.startswith("uvicorn.")
