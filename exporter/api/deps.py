"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from exporter.auth import TokenError, user_for_token
from exporter.config import Settings
from exporter.sampler import Sampler
from exporter.storage.database import Database, DatabaseUnavailable
from exporter.storage.users import User
from exporter.stream import Broadcaster
from exporter.throttle import LoginThrottle
from exporter.webconfig import WebConfig


def _state(name: str) -> Callable[[HTTPConnection], Any]:
    """A dependency returning one resource from the lifespan state (HTTP and WebSocket)."""

    def get(connection: HTTPConnection) -> Any:
        return getattr(connection.state, name)

    return get


SamplerDep = Annotated[Sampler, Depends(_state("sampler"))]
RegistryDep = Annotated[CollectorRegistry, Depends(_state("registry"))]
SettingsDep = Annotated[Settings, Depends(_state("settings"))]
SecretDep = Annotated[bytes, Depends(_state("jwt_secret"))]
ThrottleDep = Annotated[LoginThrottle, Depends(_state("login_throttle"))]
BroadcasterDep = Annotated[Broadcaster, Depends(_state("broadcaster"))]
DatabaseDep = Annotated[Database, Depends(_state("database"))]
WebConfigDep = Annotated[WebConfig, Depends(_state("web_config"))]


def _pool(database: DatabaseDep) -> asyncpg.Pool:
    try:
        return database.pool
    except DatabaseUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /api/auth/login")


async def _current_user(
    pool: PoolDep,
    secret: SecretDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "not authenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return await user_for_token(pool, secret, credentials.credentials)
    except TokenError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


CurrentUser = Annotated[User, Depends(_current_user)]
