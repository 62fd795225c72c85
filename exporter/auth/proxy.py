"""Single sign-on through a trusted proxy: PERFPULSE_AUTH_PROXY_HEADER names the user.

oauth2-proxy, an ingress with external auth, or any proxy that has already logged the
person in sets a header (`X-Forwarded-User: alice`). perfpulse believes it only when the
request's peer, the TCP connection itself (not X-Forwarded-For, which anyone can write),
is one of PERFPULSE_TRUSTED_PROXIES; from any other address the header is ignored, and
that is logged once per address. A named user who does not exist is refused, or created
as a viewer with PERFPULSE_AUTH_PROXY_AUTO_CREATE (with no password: it can only come in
through the proxy).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

import asyncpg

from exporter.config import Settings
from exporter.logs import audit
from exporter.storage import users
from exporter.storage.users import User

log = logging.getLogger(__name__)

# Where the server keeps the TCP peer before X-Forwarded-For rewrites `client`.
PEER_KEY = "perfpulse.peer"
NO_PASSWORD = "!sso: no password, logs in through the proxy only"
MAX_NAME = 64
_TOLD_LIMIT = 1024


class ProxyAuth:
    def __init__(self, settings: Settings) -> None:
        header = settings.auth_proxy_header
        self.header = header.lower().encode() if header else None
        self.header_name = header
        self.auto_create = settings.auth_proxy_auto_create
        self.networks = [ipaddress.ip_network(p, strict=False) for p in settings.proxies]
        self._told: set[str] = set()
        self._seen: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.header is not None

    def named(self, scope: Mapping[str, Any]) -> str | None:
        """The user the proxy names on this request, or None (no header, or not from a
        trusted proxy: then ignored, and logged once per address)."""
        if self.header is None:
            return None
        values = [v for k, v in scope.get("headers", ()) if k == self.header]
        if not values:
            return None
        peer = scope.get(PEER_KEY) or (scope.get("client") or ("",))[0]
        if not self._trusted(peer):
            if peer not in self._told and len(self._told) < _TOLD_LIMIT:
                self._told.add(peer)
                log.warning(
                    "ignored %s from %s: not one of PERFPULSE_TRUSTED_PROXIES",
                    self.header_name,
                    peer,
                )
            return None
        if len(values) != 1:
            return None  # two proxies disagreeing, or a client's header passed along
        try:
            name: str = values[0].decode().strip()
        except UnicodeDecodeError:
            return None
        if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
            return None
        return name

    def _trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def user(self, pool: asyncpg.Pool, name: str, address: str) -> User | None:
        """The named user (created as a viewer where allowed); None when refused."""
        user = await users.get(pool, name)
        if user is None and self.auto_create:
            user = await users.create(pool, name, NO_PASSWORD) or await users.get(pool, name)
            if user is not None:
                audit("user_created", user=name, role=user.role, by="proxy", address=address)
        if user is None:
            if name not in self._seen and len(self._seen) < _TOLD_LIMIT:
                self._seen.add(name)
                audit("login", outcome="failure", user=name, address=address, via="proxy")
            return None
        if name not in self._seen and len(self._seen) < _TOLD_LIMIT:
            self._seen.add(name)
            audit("login", outcome="success", user=name, address=address, via="proxy")
        return user


class RememberPeer:
    """ASGI: keep the TCP peer's address in the scope before anything (X-Forwarded-For
    from a trusted proxy) rewrites `client`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client = scope.get("client")
        if client:
            scope[PEER_KEY] = client[0]
        await self.app(scope, receive, send)
