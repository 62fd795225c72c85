"""Access tokens: JWT, HS256 only, with required claims; the key from settings or the data dir.

A token names its user (`sub`), itself (`jti`, for logout) and the user's token version
when it was issued (`ver`): a password change increments the version, so no token issued
before it, or by a login whose password check was already under way, works after it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from jose import ExpiredSignatureError, JWTError, jwt

from exporter.auth.access import (
    API_TOKEN_ID,
    TOKEN_PATTERN,
    api_token_id,
    is_api_token,
    token_digest,
)
from exporter.config import MIN_SECRET_BYTES, ConfigError, Settings
from exporter.datadir import ensure_private
from exporter.logs import audit
from exporter.storage import users
from exporter.storage.users import User

ALGORITHM = "HS256"
ALGORITHMS = [ALGORITHM]  # the only algorithm decode accepts: no "none", no RS/HS confusion
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti")
MAX_TOKEN_BYTES = 4096
SECRET_FILE = "jwt-secret"
NEVER = timedelta(days=36500)  # an API token without expiry, as a stream's deadline
TOUCH_EVERY = timedelta(minutes=1)


class TokenError(Exception):
    """The token is not acceptable; the message is safe to show (it never echoes the token)."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


def issue_token(
    secret: bytes,
    username: str,
    lifetime: timedelta,
    now: datetime | None = None,
    *,
    version: int = 0,
) -> IssuedToken:
    """A token for `username` at token version `version` (read before the password was
    checked)."""
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    claims = {
        "sub": username,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(16),
        "ver": version,
    }
    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return IssuedToken(token, int(lifetime.total_seconds()))


@dataclass(frozen=True, slots=True)
class Claims:
    """What a credential says: a JWT's claims, or an API token's record (`token_id`
    `api:<id>`, `expires_at` far ahead when it never expires, `version` None: a password
    change does not end it, revoking it does)."""

    subject: str
    issued_at: datetime
    expires_at: datetime
    token_id: str
    version: int | None

    @property
    def api_token_id(self) -> int | None:
        return api_token_id(self.token_id)


def decode_token(secret: bytes, token: str) -> Claims:
    """Verify signature, algorithm and expiry; require exp, iat and sub."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("token too large")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            options={f"require_{claim}": True for claim in REQUIRED_CLAIMS},
        )
    except ExpiredSignatureError:
        raise TokenError("token expired") from None
    except JWTError:
        raise TokenError("invalid token") from None
    subject, token_id, version = claims.get("sub"), claims.get("jti"), claims.get("ver")
    if not isinstance(subject, str) or not subject:
        raise TokenError("invalid token")
    if not isinstance(token_id, str) or not 0 < len(token_id) <= 64:
        raise TokenError("invalid token")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise TokenError("invalid token")
    try:
        return Claims(
            subject,
            datetime.fromtimestamp(int(claims["iat"]), UTC),
            datetime.fromtimestamp(int(claims["exp"]), UTC),
            token_id,
            version,
        )
    except (TypeError, ValueError, OverflowError):
        raise TokenError("invalid token") from None


async def session_for_token(db: asyncpg.Pool, secret: bytes, token: str) -> tuple[User, Claims]:
    """The user a valid token (a JWT, or an API token `pp_...`) speaks for, and its claims
    (a stream needs its expiry); TokenError when it cannot speak for anyone."""
    if is_api_token(token):
        return await _session_for_api_token(db, token)
    claims = decode_token(secret, token)
    found = await users.get_for_token(db, claims.subject, claims.token_id)
    if found is None:
        raise TokenError("user no longer exists")
    user, revoked = found
    if revoked:
        raise TokenError("token revoked (logged out)")
    if claims.version != user.token_version:
        raise TokenError("token issued before the password was changed")
    return user, claims


async def _session_for_api_token(db: asyncpg.Pool, token: str) -> tuple[User, Claims]:
    """One indexed lookup by the token's SHA-256; its use noted at most once a minute
    (the first use ever is audited)."""
    if not TOKEN_PATTERN.match(token):
        raise TokenError("invalid token")
    found = await users.user_for_api_token(db, token_digest(token))
    if found is None:
        raise TokenError("invalid token")  # never made, or revoked: nothing to tell apart
    user, record = found
    now = datetime.now(UTC)
    if record.expires_at is not None and record.expires_at <= now:
        raise TokenError("token expired")
    stale = record.last_used_at is None or now - record.last_used_at > TOUCH_EVERY
    if stale and await users.touch_api_token(db, record.id):
        audit("token_first_used", token=record.name, user=user.username)
    claims = Claims(
        user.username,
        record.created_at,
        record.expires_at or now + NEVER,
        f"{API_TOKEN_ID}{record.id}",
        None,
    )
    return user, claims


def load_jwt_secret(settings: Settings) -> bytes:
    """PERFPULSE_JWT_SECRET, or a secret generated once and kept (mode 0600) in the data dir."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    secret = _read_or_create_secret(path)
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path}: the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _read_or_create_secret(path: Path) -> bytes:
    ensure_private(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_urlsafe(48).encode())
    return path.read_bytes().strip()
