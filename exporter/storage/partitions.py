"""Time partitions of the history tables: created before a write, dropped whole.

Each tier is partitioned by time so that what leaves it goes as a table (milliseconds,
little WAL) instead of deleted rows (bench/README.md: 14 ms against 158 ms for one day):

- metrics_snapshots (the hot tier): 10-minute windows, dropped by the compactor once
  packed; daily partitions made before migration 0006 are read and compacted alike;
- metrics_chunks: days; metrics_minutes: months; metrics_hours: years, dropped by
  retention.

A partition is created empty and attached (a SHARE UPDATE EXCLUSIVE lock on the parent,
which lets reads and writes go on) rather than created as a partition (ACCESS EXCLUSIVE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

# Serializes partition creation between perfpulse processes sharing one database.
PARTITION_LOCK_ID = 0x70657266_70617274  # "perfpart"
WINDOW = timedelta(minutes=10)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Partitioning:
    """How one table is cut: `unit` is "window" (10 minutes), "day", "month" or "year"."""

    table: str
    unit: str

    def start_of(self, ts: datetime) -> datetime:
        ts = ts.astimezone(UTC)
        if self.unit == "window":
            return EPOCH + (ts - EPOCH) // WINDOW * WINDOW
        if self.unit == "day":
            return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)
        if self.unit == "month":
            return datetime(ts.year, ts.month, 1, tzinfo=UTC)
        return datetime(ts.year, 1, 1, tzinfo=UTC)

    def end_of(self, start: datetime) -> datetime:
        if self.unit == "window":
            return start + WINDOW
        if self.unit == "day":
            return start + timedelta(days=1)
        if self.unit == "month":
            return (start + timedelta(days=32)).replace(day=1)
        return start.replace(year=start.year + 1)

    def name(self, start: datetime) -> str:
        stamp = {"window": "%Y%m%d%H%M", "day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}
        return f"{self.table}_p{start:{stamp[self.unit]}}"

    def parse(self, name: str) -> tuple[datetime, datetime] | None:
        """(start, end) of a partition of this table by its name, or None."""
        match = re.fullmatch(rf"{self.table}_p(\d+)", name)
        if match is None:
            return None
        digits = match[1]
        # The hot tier also has the daily partitions made before 0006.
        formats = {12: ("%Y%m%d%H%M", "window"), 8: ("%Y%m%d", "day"), 6: ("%Y%m", "month")}
        formats[4] = ("%Y", "year")
        if len(digits) not in formats:
            return None
        pattern, unit = formats[len(digits)]
        start = datetime.strptime(digits, pattern).replace(tzinfo=UTC)
        return start, Partitioning(self.table, unit).end_of(start)


def calendar(unit: str) -> Partitioning:
    """The start and end of days or months ("day", "month") for what is cut by the
    calendar without being a table."""
    return Partitioning("", unit)


HOT = Partitioning("metrics_snapshots", "window")
LEGACY_HOT = Partitioning("metrics_snapshots", "day")
CHUNKS = Partitioning("metrics_chunks", "day")
MINUTES = Partitioning("metrics_minutes", "month")
HOURS = Partitioning("metrics_hours", "year")


def day_of(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


async def ensure(conn: asyncpg.Connection, part: Partitioning, moments: Iterable[datetime]) -> None:
    """Create the partitions holding `moments` that do not exist yet (idempotent,
    concurrency-safe)."""
    starts = sorted({part.start_of(m) for m in moments})
    if not starts:
        return
    wanted = {part.name(s): s for s in starts}
    names = list(wanted)
    if part is HOT:  # a daily partition from before 0006 already holds its windows
        names += [LEGACY_HOT.name(LEGACY_HOT.start_of(s)) for s in starts]
    existing = {
        row["relname"]
        for row in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = ANY($1::text[])", names
        )
    }
    missing = [
        s
        for name, s in wanted.items()
        if name not in existing
        and not (part is HOT and LEGACY_HOT.name(LEGACY_HOT.start_of(s)) in existing)
    ]
    if not missing:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_ID)
        for start in missing:
            name = part.name(start)
            if await conn.fetchval("SELECT 1 FROM pg_class WHERE relname = $1", name):
                continue
            # Names and bounds come from dates, never from input: safe to format in.
            await conn.execute(
                f"CREATE TABLE {name} (LIKE {part.table} INCLUDING DEFAULTS INCLUDING STORAGE)"
            )
            await conn.execute(
                f"ALTER TABLE {part.table} ATTACH PARTITION {name} FOR VALUES "
                f"FROM ('{start.isoformat()}') TO ('{part.end_of(start).isoformat()}')"
            )


async def ensure_partitions(conn: asyncpg.Connection, timestamps: Iterable[datetime]) -> None:
    """The hot partitions for these snapshot times, and the next window's, made ahead so
    that writers rarely meet a window that does not exist yet."""
    moments = list(timestamps)
    if moments:
        moments.append(max(moments) + WINDOW)
    await ensure(conn, HOT, moments)


async def listing(
    conn: asyncpg.Connection, part: Partitioning
) -> list[tuple[str, datetime, datetime]]:
    """(name, start, end) of the table's partitions, oldest first."""
    rows = await conn.fetch(
        """
        SELECT child.relname FROM pg_inherits
        JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
        JOIN pg_class child ON child.oid = pg_inherits.inhrelid
        WHERE parent.relname = $1
        """,
        part.table,
    )
    found = []
    for row in rows:
        bounds = part.parse(row["relname"])
        if bounds is not None:
            found.append((row["relname"], *bounds))
    return sorted(found, key=lambda item: item[1])


async def drop_partitions_before(
    conn: asyncpg.Connection, cutoff: datetime, part: Partitioning = HOT
) -> list[str]:
    """Drop every partition of the table that ends at or before `cutoff`; returns their
    names."""
    dropped = []
    for name, _, end in await listing(conn, part):
        if end <= cutoff:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    return dropped
