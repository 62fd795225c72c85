"""The relay's sending half: each snapshot's live form goes to PostgreSQL, one statement a
tick (no NOTIFY: listeners read the changed rows, exporter/fleet/listener.py), for any
instance serving the dashboard to stream.

Live data is state: when the database is slow or down, a tick's publish is skipped, never
queued (the batch writer keeps every snapshot for history; this only feeds live views).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime

import orjson
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.alerts.evaluate import worst
from exporter.sampler import Sampler, Snapshot
from exporter.sinks.summary import ALERTS_FIRING, ALERTS_WORST, summarize
from exporter.storage.database import DATABASE_ERRORS, Database, describe
from exporter.storage.literals import literal

log = logging.getLogger(__name__)

PUBLISH = "SELECT perfpulse_publish($1, $2, $3, $4, $5, $6, $7, $8, $9)"


def publish_sql(args: PublishArgs) -> str:
    """PUBLISH as one simple query, its values written in as literals.

    Through a transaction-mode pooler a statement with parameters needs a transaction of
    its own (parse, then bind and run, cannot be split between server connections): BEGIN,
    the statement, COMMIT, with an unnamed statement parsed each time. The simple query is
    one round trip and costs PostgreSQL less (bench/README.md)."""
    host, seq, timestamp, interval, version, collectors, summary, snapshot, notice = args
    names = ", ".join(literal(name) for name in collectors)
    return (
        f"SELECT perfpulse_publish({literal(host)}, {int(seq)}, "
        f"{literal(timestamp.isoformat())}::timestamptz, {float(interval)!r}::float8, "
        f"{literal(version)}, ARRAY[{names}]::text[], {literal(summary)}::json, "
        f"{literal(snapshot)}, {literal(notice)})"
    )


# host, seq, time, interval, version, collectors, summary, snapshot, notice
PublishArgs = tuple[str, int, datetime, float, str, list[str], str, str, str]


def publish_args(snapshot: Snapshot, interval: float) -> PublishArgs:
    """The statement's arguments: host, seq, time, interval, version, collectors,
    summary, the snapshot as the stream sends it, and an empty notice (the function's last
    parameter, kept for agents of earlier versions; listeners read the rows themselves
    since migration 0009)."""
    sections = {name: data for name, (data, _) in snapshot.sections().items()}
    summary = summarize(sections)
    alerts = snapshot.alerts
    if alerts is not None:
        summary[ALERTS_FIRING] = float(sum(1 for a in alerts if a.get("state") == "firing"))
        summary[ALERTS_WORST] = worst(alerts)
    collectors = sorted(name for name, data in sections.items() if data.get("available"))
    return (
        snapshot.host,
        snapshot.seq,
        snapshot.timestamp,
        interval,
        __version__,
        collectors,
        orjson.dumps(summary).decode(),
        snapshot.to_json().decode(),
        "",
    )


class RelayPublisher:
    """Publishes the newest snapshot each tick; skips (and counts) what it cannot send."""

    def __init__(self, database: Database, interval: float, *, simple: bool = False) -> None:
        self.database = database
        self.interval = interval
        self.simple = simple  # one simple query (through a transaction pooler)
        self.published_total = 0
        self.skipped_total = 0
        self._failing = False

    async def run(self, sampler: Sampler) -> None:
        subscription = sampler.subscribe(maxsize=1)  # only the newest matters
        try:
            async for snapshot in subscription:
                await self.publish(snapshot)
                self.skipped_total += subscription.dropped
                subscription.dropped = 0
        finally:
            subscription.close()

    async def publish(self, snapshot: Snapshot) -> bool:
        if not self.database.ready.is_set():
            self.skipped_total += 1
            return False
        try:
            # A publish never outlives its tick: the next one carries newer data.
            async with asyncio.timeout(self.interval):
                args = publish_args(snapshot, self.interval)
                if self.simple:
                    await self.database.relay.execute(publish_sql(args))
                else:
                    await self.database.relay.execute(PUBLISH, *args)
        except DATABASE_ERRORS as exc:  # TimeoutError among them
            self.skipped_total += 1
            if not self._failing:
                log.warning(
                    "live relay: publish failed, skipping until it works: %s", describe(exc)
                )
                self._failing = True
            return False
        if self._failing:
            log.info("live relay: publishing again")
            self._failing = False
        self.published_total += 1
        return True


class RelayCollector(Collector):
    """perfpulse_relay_* metrics."""

    def __init__(self, publisher: RelayPublisher) -> None:
        self._publisher = publisher

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "perfpulse_relay_published_total",
            "Snapshots relayed through PostgreSQL to the fleet's live views.",
            value=self._publisher.published_total,
        )
        yield CounterMetricFamily(
            "perfpulse_relay_skipped_total",
            "Snapshots not relayed (database slow or down); history still has them.",
            value=self._publisher.skipped_total,
        )
