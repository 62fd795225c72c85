"""Alert state and history in PostgreSQL (the `alerts` table, migration 0007): one row per
alert instance from the moment it goes pending; resolved rows stay as history."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from exporter.alerts.evaluate import FIRING, PENDING, RESOLVED, Alert

UPSERT = """
INSERT INTO alerts (host, alert, labels, severity, summary, state, value, peak,
                    started_at, fired_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (host, alert, labels) WHERE resolved_at IS NULL
DO UPDATE SET state = excluded.state, value = excluded.value, peak = excluded.peak,
              summary = excluded.summary, fired_at = excluded.fired_at
"""
RESOLVE = """
UPDATE alerts SET state = 'resolved', value = $4, resolved_at = $5
WHERE host = $1 AND alert = $2 AND labels = $3::jsonb AND resolved_at IS NULL
"""
# A pending alert whose condition stopped holding never happened: no history row.
DROP_PENDING = """
DELETE FROM alerts
WHERE host = $1 AND alert = $2 AND labels = $3::jsonb AND resolved_at IS NULL
  AND state = 'pending'
"""
SELECT = (
    "SELECT host, alert, labels, severity, summary, state, value, peak, started_at, "
    "fired_at, resolved_at FROM alerts "
)
OPEN = SELECT + (
    "WHERE resolved_at IS NULL AND ($1::text IS NULL OR host = $1) "
    "ORDER BY state = 'pending', started_at"
)
FIRED = SELECT + (
    "WHERE fired_at IS NOT NULL AND ($1::text IS NULL OR host = $1) AND started_at < $3 "
    "AND (resolved_at IS NULL OR resolved_at >= $2) ORDER BY started_at DESC LIMIT $4"
)


def _labels(alert: Alert) -> str:
    return json.dumps(alert.label_map(), sort_keys=True)


async def record(pool: asyncpg.Pool, changes: list[Alert]) -> None:
    """Changes in order, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        for a in changes:
            labels = _labels(a)
            if a.state == RESOLVED and a.fired_at is None:
                await conn.execute(DROP_PENDING, a.host, a.alert, labels)
            elif a.state == RESOLVED:
                await conn.execute(RESOLVE, a.host, a.alert, labels, a.value, a.resolved_at)
            else:
                await conn.execute(
                    UPSERT,
                    a.host,
                    a.alert,
                    labels,
                    a.severity,
                    a.summary,
                    a.state,
                    a.value,
                    a.peak,
                    a.started_at,
                    a.fired_at,
                )


def _alert(row: asyncpg.Record) -> Alert:
    labels = json.loads(row["labels"]) if isinstance(row["labels"], str) else row["labels"]
    return Alert(
        alert=row["alert"],
        host=row["host"],
        labels=tuple(sorted(labels.items())),
        severity=row["severity"],
        summary=row["summary"],
        state=row["state"],
        value=row["value"],
        peak=row["peak"],
        started_at=row["started_at"],
        fired_at=row["fired_at"],
        resolved_at=row["resolved_at"],
    )


async def open_alerts(pool: asyncpg.Pool, host: str | None) -> list[Alert]:
    """Pending and firing alerts now, of one host or (None) of every host."""
    rows = await pool.fetch(OPEN, host)
    return [_alert(r) for r in rows]


async def history(
    pool: asyncpg.Pool, host: str | None, start: datetime, end: datetime, limit: int
) -> list[Alert]:
    """Alerts that fired and overlapped [start, end), newest first."""
    rows = await pool.fetch(FIRED, host, start, end, limit)
    return [_alert(r) for r in rows]


def as_json(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.alert,
        "host": alert.host,
        "labels": alert.label_map(),
        "severity": alert.severity,
        "summary": alert.summary,
        "state": alert.state,
        "value": alert.value,
        "peak": alert.peak,
        "started_at": alert.started_at.isoformat(),
        "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


__all__ = ["FIRING", "PENDING", "RESOLVED", "as_json", "history", "open_alerts", "record"]
