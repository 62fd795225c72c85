"""POST /api/auth/login, POST /api/auth/logout and GET /api/auth/me."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field, field_validator

from exporter.api.deps import (
    AccessDep,
    CurrentSession,
    LoginGateDep,
    PoolDep,
    SecretDep,
    SessionsDep,
    SettingsDep,
    proxy_session,
)
from exporter.auth.passwords import authenticate
from exporter.auth.tokens import issue_token
from exporter.config import Settings
from exporter.logs import audit
from exporter.storage import users
from exporter.storage.users import User

router = APIRouter(prefix="/api/auth", tags=["auth"])

# One message for an unknown user and a wrong password: nothing to enumerate.
WRONG_CREDENTIALS = "incorrect username or password"


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)

    @field_validator("username")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable characters only")
        return _utf8(value)

    @field_validator("password")
    @classmethod
    def _encodable(cls, value: str) -> str:
        return _utf8(value)


def _utf8(value: str) -> str:
    """JSON can carry lone surrogates, which no password or name can be made of."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class Me(BaseModel):
    username: str
    created_at: datetime
    role: str = Field(description="admin or viewer.")
    hosts: list[str] = Field(description="Glob patterns of the hosts this user may see.")
    via: str = Field(description="What authenticated this request: token, api_token or proxy.")


@router.post(
    "/login",
    responses={
        401: {"description": WRONG_CREDENTIALS},
        429: {"description": "too many failures, or a login from this address in progress"},
        503: {"description": "too many logins in progress"},
    },
)
async def login(
    body: Login,
    request: Request,
    pool: PoolDep,
    secret: SecretDep,
    settings: SettingsDep,
    gate: LoginGateDep,
) -> Token:
    # request.client is the peer, or X-Forwarded-For's client from a trusted proxy only.
    address = request.client.host if request.client else "unknown"
    refusal = gate.refusal(address, body.username)
    if refusal is not None:
        gate.refused_total += 1
        raise HTTPException(
            refusal.status,
            refusal.detail,
            headers={"Retry-After": str(math.ceil(refusal.retry_after))},
        )
    with gate.checking(address, body.username) as attempt:
        await attempt.turn()  # an account past its failure limit: one check at a time
        user = await authenticate(pool, body.username, body.password)
        audit(
            "login",
            outcome="success" if user is not None else "failure",
            user=body.username,
            address=address,
        )
        if user is None:
            # How many more failures this address has before it must wait: the login
            # page warns before the lock, not after. The address's own count only (never
            # the account's: that would tell a guesser about other addresses' tries).
            left = max(0, -gate.by_address.excess(address))
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                WRONG_CREDENTIALS,
                headers={"WWW-Authenticate": "Bearer", "X-Login-Attempts-Left": str(left)},
            )
        attempt.succeeded()
    # The version read before the password was checked: a password change meanwhile makes
    # this token invalid from the start.
    return _token(secret, user, settings)


def _token(secret: bytes, user: User, settings: Settings) -> Token:
    """An access token for `user` at its token version as read."""
    issued = issue_token(
        secret,
        user.username,
        timedelta(minutes=settings.access_token_expire_minutes),
        version=user.token_version,
    )
    return Token(access_token=issued.token, expires_in=issued.expires_in)


@router.post(
    "/proxy",
    summary="Log in through the single sign-on proxy",
    responses={
        401: {"description": "no user named by a trusted proxy"},
        403: {"description": "the named user has no account here"},
    },
)
async def proxy_login(
    request: Request,
    pool: PoolDep,
    secret: SecretDep,
    settings: SettingsDep,
    access: AccessDep,
) -> Token:
    """An access token for the user PERFPULSE_AUTH_PROXY_HEADER names, when the request
    comes from one of PERFPULSE_TRUSTED_PROXIES: the dashboard logs in with it, as with a
    password, and skips its login page."""
    found = await proxy_session(request, pool, access.proxy)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "no single sign-on user on this request",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return _token(secret, found[0], settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def logout(session: CurrentSession, pool: PoolDep, sessions: SessionsDep) -> Response:
    """Revoke this token at once, on every instance sharing the database; this
    instance's streams opened with it close now, other instances' within
    PERFPULSE_SESSION_RECHECK_SECONDS. An API token is revoked for good; a session
    the SSO proxy made is the proxy's to end."""
    user, claims = session
    if claims.token_id.startswith("proxy:"):
        # Signed in by the SSO proxy: signing out is the proxy's (nothing to revoke here).
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    if (token_id := claims.api_token_id) is not None:
        # Logging out with an API token revokes it, as `perfpulse tokens revoke` would.
        gone = await users.revoke_api_token_by_id(pool, token_id)
        if gone is not None:
            audit("token_revoked", token=gone.name, user=gone.username, by=user.username)
        sessions.revoked(claims.token_id, "token revoked")
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    await users.revoke_token(pool, claims.token_id, user.username, claims.expires_at)
    sessions.revoked(claims.token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
async def me(session: CurrentSession) -> Me:
    """Who this request is, with the role and the hosts it may see."""
    user, claims = session
    via = claims.token_id.split(":", 1)[0] if ":" in claims.token_id else "token"
    return Me(
        username=user.username,
        created_at=user.created_at,
        role=user.role,
        hosts=user.hosts,
        via={"api": "api_token"}.get(via, via),
    )
