"""Plain ASGI middleware that every request goes through: the Host allow-list, a request
body limit enforced before the body is read, and the browser security headers."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)


class BodyLimit:
    """Reads a request's whole body before the app sees the request, refusing one over
    `max_bytes` with a 413 (at once when Content-Length says so, else as soon as the
    chunks add up past it). Nothing larger is ever buffered, and a client that sends its
    body slowly holds only this small coroutine until the server's body deadline ends it,
    not a request half-way through the app (routing, dependencies, a parsed model)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in: nobody to answer
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {
            "type": "http.request",
            "body": b"".join(chunks),
            "more_body": False,
        }

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": f"request body larger than {self.max_bytes} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# The dashboard needs its own scripts and styles, inline style attributes (ECharts draws
# tooltips with them) and WebSockets to this origin; nothing from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)
# FastAPI's /docs and /redoc load Swagger UI and ReDoc from a CDN (PERFPULSE_API_DOCS).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https:; font-src https://fonts.gstatic.com; "
    "worker-src blob:; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Content-Security-Policy, nosniff, no referrer and no framing on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = CSP if not scope["path"].startswith(DOCS_PATHS) else DOCS_CSP
        extra = [*COMMON, (b"content-security-policy", policy.encode())]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(header for header in extra if header[0] not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostAllowList:
    """Serves only requests whose Host header names this server (400 otherwise).

    A page on an attacker's domain whose DNS answer is re-pointed at this server (DNS
    rebinding) is same-origin with it for the browser, and could read whatever answers
    without a login; its requests carry the attacker's name in Host. IP addresses are
    always allowed (no name to rebind), as are `localhost` and the names in `allowed`:
    exact names, `.example.com` or `*.example.com` for a domain and everything under it,
    `*` for anything.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        names = {_bare(name) for name in allowed if name.strip()}
        self.any = "*" in names
        self.exact = {name for name in names if not name.startswith((".", "*."))}
        self.domains = tuple(
            "." + name.removeprefix("*").removeprefix(".")
            for name in names
            if name.startswith((".", "*."))
        )
        self._reported: set[str] = set()

    def allows(self, host: str) -> bool:
        name = _bare(host)
        if self.any or not name or name in self.exact or name.endswith(self.domains):
            return True
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"")
        text = host.decode("latin-1")
        if self.allows(text):
            await self.app(scope, receive, send)
            return
        shown = text[:100]
        if len(self._reported) < 100 and shown not in self._reported:
            self._reported.add(shown)
            log.info(
                "refused a request for Host %r (not this server's name; "
                "PERFPULSE_ALLOWED_HOSTS lists more)",
                shown,
            )
        body = orjson.dumps(
            {"detail": f"Host {shown!r} is not allowed here; see PERFPULSE_ALLOWED_HOSTS"}
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 400, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def _bare(host: str) -> str:
    """A Host header's name: lower case, no port, no trailing dot (IPv6 keeps brackets)."""
    name = host.strip().lower()
    if name.startswith("["):
        return name.partition("]")[0] + "]"
    return name.partition(":")[0].rstrip(".")


def default_allowed_hosts(hostname: str, bind: str, configured: str) -> list[str]:
    """localhost, this machine's names, the bind address's name, and the configured ones."""
    names = ["localhost", ".localhost", hostname, socket.gethostname(), socket.getfqdn()]
    if bind not in ("0.0.0.0", "::", ""):
        names.append(bind)
    names += [item.strip() for item in configured.split(",") if item.strip()]
    return names
