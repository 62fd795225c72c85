"""Users and API tokens over HTTP: /api/users (admin) and /api/tokens (everyone sees their
own; admins create and see all). The CLI (`perfpulse users`, `perfpulse tokens`) does the
same through exporter/auth/commands.py; both go through exporter/storage/users.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, Field, field_validator

from exporter.api.deps import ADMIN_ONLY, AdminUser, CurrentUser, PoolDep, SessionsDep
from exporter.auth.access import (
    API_TOKEN_ID,
    AccessError,
    check_role,
    check_token_name,
    new_token,
    parse_expiry,
    parse_hosts,
    token_digest,
)
from exporter.auth.passwords import hash_password
from exporter.logs import audit
from exporter.storage import users
from exporter.storage.users import ApiToken, User

router = APIRouter(prefix="/api", tags=["access"])
T = TypeVar("T")
R = TypeVar("R")

UserName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
TokenName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]


class UserOut(BaseModel):
    username: str
    role: str
    hosts: list[str]
    created_at: datetime


def _user_out(user: User) -> UserOut:
    return UserOut(
        username=user.username, role=user.role, hosts=user.hosts, created_at=user.created_at
    )


def _unprocessable(field: str, exc: AccessError) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        [{"type": "value_error", "loc": ["body", field], "msg": str(exc)}],
    )


def _checked(field: str, check: Callable[[T], R], value: T) -> R:
    """`check(value)`, or a 422 naming the body's `field` and why."""
    try:
        return check(value)
    except AccessError as exc:
        raise _unprocessable(field, exc) from None


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: str = "viewer"
    hosts: list[str] = Field(default_factory=lambda: ["*"], max_length=64)

    @field_validator("username")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable() or value.strip() != value:
            raise ValueError("printable characters, no surrounding spaces")
        return value


class UserChange(BaseModel):
    role: str | None = None
    hosts: list[str] | None = Field(None, max_length=64)
    password: str | None = Field(None, min_length=8, max_length=1024)


@router.get("/users", summary="Users (admin)", responses=ADMIN_ONLY)
async def list_users(admin: AdminUser, pool: PoolDep) -> list[UserOut]:
    return [_user_out(u) for u in await users.list_all(pool)]


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    summary="Create a user (admin)",
    responses={**ADMIN_ONLY, 409: {"description": "the name is taken"}},
)
async def create_user(body: NewUser, admin: AdminUser, pool: PoolDep) -> UserOut:
    role = _checked("role", check_role, body.role)
    hosts = _checked("hosts", parse_hosts, body.hosts)
    user = await users.create(
        pool, body.username, await hash_password(body.password), role=role, hosts=hosts
    )
    if user is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} already exists")
    audit("user_created", user=user.username, role=role, hosts=",".join(hosts), by=admin.username)
    return _user_out(user)


@router.patch(
    "/users/{username}",
    summary="Change a user's role, hosts or password (admin)",
    responses={**ADMIN_ONLY, 404: {"description": "no such user"}},
)
async def change_user(
    username: UserName,
    body: UserChange,
    admin: AdminUser,
    pool: PoolDep,
    sessions: SessionsDep,
) -> UserOut:
    role = _checked("role", check_role, body.role) if body.role is not None else None
    hosts = _checked("hosts", parse_hosts, body.hosts) if body.hosts is not None else None
    new_hash = await hash_password(body.password) if body.password is not None else None
    async with pool.acquire() as conn, conn.transaction():
        current = await users.get(conn, username)
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        if role is not None and await users.is_last_admin(conn, current, role):
            raise HTTPException(status.HTTP_409_CONFLICT, "the last admin cannot become a viewer")
        if new_hash is not None:
            await users.set_password(conn, username, new_hash)
        user = await users.set_access(conn, username, role=role, hosts=hosts)
    assert user is not None  # held by the transaction
    changed = [k for k in ("role", "hosts", "password") if getattr(body, k) is not None]
    if changed:
        audit(
            "user_changed",
            user=username,
            changed=",".join(changed),
            role=user.role,
            hosts=",".join(user.hosts),
            by=admin.username,
        )
        sessions.changed(username, "password changed" if body.password else "access changed")
    return _user_out(user)


@router.delete(
    "/users/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a user and its tokens (admin)",
    responses={**ADMIN_ONLY, 404: {"description": "no such user"}},
)
async def delete_user(
    username: UserName, admin: AdminUser, pool: PoolDep, sessions: SessionsDep
) -> Response:
    async with pool.acquire() as conn, conn.transaction():
        current = await users.get(conn, username)
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        if await users.is_last_admin(conn, current):
            raise HTTPException(status.HTTP_409_CONFLICT, "the last admin cannot be deleted")
        await users.delete(conn, username)
    audit("user_deleted", user=username, by=admin.username)
    sessions.changed(username, "user no longer exists")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- tokens ----------------------------------------------------------------------------


class TokenOut(BaseModel):
    name: str
    user: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    user: str | None = Field(None, description="Whose token (default: yours).")
    expires: str | None = Field("90d", description="12h, 90d, 8w, 1y, or never.")


class CreatedToken(TokenOut):
    token: str = Field(description="The token itself: shown this once, stored only hashed.")


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        name=token.name,
        user=token.username,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
    )


@router.get(
    "/tokens",
    summary="API tokens",
    description="Your own tokens; an admin sees every user's.",
)
async def list_tokens(user: CurrentUser, pool: PoolDep) -> list[TokenOut]:
    found = await users.api_tokens(pool, None if user.is_admin else user.username)
    return [_token_out(t) for t in found]


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API token (admin)",
    description="`pp_` + 32 random bytes, returned this once; it acts as its user (role "
    "and hosts), as `Authorization: Bearer` on every route and as `?token=` or the "
    "subprotocol on the stream.",
    responses={**ADMIN_ONLY, 409: {"description": "the name is taken"}},
)
async def create_token(body: NewToken, admin: AdminUser, pool: PoolDep) -> CreatedToken:
    name = _checked("name", check_token_name, body.name)
    lifetime = _checked("expires", parse_expiry, body.expires)
    owner = body.user or admin.username
    token = new_token()
    expires_at = datetime.now(UTC) + lifetime if lifetime is not None else None
    record = await users.create_api_token(pool, name, owner, token_digest(token), expires_at)
    if record is None:
        if await users.get(pool, owner) is None:
            raise _unprocessable("user", AccessError(f"no user {owner!r}"))
        raise HTTPException(status.HTTP_409_CONFLICT, f"a token named {name!r} exists")
    audit("token_created", token=name, user=owner, expires=body.expires, by=admin.username)
    return CreatedToken(**_token_out(record).model_dump(), token=token)


@router.delete(
    "/tokens/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API token",
    description="Your own, or (admin) anyone's. Requests with it fail at once; streams "
    "opened with it close within PERFPULSE_SESSION_RECHECK_SECONDS (at once here).",
    responses={404: {"description": "no such token (of yours)"}},
)
async def revoke_token(
    name: TokenName, user: CurrentUser, pool: PoolDep, sessions: SessionsDep
) -> Response:
    found = await users.api_token(pool, name)
    if found is None or (not user.is_admin and found.username != user.username):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {name!r}")
    gone = await users.revoke_api_token(pool, name)
    if gone is not None:
        audit("token_revoked", token=name, user=gone.username, by=user.username)
        sessions.revoked(f"{API_TOKEN_ID}{gone.id}", "token revoked")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
