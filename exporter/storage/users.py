"""Every SQL statement about users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

ADMIN_ROLE, VIEWER_ROLE = "admin", "viewer"
ROLES = (ADMIN_ROLE, VIEWER_ROLE)
ALL_HOSTS = ["*"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str
    created_at: datetime
    password_changed_at: datetime
    token_version: int
    role: str
    hosts: list[str]

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE


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


async def create(
    db: Executor,
    username: str,
    password_hash: str,
    *,
    role: str = VIEWER_ROLE,
    hosts: list[str] | None = None,
) -> User | None:
    """The new user, or None when the name is taken."""
    row = await db.fetchrow(
        """
        INSERT INTO users (username, password_hash, role, hosts) VALUES ($1, $2, $3, $4)
        ON CONFLICT (username) DO NOTHING
        RETURNING *
        """,
        username,
        password_hash,
        role,
        hosts or ALL_HOSTS,
    )
    return _user(row)


async def create_first(db: Executor, username: str, password_hash: str) -> User | None:
    """Create the user, an admin, only while there is no user at all (first start)."""
    row = await db.fetchrow(
        """
        INSERT INTO users (username, password_hash, role)
        SELECT $1, $2, 'admin' WHERE NOT EXISTS (SELECT 1 FROM users)
        ON CONFLICT (username) DO NOTHING
        RETURNING *
        """,
        username,
        password_hash,
    )
    return _user(row)


async def set_access(
    db: Executor, username: str, *, role: str | None = None, hosts: list[str] | None = None
) -> User | None:
    """Change a user's role and/or hosts; the user as it is now, or None if there is none."""
    row = await db.fetchrow(
        """
        UPDATE users SET role = coalesce($2, role), hosts = coalesce($3, hosts)
        WHERE username = $1 RETURNING *
        """,
        username,
        role,
        hosts,
    )
    return _user(row)


async def is_last_admin(db: Executor, user: User, role: str | None = None) -> bool:
    """Whether deleting `user` (role None), or making it `role`, would leave no admin."""
    if not user.is_admin or role == ADMIN_ROLE:
        return False
    return int(await db.fetchval("SELECT count(*) FROM users WHERE role = 'admin'")) <= 1


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


# --- API tokens ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    name: str
    username: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


_TOKEN_COLUMNS = (
    "t.id, t.name, u.username, t.created_at, t.expires_at, t.last_used_at "
    "FROM api_tokens t JOIN users u ON u.id = t.user_id"
)


async def create_api_token(
    db: Executor, name: str, username: str, digest: bytes, expires_at: datetime | None
) -> ApiToken | None:
    """The new token's record; None when the name is taken or the user does not exist."""
    row = await db.fetchrow(
        """
        WITH made AS (
            INSERT INTO api_tokens (name, user_id, digest, expires_at)
            SELECT $1, id, $3, $4 FROM users WHERE username = $2
            ON CONFLICT (name) DO NOTHING
            RETURNING *
        )
        SELECT t.id, t.name, $2::text AS username, t.created_at, t.expires_at, t.last_used_at
        FROM made t
        """,
        name,
        username,
        digest,
        expires_at,
    )
    return None if row is None else ApiToken(**dict(row))


async def api_tokens(db: Executor, username: str | None = None) -> list[ApiToken]:
    """Every token (of one user), by name."""
    rows = await db.fetch(
        f"SELECT {_TOKEN_COLUMNS} WHERE $1::text IS NULL OR u.username = $1 ORDER BY t.name",
        username,
    )
    return [ApiToken(**dict(row)) for row in rows]


async def api_token(db: Executor, name: str) -> ApiToken | None:
    row = await db.fetchrow(f"SELECT {_TOKEN_COLUMNS} WHERE t.name = $1", name)
    return None if row is None else ApiToken(**dict(row))


_REVOKE = """
WITH gone AS (DELETE FROM api_tokens WHERE {column} = $1 RETURNING *)
SELECT g.id, g.name, u.username, g.created_at, g.expires_at, g.last_used_at
FROM gone g JOIN users u ON u.id = g.user_id
"""


async def revoke_api_token(db: Executor, name: str) -> ApiToken | None:
    """Delete the token; what it was, or None if there was none."""
    row = await db.fetchrow(_REVOKE.format(column="name"), name)
    return None if row is None else ApiToken(**dict(row))


async def revoke_api_token_by_id(db: Executor, token_id: int) -> ApiToken | None:
    """Delete the token (logged out with itself); what it was, or None."""
    row = await db.fetchrow(_REVOKE.format(column="id"), token_id)
    return None if row is None else ApiToken(**dict(row))


async def user_for_api_token(db: Executor, digest: bytes) -> tuple[User, ApiToken] | None:
    """The user a token digest speaks for, and the token: one round trip."""
    row = await db.fetchrow(
        """
        SELECT u.*, t.id AS t_id, t.name AS t_name, t.created_at AS t_created_at,
               t.expires_at AS t_expires_at, t.last_used_at AS t_last_used_at
        FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.digest = $1
        """,
        digest,
    )
    if row is None:
        return None
    values = dict(row)
    token = ApiToken(
        id=values.pop("t_id"),
        name=values.pop("t_name"),
        username=values["username"],
        created_at=values.pop("t_created_at"),
        expires_at=values.pop("t_expires_at"),
        last_used_at=values.pop("t_last_used_at"),
    )
    return User(**values), token


async def touch_api_token(db: Executor, token_id: int) -> bool:
    """Note a use (at most once a minute a token); True when it is the first use ever."""
    first = await db.fetchval(
        """
        UPDATE api_tokens SET last_used_at = now()
        WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
        RETURNING (SELECT last_used_at IS NULL FROM api_tokens WHERE id = $1)
        """,
        token_id,
    )
    return bool(first)


async def live_api_tokens(db: Executor, ids: list[int]) -> set[int]:
    """Which of these tokens still exist and have not expired."""
    rows = await db.fetch(
        "SELECT id FROM api_tokens WHERE id = ANY($1) AND (expires_at IS NULL OR expires_at > now())",
        ids,
    )
    return {row["id"] for row in rows}
