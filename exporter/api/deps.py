"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from exporter.api.querygate import QueryGate
from exporter.api.webconfig import WebConfig
from exporter.auth.access import may_see
from exporter.auth.proxy import ProxyAuth
from exporter.auth.sessions import Sessions
from exporter.auth.throttle import LoginGate
from exporter.auth.tokens import NEVER, Claims, TokenError, session_for_token
from exporter.config import Settings
from exporter.fleet.hosts import host_exists
from exporter.fleet.listener import FleetListener
from exporter.runtime import Runtime
from exporter.sampler import Sampler
from exporter.sinks.stream import Broadcaster
from exporter.storage.database import Database, DatabaseUnavailable
from exporter.storage.history import Reader
from exporter.storage.users import User


@dataclass(frozen=True, slots=True)
class Access:
    """What guards the API: the token key, the login gate, /metrics' web config, the
    streams' sessions and the history reads' gate."""

    jwt_secret: bytes
    login_gate: LoginGate
    web_config: WebConfig
    sessions: Sessions
    queries: QueryGate
    proxy: ProxyAuth


async def _runtime(connection: HTTPConnection) -> Runtime:
    """The running parts, from the lifespan state (HTTP and WebSocket routes alike)."""
    runtime: Runtime = connection.state.runtime
    return runtime


async def _access(connection: HTTPConnection) -> Access:
    access: Access = connection.state.access
    return access


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
AccessDep = Annotated[Access, Depends(_access)]


async def _settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def _sampler(runtime: RuntimeDep) -> Sampler:
    return runtime.sampler


async def _registry(runtime: RuntimeDep) -> CollectorRegistry:
    return runtime.registry


async def _database(runtime: RuntimeDep) -> Database:
    return runtime.database


async def _broadcaster(runtime: RuntimeDep) -> Broadcaster:
    return runtime.broadcaster


async def _fleet(runtime: RuntimeDep) -> FleetListener | None:
    return runtime.fleet


async def _secret(access: AccessDep) -> bytes:
    return access.jwt_secret


async def _login_gate(access: AccessDep) -> LoginGate:
    return access.login_gate


async def _web_config(access: AccessDep) -> WebConfig:
    return access.web_config


SettingsDep = Annotated[Settings, Depends(_settings)]
SamplerDep = Annotated[Sampler, Depends(_sampler)]
RegistryDep = Annotated[CollectorRegistry, Depends(_registry)]
DatabaseDep = Annotated[Database, Depends(_database)]
BroadcasterDep = Annotated[Broadcaster, Depends(_broadcaster)]
FleetDep = Annotated[FleetListener | None, Depends(_fleet)]


async def _sessions(access: AccessDep) -> Sessions:
    return access.sessions


async def _queries(access: AccessDep) -> QueryGate:
    return access.queries


SecretDep = Annotated[bytes, Depends(_secret)]
QueryGateDep = Annotated[QueryGate, Depends(_queries)]
SessionsDep = Annotated[Sessions, Depends(_sessions)]
LoginGateDep = Annotated[LoginGate, Depends(_login_gate)]
WebConfigDep = Annotated[WebConfig, Depends(_web_config)]


async def _pool(database: DatabaseDep) -> asyncpg.Pool:
    try:
        return database.pool
    except DatabaseUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]


async def _reader(database: DatabaseDep, settings: SettingsDep) -> Reader:
    try:
        return Reader(database.reader, settings.history_timeout_seconds)
    except DatabaseUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from None


ReaderDep = Annotated[Reader, Depends(_reader)]

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /api/auth/login")


async def _current_session(
    connection: HTTPConnection,
    pool: PoolDep,
    secret: SecretDep,
    access: AccessDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> tuple[User, Claims]:
    """A bearer credential (a JWT from /api/auth/login or an API token `pp_...`), or
    without one the user a trusted SSO proxy names."""
    if credentials is None:
        found = await proxy_session(connection, pool, access.proxy)
        if found is not None:
            return found
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "not authenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return await session_for_token(pool, secret, credentials.credentials)
    except TokenError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


async def proxy_session(
    connection: HTTPConnection, pool: asyncpg.Pool, proxy: ProxyAuth
) -> tuple[User, Claims] | None:
    """The session of the user a trusted proxy names on this request, if any."""
    name = proxy.named(connection.scope)
    if name is None:
        return None
    address = connection.client.host if connection.client else "unknown"
    user = await proxy.user(pool, name, address)
    if user is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"the single sign-on user {name!r} has no account here"
        )
    now = datetime.now(UTC)
    return user, Claims(user.username, now, now + NEVER, f"proxy:{name}", user.token_version)


CurrentSession = Annotated[tuple[User, Claims], Depends(_current_session)]


async def _current_user(session: CurrentSession) -> User:
    return session[0]


CurrentUser = Annotated[User, Depends(_current_user)]


async def _admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs the admin role")
    return user


AdminUser = Annotated[User, Depends(_admin_user)]
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "this needs the admin role"}}


async def visible_host(
    user: User, requested: str | None, settings: Settings, runtime: Runtime, pool: asyncpg.Pool
) -> str:
    """The host a request is about (this instance's own by default), if it exists (this
    instance's own, or registered in `hosts`, as every agent of a fleet registers itself)
    and the user may see it; a 404 `unknown host` otherwise, the same for both."""
    host = requested or settings.hostname
    own = settings.collect and host == settings.hostname
    # The fleet listener's list (the hosts table, kept) answers for most; the table for a
    # host registered since its last read.
    listed = runtime.fleet is not None and runtime.fleet.knows(host)
    exists = own or listed or await host_exists(pool, host)
    if not exists or not may_see(user, host):
        raise HTTPException(status.HTTP_404_NOT_FOUND, UNKNOWN_HOST)
    return host


UNKNOWN_HOST = "unknown host"
