"""GET /api/processes: this host's whole process table, on demand (the stream carries the
top of it)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from exporter.api.deps import UNKNOWN_HOST, CurrentUser, RuntimeDep
from exporter.auth.access import may_see

router = APIRouter(prefix="/api", tags=["processes"])

MAX_ROWS = 5000


@router.get(
    "/processes",
    summary="The process table",
    description="Every process of the last full scan (the busiest as of this tick), "
    "sorted by `cpu`, `memory` or `io`, at most `limit`.",
)
async def processes(
    user: CurrentUser,
    runtime: RuntimeDep,
    sort: Annotated[Literal["cpu", "memory", "io"], Query()] = "cpu",
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 500,
) -> dict[str, Any]:
    if not may_see(user, runtime.settings.hostname):
        raise HTTPException(status.HTTP_404_NOT_FOUND, UNKNOWN_HOST)
    collector = runtime.processes
    if collector is None or collector.scanned_at is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "no process table here (the processes collector is off, or has not scanned yet)",
        )
    return {
        "host": runtime.settings.hostname,
        "scanned_at": collector.scanned_at.isoformat(),
        "count": collector.table_size(),
        "sort": sort,
        "processes": collector.table_rows(limit, sort),
    }
