"""POST /api/auth/login and GET /api/auth/me."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from exporter.api.deps import CurrentUser, PoolDep, SecretDep, SettingsDep, ThrottleDep
from exporter.auth.passwords import authenticate
from exporter.auth.tokens import issue_token

router = APIRouter(prefix="/api/auth", tags=["auth"])

# One message for an unknown user and a wrong password: nothing to enumerate.
WRONG_CREDENTIALS = "incorrect username or password"


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class Me(BaseModel):
    username: str
    created_at: datetime


@router.post(
    "/login",
    responses={401: {"description": WRONG_CREDENTIALS}, 429: {"description": "too many failures"}},
)
async def login(
    body: Login,
    request: Request,
    pool: PoolDep,
    secret: SecretDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
) -> Token:
    client = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(client)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    user = await authenticate(pool, body.username, body.password)
    if user is None:
        throttle.failed(client)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, WRONG_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}
        )
    throttle.succeeded(client)
    issued = issue_token(
        secret, user.username, timedelta(minutes=settings.access_token_expire_minutes)
    )
    return Token(access_token=issued.token, expires_in=issued.expires_in)


@router.get("/me")
async def me(user: CurrentUser) -> Me:
    return Me(username=user.username, created_at=user.created_at)
