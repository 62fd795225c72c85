"""GET /api/hosts: every host writing to this database, with its latest figures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status

from exporter import __version__
from exporter.api.deps import ADMIN_ONLY, UNKNOWN_HOST, AdminUser, CurrentUser, PoolDep, RuntimeDep
from exporter.auth.access import may_see
from exporter.fleet.hosts import STALE_AFTER_INTERVALS, HostInfo, list_hosts, remove_host
from exporter.logs import audit
from exporter.runtime import Runtime
from exporter.sinks.summary import summarize

router = APIRouter(prefix="/api", tags=["fleet"])


@router.get(
    "/hosts",
    summary="The fleet",
    description="One object per registered host: `host`, `last_seen` (ISO-8601 UTC), "
    "`interval_seconds`, `stale` (no write for 3 intervals), `version`, `collectors` and "
    "`summary` (CPU busy and memory used ratios, network and disk bytes per second; null "
    "where unknown). Live hosts first, then stale ones, each by name.",
)
async def hosts(user: CurrentUser, pool: PoolDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    if not runtime.shared:
        own = _own_host(runtime)
        return [own.to_json()] if own is not None and may_see(user, own.host) else []
    listing = [info for info, _, _ in await list_hosts(pool) if may_see(user, info.host)]
    listing.sort(key=lambda info: (info.stale, info.host))
    return [info.to_json() for info in listing]


@router.delete(
    "/hosts/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a host (admin)",
    description="Forget a host: it leaves the fleet list and its open alerts resolve; its "
    "stored history stays until retention. Stop its agent first, or it registers again.",
    responses={**ADMIN_ONLY, 404: {"description": "unknown host"}},
)
async def delete_host(name: str, admin: AdminUser, pool: PoolDep, runtime: RuntimeDep) -> Response:
    if not runtime.shared:
        raise HTTPException(status.HTTP_404_NOT_FOUND, UNKNOWN_HOST)
    async with pool.acquire() as conn:
        removed = await remove_host(conn, name)
    if not removed:
        raise HTTPException(status.HTTP_404_NOT_FOUND, UNKNOWN_HOST)
    audit("host_removed", host=name, by=admin.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _own_host(runtime: Runtime) -> HostInfo | None:
    """On the embedded database (no fleet, no relay): this host, from its latest snapshot."""
    latest = runtime.sampler.latest
    if latest is None:
        return None
    sections = {name: data for name, (data, _) in latest.sections().items()}
    interval = runtime.sampler.interval
    age = (datetime.now(UTC) - latest.timestamp).total_seconds()
    return HostInfo(
        host=latest.host,
        last_seen=latest.timestamp,
        interval_seconds=interval,
        version=__version__,
        stale=age > STALE_AFTER_INTERVALS * interval,
        summary=summarize(sections),
        collectors=sorted(name for name, data in sections.items() if data.get("available")),
    )
