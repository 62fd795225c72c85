"""Liveness (the sampler is producing snapshots) and readiness (it can serve)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from exporter.api.deps import DatabaseDep, FleetDep, SamplerDep, SettingsDep

router = APIRouter(tags=["health"])

# A snapshot older than this many intervals means the sampling loop is stuck.
STALE_AFTER_INTERVALS = 3


@router.get("/healthz", summary="Liveness")
async def healthz(
    sampler: SamplerDep, database: DatabaseDep, settings: SettingsDep, fleet: FleetDep
) -> JSONResponse:
    """200 while the sampler produces snapshots; the database's state is reported, not
    required: an outage never stops sampling or the live stream. A dashboard-only
    instance (PERFPULSE_COLLECT=false) samples nothing: it reports the database and the
    fleet listener."""
    if not settings.collect:
        listening = fleet is not None and fleet.ready.is_set()
        body = {
            "status": "ok",
            "collect": False,
            "fleet": "listening" if listening else "connecting",
            "database": database.status,
        }
        return JSONResponse(body, status_code=200)
    latest = sampler.latest
    if latest is None:
        return JSONResponse({"status": "starting", "database": database.status}, status_code=200)
    age = (datetime.now(UTC) - latest.timestamp).total_seconds()
    limit = STALE_AFTER_INTERVALS * sampler.interval + sampler.deadline
    body = {
        "status": "ok" if age <= limit else "stale",
        "seq": latest.seq,
        "last_snapshot_age_seconds": round(age, 3),
        # The snapshot's sections; a part such as `filesystem` shows in /metrics'
        # perfpulse_collector_success and in its section's `<name>_error`.
        "collectors": {name: r.ok for name, r in latest.results.items() if r.part_of is None},
        "database": database.status,
    }
    return JSONResponse(body, status_code=200 if age <= limit else 503)


@router.get("/readyz", summary="Readiness")
async def readyz(sampler: SamplerDep, database: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    """200 once this instance can serve what it is for: the first snapshot exists (when
    collecting) and the database has been reached since start (a login or a history
    read would otherwise be a 503); 503 with the reasons before. A later database outage
    does not make it unready (sampling, /metrics and open streams go on; /healthz reports
    it), and neither does anything but a stuck sampler."""
    waiting = []
    if settings.collect:
        latest = sampler.latest
        if latest is None:
            waiting.append("no snapshot yet")
        else:
            age = (datetime.now(UTC) - latest.timestamp).total_seconds()
            if age > STALE_AFTER_INTERVALS * sampler.interval + sampler.deadline:
                waiting.append(f"no snapshot for {age:.0f} s")
    if not database.ready.is_set():
        waiting.append(f"database not reached yet ({database.status})")
    if waiting:
        return JSONResponse({"status": "not ready", "waiting_for": waiting}, status_code=503)
    return JSONResponse({"status": "ready"}, status_code=200)
