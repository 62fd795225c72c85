"""Hosts as the fleet sees them: the `hosts` table and each host's latest summary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from exporter.collectors.base import JSON
from exporter.sinks.summary import SUMMARY_KEYS, Summary

CHANNEL = "perfpulse_live"
# A host is stale when it has not written for this many of its intervals.
STALE_AFTER_INTERVALS = 3


@dataclass(slots=True)
class HostInfo:
    """One host in the fleet list; `to_json` is the shape /api/hosts and the fleet stream
    share."""

    host: str
    last_seen: datetime
    interval_seconds: float
    version: str
    stale: bool
    summary: Summary | None
    collectors: list[str]

    def to_json(self) -> JSON:
        summary = self.summary or {}
        return {
            "host": self.host,
            "last_seen": self.last_seen.isoformat().replace("+00:00", "Z"),
            "interval_seconds": self.interval_seconds,
            "stale": self.stale,
            "version": self.version,
            "collectors": self.collectors,
            "summary": {name: summary.get(name) for name in SUMMARY_KEYS},
        }


# hosts.last_seen is refreshed once a minute; the live row has the latest write (until a
# crash empties the unlogged table).
LIST = """
SELECT h.host, greatest(h.last_seen, l.received_at) AS last_seen, h.interval_seconds,
       h.version, h.collectors, l.summary::text AS summary, l.seq,
       extract(epoch FROM now() - greatest(h.last_seen, l.received_at)) AS age
FROM hosts h LEFT JOIN live_snapshots l USING (host)
{where}
ORDER BY h.host
"""


def _row_to_info(row: asyncpg.Record) -> HostInfo:
    summary = orjson.loads(row["summary"]) if row["summary"] is not None else None
    return HostInfo(
        host=row["host"],
        last_seen=row["last_seen"],
        interval_seconds=row["interval_seconds"],
        version=row["version"],
        stale=float(row["age"]) > STALE_AFTER_INTERVALS * row["interval_seconds"],
        summary=summary,
        collectors=list(row["collectors"]),
    )


async def list_hosts(db: Any) -> list[tuple[HostInfo, float, int | None]]:
    """Every registered host, with how many seconds ago it last wrote and its latest seq."""
    rows = await db.fetch(LIST.format(where=""))
    return [(_row_to_info(row), float(row["age"]), row["seq"]) for row in rows]


async def host_info(db: Any, host: str) -> HostInfo | None:
    row = await db.fetchrow(LIST.format(where="WHERE h.host = $1"), host)
    return _row_to_info(row) if row is not None else None


async def remove_host(db: Any, host: str) -> bool:
    """Forget a host (its stored history stays until retention); tells the listeners."""
    async with db.transaction():
        found = await db.fetchval("DELETE FROM hosts WHERE host = $1 RETURNING true", host)
        await db.execute("DELETE FROM live_snapshots WHERE host = $1", host)
        if found:
            notice = orjson.dumps({"host": host, "removed": True}).decode()
            await db.execute("SELECT pg_notify($1, $2)", CHANNEL, notice)
    return bool(found)


async def host_exists(db: Any, host: str) -> bool:
    """Whether `host` is registered in the fleet."""
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM hosts WHERE host = $1)", host))
