"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from exporter.auth import TokenError, user_for_token
from exporter.config import Settings
from exporter.sampler import Sampler
from exporter.storage.database import Database, DatabaseUnavailable
from exporter.storage.users import User
from exporter.stream import Broadcaster
from exporter.throttle import LoginThrottle


def _sampler(request: Request) -> Sampler:
    sampler: Sampler = request.state.sampler
    return sampler


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.state.registry
    return registry


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def _secret(request: Request) -> bytes:
    secret: bytes = request.state.jwt_secret
    return secret


def _throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.state.login_throttle
    return throttle


def _broadcaster(request: Request) -> Broadcaster:
    broadcaster: Broadcaster = request.state.broadcaster
    return broadcaster


def _database(request: Request) -> Database:
    database: Database = request.state.database
    return database


def _pool(request: Request) -> asyncpg.Pool:
    database: Database = request.state.database
    try:
        return database.pool
    except DatabaseUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None


SamplerDep = Annotated[Sampler, Depends(_sampler)]
RegistryDep = Annotated[CollectorRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SecretDep = Annotated[bytes, Depends(_secret)]
ThrottleDep = Annotated[LoginThrottle, Depends(_throttle)]
BroadcasterDep = Annotated[Broadcaster, Depends(_broadcaster)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
DatabaseDep = Annotated[Database, Depends(_database)]

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
