"""Alerts for this host: every snapshot evaluated on the tick (microseconds) and given its
open alerts before it is published; the changes kept in PostgreSQL and handed to the
receivers on tasks of their own, so no database or receiver ever holds up a tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.alerts import store
from exporter.alerts.deliver import Receiver
from exporter.alerts.evaluate import FIRING, PENDING, RESOLVED, Alert, Evaluator, brief, end
from exporter.alerts.rules import HOST_SECTION, Rule
from exporter.alerts.silence import SilenceWatch
from exporter.storage.database import DATABASE_ERRORS, Database, describe

if TYPE_CHECKING:
    from exporter.sampler import Snapshot

log = logging.getLogger(__name__)

RESTORE_WAIT = 15.0  # seconds the first evaluation waits for the stored state
SAVE_RETRY = 2.0
MAX_UNSAVED = 10_000


class AlertEngine:
    """`watch_silence` (an instance serving the fleet): also take part in evaluating the
    `host.*` rules for every host (exporter/alerts/silence.py)."""

    def __init__(
        self,
        rules: list[Rule],
        host: str,
        database: Database,
        receivers: list[Receiver],
        *,
        watch_silence: bool = False,
    ) -> None:
        self.rules = rules
        self.names = {rule.alert for rule in rules}
        host_rules = [r for r in rules if r.section == HOST_SECTION]
        self.evaluator = Evaluator([r for r in rules if r.section != HOST_SECTION], host)
        self.silence = (
            SilenceWatch(host_rules, database, self.publish, name=host)
            if watch_silence and host_rules
            else None
        )
        self.evaluator_names = {rule.alert for rule in self.evaluator.rules}
        self.host = host
        self.database = database
        self.receivers = receivers
        self.unsaved: deque[Alert] = deque()
        self.saved_wake = asyncio.Event()
        self.restored = False
        self.evaluating = False
        self.evaluations_total = 0
        self.evaluation_seconds_total = 0.0
        self.unsaved_dropped_total = 0

    async def run(self) -> None:
        """The receivers and the store on their own tasks; the stored state read back
        first (evaluation waits for it, at most RESTORE_WAIT seconds)."""
        tasks: list[asyncio.Task[None]] = []
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                for receiver in self.receivers:
                    tasks.append(
                        asyncio.create_task(receiver.run(client), name=f"alerts {receiver.name}")
                    )
                tasks.append(asyncio.create_task(self._save_forever(), name="alerts store"))
                if self.silence is not None:
                    tasks.append(asyncio.create_task(self.silence.run(), name="alerts silence"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.database.ready.wait(), RESTORE_WAIT)
                await self._restore()
                self.evaluating = True
                await asyncio.Event().wait()  # until cancelled
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def annotate(self, snapshot: Snapshot) -> None:
        """The sampler's hook: evaluate this snapshot on the tick (microseconds) and attach
        the open alerts to it, so the stream and the relay carry them as they change."""
        if not self.evaluating:
            return
        sections = {name: data for name, (data, _) in snapshot.sections().items()}
        self.apply(sections, snapshot.timestamp)
        snapshot.set_alerts([brief(a) for a in self.open()])

    def open(self) -> list[Alert]:
        """Pending and firing now, firing first, oldest first."""
        return sorted(
            self.evaluator.active.values(), key=lambda a: (a.state != FIRING, a.started_at)
        )

    def apply(self, sections: Mapping[str, Mapping[str, Any] | None], at: datetime) -> list[Alert]:
        started = time.perf_counter()
        changes = self.evaluator.evaluate(sections, at)
        self.evaluation_seconds_total += time.perf_counter() - started
        self.evaluations_total += 1
        if changes:
            self.publish(changes)
        return changes

    def publish(self, changes: list[Alert]) -> None:
        """Changes logged (pending ones not), stored, and offered to every receiver."""
        for change in changes:
            if change.state != PENDING:
                log.info(
                    "alert %s %s on %s%s: %s",
                    change.alert,
                    change.state,
                    change.host,
                    "".join(f" {k}={v}" for k, v in change.labels),
                    change.summary,
                )
        self.unsaved.extend(changes)
        while len(self.unsaved) > MAX_UNSAVED:
            self.unsaved.popleft()
            self.unsaved_dropped_total += 1
        self.saved_wake.set()
        for receiver in self.receivers:
            receiver.offer(changes)

    async def _restore(self) -> None:
        """The pending and firing alerts stored before a restart go on where they were:
        no new start is sent for them."""
        if self.restored or not self.database.ready.is_set():
            return
        try:
            alerts = await store.open_alerts(self.database.pool, self.host)
        except DATABASE_ERRORS as exc:
            log.warning("alerts: could not read the stored state yet: %s", describe(exc))
            return
        mine = [a for a in alerts if a.alert in self.evaluator_names]
        self.evaluator.restore(a for a in mine if a.key not in self.evaluator.active)
        self.restored = True
        for receiver in self.receivers:
            receiver.offer([a for a in mine if a.state == FIRING])
        if mine:
            log.info("alerts: %d pending or firing alerts carried over", len(mine))
        # A rule gone from the rules file while its alert was open: ended now, so that
        # neither the dashboard nor Alertmanager keeps it forever.
        orphans = [a for a in alerts if a.alert not in self.names]
        if orphans:
            log.info(
                "alerts: %d open alerts of rules no longer in the rules file resolved: %s",
                len(orphans),
                ", ".join(sorted({a.alert for a in orphans})),
            )
            self.publish([end(a, datetime.now(UTC)) for a in orphans])

    async def _save_forever(self) -> None:
        while True:
            await self.saved_wake.wait()
            self.saved_wake.clear()
            while self.unsaved:
                if not self.database.ready.is_set():
                    await asyncio.sleep(SAVE_RETRY)
                    continue
                if not self.restored:
                    await self._restore()
                batch = list(self.unsaved)
                try:
                    await store.record(self.database.pool, batch)
                except DATABASE_ERRORS as exc:
                    log.warning("alerts: saving state failed, retrying: %s", describe(exc))
                    await asyncio.sleep(SAVE_RETRY)
                    continue
                for _ in batch:
                    self.unsaved.popleft()


class AlertsCollector(Collector):
    """perfpulse_alerts{alertname, severity, state} like Prometheus' ALERTS, and the
    receivers' counters."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        alerts = GaugeMetricFamily(
            "perfpulse_alerts",
            "Alerts of this host's rules now, by name, severity and state (pending or firing).",
            labels=["alertname", "severity", "state"],
        )
        counts = Counter((a.alert, a.severity, a.state) for a in engine.evaluator.active.values())
        for (name, severity, state), count in sorted(counts.items()):
            alerts.add_metric([name, severity, state], count)
        yield alerts
        yield GaugeMetricFamily(
            "perfpulse_alert_rules",
            "Alert rules evaluated on every snapshot.",
            value=len(engine.rules),
        )
        evaluations = CounterMetricFamily(
            "perfpulse_alert_evaluation_seconds",
            "Seconds spent evaluating the alert rules, over all snapshots.",
            value=engine.evaluation_seconds_total,
        )
        yield evaluations
        for name, help_text, attr in (
            ("sent", "Notifications a receiver accepted.", "sent_total"),
            ("failed", "Notification attempts that failed (retried with backoff).", "failed_total"),
            (
                "dropped",
                "Notifications dropped because a receiver's queue was full.",
                "dropped_total",
            ),
        ):
            family = CounterMetricFamily(
                f"perfpulse_alert_notifications_{name}", help_text, labels=["receiver", "kind"]
            )
            for receiver in engine.receivers:
                family.add_metric([receiver.name, receiver.kind], getattr(receiver, attr))
            yield family


__all__ = ["RESOLVED", "AlertEngine", "AlertsCollector"]
