"""Passwords: argon2id hashes, checked off the event loop with a bound on concurrency."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import threading

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from exporter.storage import users
from exporter.storage.users import User

# argon2-cffi's defaults are argon2id with RFC 9106's second recommended parameters.
_hasher = PasswordHasher()
# Each hash takes 64 MiB and ~0.1 s of a core: bound how many run at once, and leave a
# core for the event loop.
_hashing = threading.BoundedSemaphore(max(1, min(2, (os.cpu_count() or 2) - 1)))


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
