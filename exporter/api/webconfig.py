"""PERFPULSE_WEB_CONFIG_FILE: exporter-toolkit's web configuration, as node_exporter reads it.

```yaml
tls_server_config:
  cert_file: server.crt      # relative paths are relative to this file
  key_file: server.key
basic_auth_users:
  prometheus: $2y$10$...     # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')
```

TLS covers the whole server; basic auth guards /metrics (the API and the live stream
have their own tokens).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.auth.throttle import LoginThrottle
from exporter.config import ConfigError

KNOWN_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}


BCRYPT_MAX_BYTES = 72  # bcrypt ignores (newer releases refuse) anything longer
# bcrypt checks running at one time (each ~50-250 ms of a core): one core stays free for
# the event loop, whatever a flood of bad scrapes does.
CHECKS_AT_ONCE = max(1, min(2, (os.cpu_count() or 2) - 1))
CHECKS_WAITING = 8  # more scrapes waiting than this are refused at once
CACHE_SIZE = 64  # credentials recently verified


class ScrapeRefused(Exception):
    """Too many failed or waiting scrapes: answer 429 or 503 rather than check."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class WebConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    # bcrypt costs ~50 ms a check: a scraper every second must not pay it each time.
    _verified: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    _throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(10, 60.0))
    _checks: asyncio.Semaphore | None = None
    _waiting: int = 0

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    async def check(self, authorization: str | None, client: str = "") -> bool:
        """True if no users are configured or the Basic credentials match one.

        bcrypt runs on a thread, two at a time; an unknown user costs a check against a
        dummy hash like a wrong password does (the name does not leak by timing);
        failures are throttled per client (ScrapeRefused 429) and a queue of waiting
        checks is bounded (ScrapeRefused 503).
        """
        if not self.users:
            return True
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        if not sep:
            return False
        stored = self.users.get(username)
        secret = password.encode()
        if stored is not None:
            digest = hashlib.sha256(stored + b"\0" + secret).digest()
            if digest in self._verified:
                self._verified.move_to_end(digest)
                return True
        if self._throttle.retry_after(client) > 0:
            raise ScrapeRefused(429, "too many failed scrapes; try again later")
        if self._waiting >= CHECKS_WAITING:
            raise ScrapeRefused(503, "too many scrapes waiting for a credential check")
        self._throttle.failed(client)  # counted before the check, as logins are
        ok = await self._bcrypt(secret, stored)
        if ok and stored is not None:
            self._throttle.forgive(client)
            self._verified[digest] = None
            while len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
            return True
        return False

    def _cost(self) -> int:
        """The configured hashes' highest bcrypt cost: an unknown user is checked against a
        dummy hash of that cost, so it takes as long as a known one."""
        return max((_cost_of(h) for h in self.users.values()), default=10)

    async def _bcrypt(self, secret: bytes, stored: bytes | None) -> bool:
        if self._checks is None:
            self._checks = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._waiting += 1
        try:
            async with self._checks:
                return await asyncio.to_thread(_checkpw, secret, stored, self._cost())
        finally:
            self._waiting -= 1


@functools.cache
def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))


def _cost_of(hashed: bytes) -> int:
    """The cost in a `$2b$12$...` hash (10 if it cannot be read)."""
    parts = hashed.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 10


def _checkpw(secret: bytes, stored: bytes | None, dummy_cost: int = 10) -> bool:
    """bcrypt, costing the same for an unknown user, and False for an over-long secret."""
    target = stored if stored is not None else _dummy_hash(min(max(dummy_cost, 4), 31))
    too_long = len(secret) > BCRYPT_MAX_BYTES
    try:
        ok = bcrypt.checkpw(secret[:BCRYPT_MAX_BYTES], target)
    except ValueError:
        return False
    return ok and stored is not None and not too_long


def load_web_config(path: Path) -> WebConfig:
    """Parse and check the file; every problem is a ConfigError naming the file and key."""
    name = f"PERFPULSE_WEB_CONFIG_FILE ({path})"
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping at the top")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{name}: unknown keys {', '.join(sorted(unknown))}")
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
            raise ConfigError(f"{name}: tls_server_config needs cert_file and key_file")
        config.cert_file = _relative(path, tls["cert_file"], name)
        config.key_file = _relative(path, tls["key_file"], name)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(f"{name}: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{name}: basic_auth_users.{user} is not a bcrypt hash")
        config.users[str(user)] = hashed.encode()
    return config


def _relative(config_path: Path, value: str, name: str) -> Path:
    resolved = (config_path.parent / value).resolve()
    if not resolved.is_file():
        raise ConfigError(f"{name}: {value} does not exist")
    return resolved
