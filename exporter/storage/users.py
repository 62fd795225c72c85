"""Every SQL statement about users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str
    created_at: datetime
    password_changed_at: datetime
    token_version: int


def _user(row: asyncpg.Record | None) -> User | None:
    return None if row is None else User(**dict(row))


async def get(db: Executor, username: str) -> User | None:
    return _user(await db.fetchrow("SELECT * FROM users WHERE username = $1", username))


async def get_for_token(db: Executor, username: str, jti: str) -> tuple[User, bool] | None:
    """The user a token names, and whether that token was revoked: one round trip."""
    row = await db.fetchrow(
        """
        SELECT u.*, EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = $2) AS revoked
        FROM users u WHERE u.username = $1
        """,
        username,
        jti,
    )
    if row is None:
        return None
    values = dict(row)
    revoked = bool(values.pop("revoked"))
    return User(**values), revoked


async def revoke_token(db: Executor, jti: str, username: str, expires_at: datetime) -> None:
    await db.execute(
        """
        INSERT INTO revoked_tokens (jti, username, expires_at) VALUES ($1, $2, $3)
        ON CONFLICT (jti) DO NOTHING
        """,
        jti,
        username,
        expires_at,
    )


async def revoked_among(db: Executor, jtis: list[str]) -> set[str]:
    rows = await db.fetch("SELECT jti FROM revoked_tokens WHERE jti = ANY($1)", jtis)
    return {row["jti"] for row in rows}


async def forget_expired_revocations(db: Executor) -> int:
    """Revocations of tokens past their expiry (they are refused as expired anyway)."""
    status = await db.execute("DELETE FROM revoked_tokens WHERE expires_at < now()")
    return int(status.rsplit(" ", 1)[1])


async def list_all(db: Executor) -> list[User]:
    return [User(**dict(row)) for row in await db.fetch("SELECT * FROM users ORDER BY username")]


async def create(db: Executor, username: str, password_hash: str) -> User | None:
    """The new user, or None when the name is taken."""
    row = await db.fetchrow(
        """
        INSERT INTO users (username, password_hash) VALUES ($1, $2)
        ON CONFLICT (username) DO NOTHING
        RETURNING *
        """,
        username,
        password_hash,
    )
    return _user(row)


async def create_first(db: Executor, username: str, password_hash: str) -> User | None:
    """Create the user only while there is no user at all (first start)."""
    row = await db.fetchrow(
        """
        INSERT INTO users (username, password_hash)
        SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM users)
        ON CONFLICT (username) DO NOTHING
        RETURNING *
        """,
        username,
        password_hash,
    )
    return _user(row)


async def set_password(db: Executor, username: str, password_hash: str) -> bool:
    result = await db.execute(
        """
        UPDATE users SET password_hash = $2, password_changed_at = now(),
            token_version = token_version + 1
        WHERE username = $1
        """,
        username,
        password_hash,
    )
    return bool(result == "UPDATE 1")


async def update_hash(db: Executor, username: str, password_hash: str) -> None:
    """Store a rehash of the same password (stronger parameters): sessions stay valid."""
    await db.execute(
        "UPDATE users SET password_hash = $2 WHERE username = $1", username, password_hash
    )


async def delete(db: Executor, username: str) -> bool:
    return bool(await db.execute("DELETE FROM users WHERE username = $1", username) == "DELETE 1")
