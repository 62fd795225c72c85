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


def _user(row: asyncpg.Record | None) -> User | None:
    return None if row is None else User(**dict(row))


async def get(db: Executor, username: str) -> User | None:
    return _user(await db.fetchrow("SELECT * FROM users WHERE username = $1", username))


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
        "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE username = $1",
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
