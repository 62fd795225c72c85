"""Retention: each tier's data older than its retention goes, hourly, without long locks:
whole partitions dropped (the hot tier and the chunks after PERFPULSE_RETENTION_DAYS, the
minute aggregates after PERFPULSE_RETENTION_MINUTES_DAYS, the hour aggregates after
PERFPULSE_RETENTION_HOURS_DAYS), and the minute rollups deleted in small batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from exporter.storage import users
from exporter.storage.database import Database, DatabaseUnavailable, describe
from exporter.storage.partitions import CHUNKS, HOT, HOURS, MINUTES, drop_partitions_before

log = logging.getLogger(__name__)


async def delete_rollups_before(
    conn: asyncpg.Connection, cutoff: datetime, batch: int = 10_000
) -> int:
    """Delete old minute aggregates in small batches (short locks); returns rows deleted."""
    total = 0
    while True:
        status = await conn.execute(
            """
            DELETE FROM metrics_rollup_1m WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM metrics_rollup_1m WHERE bucket < $1 LIMIT $2))
            """,
            cutoff,
            batch,
        )
        deleted = int(status.rsplit(" ", 1)[1])
        total += deleted
        if deleted < batch:
            return total


class Retention:
    """Drops stored data older than the retention, hourly, without long locks."""

    def __init__(
        self,
        database: Database,
        days: int,
        minutes_days: int = 365,
        hours_days: int = 1825,
        interval: float = 3600.0,
    ) -> None:
        self.database = database
        self.days = days
        self.minutes_days = minutes_days
        self.hours_days = hours_days
        self.interval = interval

    async def run(self) -> None:
        while True:
            with contextlib.suppress(DatabaseUnavailable):
                await self.enforce()
            await asyncio.sleep(self.interval)

    async def enforce(self, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self.days)
        pool = self.database.pool
        try:
            async with pool.acquire() as conn:
                dropped = await drop_partitions_before(conn, cutoff, HOT)
                dropped += await drop_partitions_before(conn, cutoff, CHUNKS)
                dropped += await drop_partitions_before(
                    conn, now - timedelta(days=self.minutes_days), MINUTES
                )
                dropped += await drop_partitions_before(
                    conn, now - timedelta(days=self.hours_days), HOURS
                )
                rollups = await delete_rollups_before(conn, cutoff)
                await users.forget_expired_revocations(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("retention skipped: %s", describe(exc))
            return []
        if dropped or rollups:
            log.info(
                "retention (%d days): dropped %s, %d minute aggregates",
                self.days,
                ", ".join(dropped) or "no partitions",
                rollups,
            )
        return dropped
