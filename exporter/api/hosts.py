"""GET /api/hosts: every host writing to this database, with its latest figures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from exporter.api.deps import CurrentUser, PoolDep
from exporter.fleet.hosts import list_hosts

router = APIRouter(prefix="/api", tags=["fleet"])


@router.get(
    "/hosts",
    summary="The fleet",
    description="One object per registered host: `host`, `last_seen` (ISO-8601 UTC), "
    "`interval_seconds`, `stale` (no write for 3 intervals), `version`, `collectors` and "
    "`summary` (CPU busy and memory used ratios, network and disk bytes per second; null "
    "where unknown). Live hosts first, then stale ones, each by name.",
)
async def hosts(user: CurrentUser, pool: PoolDep) -> list[dict[str, Any]]:
    listing = [info for info, _, _ in await list_hosts(pool)]
    listing.sort(key=lambda info: (info.stale, info.host))
    return [info.to_json() for info in listing]
