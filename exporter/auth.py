"""Passwords (argon2id) and access tokens (JWT, HS256 only)."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from jose import ExpiredSignatureError, JWTError, jwt

from exporter.config import MIN_SECRET_BYTES, ConfigError, Settings
from exporter.storage import users
from exporter.storage.users import User

ALGORITHM = "HS256"
ALGORITHMS = [ALGORITHM]  # the only algorithm decode accepts: no "none", no RS/HS confusion
REQUIRED_CLAIMS = ("exp", "iat", "sub")
MAX_TOKEN_BYTES = 4096
SECRET_FILE = "jwt-secret"

# argon2-cffi's defaults are argon2id with RFC 9106's second recommended parameters.
_hasher = PasswordHasher()
# Each hash takes 64 MiB and ~0.1 s of a core: bound how many run at once.
_hashing = threading.BoundedSemaphore(2)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both failures cost the same."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _hash(password: str) -> str:
    with _hashing:
        return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    with _hashing:
        try:
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


class TokenError(Exception):
    """The token is not acceptable; the message is safe to show (it never echoes the token)."""


async def hash_password(password: str) -> str:
    """argon2id, off the event loop."""
    return await asyncio.to_thread(_hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, password_hash, password)


async def authenticate(db: asyncpg.Pool, username: str, password: str) -> User | None:
    """The user if the password matches; None for a wrong password or an unknown user alike."""
    user = await users.get(db, username)
    if user is None:
        await verify_password(_dummy_hash(), password)
        return None
    if not await verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        await users.update_hash(db, username, await hash_password(password))
    return user


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


def issue_token(
    secret: bytes, username: str, lifetime: timedelta, now: datetime | None = None
) -> IssuedToken:
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    claims = {"sub": username, "iat": issued, "exp": issued + lifetime}
    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return IssuedToken(token, int(lifetime.total_seconds()))


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    issued_at: datetime
    expires_at: datetime


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
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenError("invalid token")
    try:
        return Claims(
            subject,
            datetime.fromtimestamp(int(claims["iat"]), UTC),
            datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (TypeError, ValueError, OverflowError):
        raise TokenError("invalid token") from None


async def user_for_token(db: asyncpg.Pool, secret: bytes, token: str) -> User:
    """The user a valid token speaks for; TokenError when it cannot speak for anyone."""
    claims = decode_token(secret, token)
    user = await users.get(db, claims.subject)
    if user is None:
        raise TokenError("user no longer exists")
    if claims.issued_at < user.password_changed_at.replace(microsecond=0):
        raise TokenError("token issued before the password was changed")
    return user


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
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_urlsafe(48).encode())
    return path.read_bytes().strip()
