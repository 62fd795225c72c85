"""Hosts that stopped writing: the `host.*` rules (PerfpulseHostStale by default), evaluated
for every host of the fleet by one dashboard instance per database.

A host that is down cannot alert on itself, so the instances that serve the fleet do it,
and only one of them at a time: the one holding a session advisory lock on a direct
connection (as the compactor does). Every CHECK_SECONDS it reads how long each registered
host has been silent (by the database's clock, one query whatever the fleet's size) and
steps each host's `host.*` rules with it; the changes go through the engine like any other
alert (stored, delivered, on /metrics). When the holder goes, its connection and with it
the lock go too, and another instance takes over within LEAD_RETRY_SECONDS: it reads the
open alerts back first, so a host already announced is not announced again. A host removed
from the fleet has its open alerts resolved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from exporter.alerts import store
from exporter.alerts.evaluate import Alert, Evaluator
from exporter.alerts.rules import Rule
from exporter.fleet.hosts import list_hosts
from exporter.storage.database import DATABASE_ERRORS, Database, describe

log = logging.getLogger(__name__)

SILENCE_LOCK_ID = 0x70657266_73696C65  # "perfsile"
CHECK_SECONDS = 2.0
LEAD_RETRY_SECONDS = 10.0


class SilenceWatch:
    """`publish` receives the changes (the engine's: store, receivers, log)."""

    def __init__(
        self,
        rules: list[Rule],
        database: Database,
        publish: Callable[[list[Alert]], None],
        *,
        name: str = "perfpulse",
        check_seconds: float = CHECK_SECONDS,
        retry_seconds: float = LEAD_RETRY_SECONDS,
    ) -> None:
        self.rules = rules
        self.names = {rule.alert for rule in rules}
        self.database = database
        self.publish = publish
        self.name = name
        self.check_seconds = check_seconds
        self.retry_seconds = retry_seconds
        self.evaluators: dict[str, Evaluator] = {}
        self.leading = False
        self.checks_total = 0
        self._told_no_direct = False

    def open(self) -> list[Alert]:
        return [a for evaluator in self.evaluators.values() for a in evaluator.active.values()]

    async def run(self) -> None:
        while True:
            try:
                await self._lead()
            except DATABASE_ERRORS as exc:
                if self.leading:
                    log.warning("alerts: stopped watching hosts' silence: %s", describe(exc))
            finally:
                self.leading = False
                self.evaluators.clear()
            await asyncio.sleep(self.retry_seconds)

    async def _lead(self) -> None:
        """Hold the lock and check until the connection fails (or the task is cancelled);
        return at once when another instance holds it."""
        if not self.database.ready.is_set():
            return
        url = self.database.direct_url
        if url is None:
            if not self._told_no_direct:
                log.info(
                    "alerts: not watching hosts' silence: the database URL goes through a "
                    "transaction pooler; set PERFPULSE_DATABASE_LISTEN_URL (a direct URL)"
                )
                self._told_no_direct = True
            return
        conn = await asyncpg.connect(
            url, server_settings={"application_name": f"{self.name} alerts"[:63]}
        )
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SILENCE_LOCK_ID):
                return
            self.leading = True
            carried = [a for a in await store.open_alerts(conn, None) if a.alert in self.names]
            for alert in carried:
                self._evaluator(alert.host).restore([alert])
            log.info(
                "alerts: watching the fleet's hosts for silence (%d rules); %d alerts carried over",
                len(self.rules),
                len(carried),
            )
            while True:
                listing = await list_hosts(conn)
                self.check(
                    {info.host: (age, info.interval_seconds) for info, age, _ in listing},
                    datetime.now(UTC),
                )
                await asyncio.sleep(self.check_seconds)
        finally:
            await conn.close()  # and with it the lock

    def check(self, silence: dict[str, tuple[float, float]], at: datetime) -> list[Alert]:
        """One step of every host's rules: `silence` maps a host to (seconds since its
        latest write, its interval). Returns and publishes the changes."""
        self.checks_total += 1
        changes: list[Alert] = []
        for host, (age, interval) in silence.items():
            section = {"silent_seconds": age, "silent_intervals": age / max(interval, 1e-3)}
            changes += self._evaluator(host).evaluate({"host": section}, at)
        for host in [h for h in self.evaluators if h not in silence]:
            changes += self.evaluators.pop(host).close(at)
        if changes:
            self.publish(changes)
        return changes

    def _evaluator(self, host: str) -> Evaluator:
        evaluator = self.evaluators.get(host)
        if evaluator is None:
            evaluator = self.evaluators[host] = Evaluator(self.rules, host)
        return evaluator
