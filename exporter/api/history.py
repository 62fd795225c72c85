"""GET /api/metrics/history (downsampled series) and GET /api/metrics/latest."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel

from exporter.api.deps import (
    CurrentUser,
    PoolDep,
    QueryGateDep,
    ReaderDep,
    RuntimeDep,
    SettingsDep,
    visible_host,
)
from exporter.api.querygate import QueryGate
from exporter.api.timeparse import invalid, parse_range
from exporter.storage import history as reads
from exporter.storage import minutes, paths
from exporter.storage.fields import FIELDS, METRIC_TYPES

HISTORY_TYPES = (*METRIC_TYPES, *minutes.PER_MINUTE_TYPES)
# A per-minute account is a list, not a few numbers: one request reads at most a day of them.
MAX_MINUTES_RANGE = timedelta(hours=24)
MINUTE_TOP = 10

router = APIRouter(prefix="/api/metrics", tags=["history"])

MAX_POINTS = 5000
# The hour aggregates are kept five years (PERFPULSE_RETENTION_HOURS_DAYS).
MAX_RANGE = timedelta(days=5 * 366)
ROLLUP_SECONDS = 60
HOUR_SECONDS = 3600
MAX_FIELDS = 64
# A host name as stored: printable, no NUL (which PostgreSQL text cannot hold).
HostQuery = Annotated[
    str | None,
    Query(max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$", description="Default: this host."),
]


class HistoryOut(BaseModel):
    host: str
    metric_type: str
    start: datetime
    end: datetime
    resolution: str
    bucket_seconds: float
    fields: list[str]
    timestamps: list[datetime]
    samples: list[int]
    avg: dict[str, list[float | None]]
    max: dict[str, list[float | None]]
    min: dict[str, list[float | None]]
    last: dict[str, list[float | None]]


class MinutesOut(BaseModel):
    """Who was on top (processes) or what each group used (cgroups), per bucket of whole
    minutes: CPU seconds and bytes added up, memory at its peak."""

    host: str
    metric_type: str
    start: datetime
    end: datetime
    resolution: str
    bucket_seconds: float
    buckets: list[dict[str, Any]]


def bucket_width(
    start: datetime,
    end: datetime,
    points: int,
    raw_max: timedelta | None = None,
    at_least: str = "raw",
) -> tuple[str, float]:
    """(resolution, seconds): "raw" for buckets under a minute over at most `raw_max`;
    whole minutes ("1m") under half an hour; whole hours ("1h") from there (at least half
    the points asked for, read from a day's row instead of 24 hours' rows); never finer
    than `at_least`."""
    seconds = max((end - start).total_seconds() / points, 0.001)
    raw_allowed = raw_max is None or end - start <= raw_max
    if at_least == "raw" and seconds < ROLLUP_SECONDS and raw_allowed:
        return "raw", seconds
    if at_least != "1h" and seconds < HOUR_SECONDS / 2:
        return "1m", float(max(1, math.ceil(seconds / ROLLUP_SECONDS)) * ROLLUP_SECONDS)
    return "1h", float(max(1, math.ceil(seconds / HOUR_SECONDS)) * HOUR_SECONDS)


def _fields(
    metric_type: str, asked: list[str] | None
) -> dict[str, tuple[str, tuple[paths.Step, ...]]]:
    """Output name -> (stored key, steps): the plotted fields by default, else the paths
    asked for (422 naming `field` for one that cannot be parsed)."""
    if not asked:
        return {
            name: (paths.render(path), tuple(path)) for name, path in FIELDS.get(metric_type, ())
        }
    if len(asked) > MAX_FIELDS:
        raise invalid("field", f"at most {MAX_FIELDS} fields per request")
    out = {}
    for text in asked:
        try:
            steps = paths.parse(text)
        except paths.PathError as exc:
            raise invalid("field", f"{text!r}: {exc}") from None
        out[text] = (paths.render(steps), steps)
    return out


async def _bounded(gate: QueryGate, request: Request, user: str, reader: Any, work: Any) -> Any:
    """Run one read under the gate (waiting for its turn included), cancelled if the
    client leaves; past the reader's time limit (a statement of it stopped by PostgreSQL,
    or the read as a whole once admitted) a 503 that says so."""

    async def admitted() -> Any:
        async with gate.admitted(user), asyncio.timeout(reader.timeout):
            return await work

    try:
        return await gate.until_disconnect(request.receive, admitted())
    except (asyncpg.QueryCanceledError, TimeoutError):
        gate.timed_out_total += 1
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "history query stopped by its time limit (PERFPULSE_HISTORY_TIMEOUT_SECONDS); "
            "ask for a shorter range",
            headers={"Retry-After": "5"},
        ) from None
    finally:
        work.close()  # a read refused before it ran: no "never awaited" warning


@router.get(
    "/history",
    response_model=HistoryOut | MinutesOut,
    responses={404: {"description": "unknown host"}},
)
async def history(
    request: Request,
    user: CurrentUser,
    reader: ReaderDep,
    gate: QueryGateDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    pool: PoolDep,
    metric_type: Annotated[str, Query(description=f"One of {', '.join(HISTORY_TYPES)}.")],
    start: Annotated[
        str, Query(description="ISO-8601 or now-1h style; default now-1h.")
    ] = "now-1h",
    end: Annotated[str, Query(description="ISO-8601 or now-style; default now.")] = "now",
    points: Annotated[int, Query(ge=1, le=MAX_POINTS, description="Most buckets returned.")] = 500,
    host: HostQuery = None,
    field: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_FIELDS,
            description="Paths of the numbers wanted (`modes_percent.user`, "
            "`filesystems[mountpoint=/].percent`); default: the plotted fields.",
        ),
    ] = None,
    resolution: Annotated[
        str | None,
        Query(pattern="^(raw|1m|1h)$", description="Coarsest of raw, 1m, 1h; default: raw."),
    ] = None,
) -> Response | MinutesOut:
    if metric_type not in HISTORY_TYPES:
        raise invalid("metric_type", f"must be one of {', '.join(HISTORY_TYPES)}")
    begin, finish = parse_range(start, end, MAX_RANGE)
    if field and metric_type in minutes.PER_MINUTE_TYPES:
        raise invalid("field", f"{metric_type} history is per-minute accounts, not fields")
    target = await visible_host(user, host, settings, runtime, pool)
    if metric_type in minutes.PER_MINUTE_TYPES:
        return await _accounts(
            request, user.username, reader, gate, target, metric_type, begin, finish, points
        )
    wanted = _fields(metric_type, field)
    raw_max = timedelta(hours=settings.history_raw_max_hours)
    if resolution == "raw" and finish - begin > raw_max:
        raise invalid(
            "resolution",
            f"raw spans at most {settings.history_raw_max_hours:g} hours "
            "(PERFPULSE_HISTORY_RAW_MAX_HOURS)",
        )
    tier, seconds = bucket_width(begin, finish, points, raw_max, resolution or "raw")
    steps = {key: path for key, path in wanted.values()}
    work = reads.series(reader, target, metric_type, steps, begin, finish, tier, seconds)
    series: reads.Series = await _bounded(gate, request, user.username, reader, work)

    def named(values: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
        return {name: values[key] for name, (key, _) in wanted.items()}

    body = {
        "host": target,
        "metric_type": metric_type,
        "start": begin,
        "end": finish,
        "resolution": series.resolution,
        "bucket_seconds": series.bucket_seconds,
        "fields": list(wanted),
        "timestamps": series.timestamps,
        "samples": series.samples,
        "avg": named(series.avg),
        "max": named(series.max),
        "min": named(series.min),
        "last": named(series.last),
    }
    # HistoryOut's shape, written by orjson: validating it into the model and writing it
    # with the standard library took 6 ms of a 24 h series' 25 (bench/README.md, "fleet").
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


async def _accounts(
    request: Request,
    username: str,
    reader: reads.Reader,
    gate: QueryGate,
    host: str,
    metric_type: str,
    begin: datetime,
    finish: datetime,
    points: int,
) -> MinutesOut:
    if finish - begin > MAX_MINUTES_RANGE:
        raise invalid("end", f"{metric_type} history spans at most 24 hours per request")
    width = max(1, math.ceil((finish - begin).total_seconds() / points / ROLLUP_SECONDS))
    bucket = timedelta(seconds=width * ROLLUP_SECONDS)
    work = reads.minute_accounts(reader, host, metric_type, begin, finish)
    rows = await _bounded(gate, request, username, reader, work)
    return MinutesOut(
        host=host,
        metric_type=metric_type,
        start=begin,
        end=finish,
        resolution="1m",
        bucket_seconds=bucket.total_seconds(),
        buckets=minutes.buckets(rows, metric_type, bucket, reads.BUCKET_ORIGIN, MINUTE_TOP),
    )


@router.get("/latest", responses={404: {"description": "unknown host, or nothing stored"}})
async def latest(
    request: Request,
    user: CurrentUser,
    reader: ReaderDep,
    gate: QueryGateDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    pool: PoolDep,
    host: HostQuery = None,
) -> dict[str, Any]:
    target = await visible_host(user, host, settings, runtime, pool)
    found = await _bounded(gate, request, user.username, reader, reads.latest(reader, target))
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stored snapshot for host {target!r}")
    timestamp, sections = found
    return {"timestamp": timestamp.isoformat(), "host": target, **sections}
