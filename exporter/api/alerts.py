"""GET /api/alerts (pending and firing now), /api/alerts/history (what fired) and
/api/alerts/rules (what is evaluated, for the dashboard's marks and colours)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from exporter.alerts import store
from exporter.alerts.engine import AlertEngine
from exporter.alerts.evaluate import Alert
from exporter.alerts.rules import describe_rule
from exporter.api.deps import CurrentUser, PoolDep, RuntimeDep, SettingsDep, visible_host
from exporter.api.timeparse import parse_range
from exporter.auth.access import may_see, sees_all
from exporter.runtime import Runtime
from exporter.storage.users import User

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

MAX_RANGE = timedelta(days=90)
AlertsHost = Annotated[
    str | None,
    Query(
        max_length=255,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="A host, or * for every host; default: this host.",
    ),
]


async def _target(
    user: User, host: str | None, settings: Any, runtime: Runtime, pool: Any
) -> str | None:
    """None for every host (`*`); else the host, if it exists and the user may see it."""
    return None if host == "*" else await visible_host(user, host, settings, runtime, pool)


def _seen(user: User, alerts: list[Alert]) -> list[dict[str, Any]]:
    return [store.as_json(a) for a in alerts if sees_all(user) or may_see(user, a.host)]


@router.get(
    "",
    summary="Alerts now",
    description="Pending and firing alerts, firing first: of this host, of `host=NAME`, "
    "or of every host with `host=*`. Each has `alert`, `host`, `labels`, `severity`, "
    "`summary`, `state`, `value` (the latest), `peak`, `started_at` and `fired_at`.",
)
async def alerts_now(
    user: CurrentUser,
    pool: PoolDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    host: AlertsHost = None,
) -> dict[str, Any]:
    target = await _target(user, host, settings, runtime, pool)
    engine: AlertEngine | None = runtime.alerts
    if engine is not None and target == settings.hostname and settings.collect:
        # This host's own state, straight from its evaluator (not waiting on a save).
        current = engine.open()
    else:
        current = await store.open_alerts(pool, target)
    return {"host": host if host == "*" else target, "alerts": _seen(user, current)}


@router.get(
    "/rules",
    summary="Alert rules",
    description="The rules this instance evaluates (its own host's snapshots, and on a fleet "
    "instance the hosts' silence), in file order: `alert`, `expr`, `path` (as written), "
    "`steps` (the path's parts from the section on, or null where it selects list members), "
    "`op`, `threshold`, `for_seconds`, `severity`, `summary`, `labels`. `enabled` is false "
    "where this instance evaluates none (PERFPULSE_ALERTS=false).",
)
async def alert_rules(user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    engine: AlertEngine | None = runtime.alerts
    rules = engine.rules if engine is not None else []
    return {"enabled": engine is not None, "rules": [describe_rule(r) for r in rules]}


@router.get(
    "/history",
    summary="Alerts that fired",
    description="Alerts that fired and overlapped [start, end), newest first, at most "
    "`limit`; `host` as for /api/alerts.",
)
async def alerts_history(
    user: CurrentUser,
    pool: PoolDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    start: Annotated[
        str, Query(description="ISO-8601 or now-7d style; default now-7d.")
    ] = "now-7d",
    end: Annotated[str, Query(description="ISO-8601 or now-style; default now.")] = "now",
    host: AlertsHost = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    begin, finish = parse_range(start, end, MAX_RANGE)
    target = await _target(user, host, settings, runtime, pool)
    found = await store.history(pool, target, begin, finish, limit)
    return {
        "host": host if host == "*" else target,
        "start": begin.isoformat(),
        "end": finish.isoformat(),
        "alerts": _seen(user, found),
    }
