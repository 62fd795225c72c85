"""GET /api/hosts: every host writing to this database, with its latest figures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from exporter import __version__
from exporter.api.deps import CurrentUser, PoolDep, RuntimeDep
from exporter.fleet.hosts import STALE_AFTER_INTERVALS, HostInfo, list_hosts
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
        return [own.to_json()] if (own := _own_host(runtime)) is not None else []
    listing = [info for info, _, _ in await list_hosts(pool)]
    listing.sort(key=lambda info: (info.stale, info.host))
    return [info.to_json() for info in listing]


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
