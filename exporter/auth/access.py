"""Who may do and see what: roles, host scopes, API tokens for programs, and the audit log.

- Roles: `admin` (everything, including users, tokens and removing hosts) and `viewer`
  (reads what its host scope allows).
- Host scopes: glob patterns (`web-*`, `db-1`; `*` is every host). A host outside a user's
  scope answers exactly as a host that does not exist, so the fleet's shape does not leak.
- API tokens: `pp_` + 32 random bytes (URL-safe base64), shown once; only the SHA-256 of
  a token is stored. A token acts as its user, never more.
- Audit: one line per login, token and user change (exporter/logs.py, `audit`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta
from fnmatch import fnmatchcase

from exporter.storage.users import ALL_HOSTS, ROLES, User

TOKEN_PREFIX = "pp_"
TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"^pp_[A-Za-z0-9_-]{43}$")
MAX_PATTERNS = 64
_PATTERN = re.compile(r"^[^\x00-\x1f\x7f,\s]{1,255}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_DURATION = re.compile(r"^(\d{1,5})([hdwy])$")
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class AccessError(ValueError):
    """A role, host pattern, token name or expiry that cannot be used; says why."""


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccessError(f"role must be one of {', '.join(ROLES)}")
    return role


def parse_hosts(text: str | Iterable[str]) -> list[str]:
    """`'web-*,db-1'` (or a list) as host patterns; `*` alone is every host."""
    items = text.split(",") if isinstance(text, str) else list(text)
    patterns = [item.strip() for item in items if item.strip()]
    if not patterns:
        raise AccessError("hosts: at least one pattern (* for every host)")
    if len(patterns) > MAX_PATTERNS:
        raise AccessError(f"hosts: at most {MAX_PATTERNS} patterns")
    for pattern in patterns:
        if not _PATTERN.match(pattern):
            raise AccessError(f"hosts: {pattern!r} is not a host name or glob pattern")
    return ALL_HOSTS if "*" in patterns else sorted(set(patterns))


def may_see(user: User, host: str) -> bool:
    """Whether `host` is in the user's scope (globs, case-sensitive as host names are)."""
    return any(pattern == "*" or fnmatchcase(host, pattern) for pattern in user.hosts)


def sees_all(user: User) -> bool:
    return "*" in user.hosts


def check_token_name(name: str) -> str:
    if not _NAME.match(name):
        raise AccessError(
            "a token name is 1 to 64 letters, digits and _ . @ -, starting with a letter or digit"
        )
    return name


def parse_expiry(text: str | None) -> timedelta | None:
    """`90d`, `12h`, `8w`, `1y`, or None / `never` for a token that does not expire."""
    if text is None or text == "never":
        return None
    match = _DURATION.match(text.strip())
    if not match or int(match[1]) == 0:
        raise AccessError(f"expiry {text!r} is not like 12h, 90d, 8w, 1y or never")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


API_TOKEN_ID = "api:"  # a session opened with an API token: "api:<id>"


def api_token_id(session_id: str) -> int | None:
    """The API token a session id (a JWT's `jti`, or `api:<id>`) names, if any."""
    return int(session_id[4:]) if session_id.startswith(API_TOKEN_ID) else None


def is_api_token(credential: str) -> bool:
    return credential.startswith(TOKEN_PREFIX)
