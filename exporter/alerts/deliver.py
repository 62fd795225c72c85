"""Delivery: firing and resolved alerts to Alertmanager's v2 API, and state changes to
webhooks. Each receiver has its own task and a bounded queue; a receiver that is down is
retried with backoff and never holds up the tick, the stream or another receiver. What
could not be delivered is counted (perfpulse_alert_notifications_failed_total)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from exporter.alerts.evaluate import FIRING, RESOLVED, Alert
from exporter.alerts.store import as_json

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
POST_TIMEOUT = 10.0
QUEUE_SIZE = 1000
SIGNATURE_HEADER = "X-Perfpulse-Signature"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def redact(url: str) -> str:
    """A receiver's name for logs and metrics: scheme, host and path, no credentials or
    query (a webhook URL may carry a token)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


class Receiver:
    kind = "receiver"

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = redact(url)
        self.sent_total = 0
        self.failed_total = 0
        self.dropped_total = 0
        self.wake = asyncio.Event()
        self._failing = False

    def offer(self, changes: Iterable[Alert]) -> None:
        raise NotImplementedError

    async def run(self, client: httpx.AsyncClient) -> None:
        raise NotImplementedError

    async def _post(self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> bool:
        try:
            response = await client.post(
                self.url,
                content=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=POST_TIMEOUT,
            )
            ok = 200 <= response.status_code < 300
            reason = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, reason = False, type(exc).__name__
        if ok:
            self.sent_total += 1
            if self._failing:
                log.info("alerts: %s %s receives again", self.kind, self.name)
                self._failing = False
            return True
        self.failed_total += 1
        if not self._failing:
            log.warning(
                "alerts: %s %s failed (%s); retrying with backoff", self.kind, self.name, reason
            )
            self._failing = True
        return False


class AlertmanagerReceiver(Receiver):
    """Posts every firing alert to `/api/v2/alerts` at once and again every `resend`
    seconds while it fires (endsAt four resends ahead, as Prometheus does, so that
    Alertmanager resolves it by itself if perfpulse goes away), and each resolved one once
    with its end."""

    kind = "alertmanager"

    def __init__(self, url: str, resend: float) -> None:
        super().__init__(url.rstrip("/") + "/api/v2/alerts" if "/api/v2/alerts" not in url else url)
        self.resend = resend
        self.firing: dict[tuple[str, str, tuple[tuple[str, str], ...]], Alert] = {}
        self.resolved: deque[Alert] = deque()

    def offer(self, changes: Iterable[Alert]) -> None:
        for alert in changes:
            key = (alert.host, alert.alert, alert.labels)
            if alert.state == FIRING:
                self.firing[key] = alert
            elif alert.state == RESOLVED and alert.fired_at is not None:
                self.firing.pop(key, None)
                if len(self.resolved) >= QUEUE_SIZE:
                    self.resolved.popleft()
                    self.dropped_total += 1
                self.resolved.append(alert)
            self.wake.set()

    def body(self, now: datetime) -> list[dict[str, Any]]:
        ends = now + timedelta(seconds=4 * self.resend)
        out = []
        for alert in [*self.firing.values(), *self.resolved]:
            labels = {
                **alert.label_map(),
                "alertname": alert.alert,
                "host": alert.host,
                "severity": alert.severity,
                "source": "perfpulse",
            }
            out.append(
                {
                    "labels": labels,
                    "annotations": {"summary": alert.summary},
                    "startsAt": _iso(alert.started_at),
                    "endsAt": _iso(alert.resolved_at if alert.resolved_at else ends),
                }
            )
        return out

    async def run(self, client: httpx.AsyncClient) -> None:
        delay = BACKOFF_BASE
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.resend)
            self.wake.clear()
            if not self.firing and not self.resolved:
                continue
            sending = len(self.resolved)
            body = json.dumps(self.body(datetime.now(UTC))).encode()
            if await self._post(client, body, {}):
                for _ in range(sending):
                    self.resolved.popleft()
                delay = BACKOFF_BASE
            else:
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
                self.wake.set()


class WebhookReceiver(Receiver):
    """One JSON body per state change (firing, resolved), in order, each delivered once:
    retried with backoff until the receiver takes it. Signed with HMAC-SHA256 of the body
    when a secret is set (`X-Perfpulse-Signature: sha256=<hex>`)."""

    kind = "webhook"

    def __init__(self, url: str, secret: bytes | None) -> None:
        super().__init__(url)
        self.secret = secret
        self.queue: deque[Alert] = deque()

    def offer(self, changes: Iterable[Alert]) -> None:
        for alert in changes:
            if alert.state == FIRING or (alert.state == RESOLVED and alert.fired_at is not None):
                if len(self.queue) >= QUEUE_SIZE:
                    self.queue.popleft()
                    self.dropped_total += 1
                self.queue.append(alert)
                self.wake.set()

    def payload(self, alert: Alert) -> bytes:
        body = {"source": "perfpulse", **as_json(alert)}
        body["id"] = f"{alert.host}/{alert.alert}/{_iso(alert.started_at)}/{alert.state}"
        return json.dumps(body, sort_keys=True).encode()

    def headers(self, body: bytes) -> dict[str, str]:
        if not self.secret:
            return {}
        digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return {SIGNATURE_HEADER: f"sha256={digest}"}

    async def run(self, client: httpx.AsyncClient) -> None:
        delay = BACKOFF_BASE
        while True:
            if not self.queue:
                await self.wake.wait()
                self.wake.clear()
                continue
            body = self.payload(self.queue[0])
            if await self._post(client, body, self.headers(body)):
                self.queue.popleft()
                delay = BACKOFF_BASE
            else:
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
