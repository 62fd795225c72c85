# ruff: noqa: F811  (the browser and env fixtures come from tests/test_browser.py)
"""Alerts delivered for real: to Debian's Alertmanager (started here on a free port) and to
a local webhook receiver, from a real `perfpulse serve` whose rule a CPU burner makes fire."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.aio import run
from tests.conftest import token_for
from tests.servers import free_port, serve
from tests.test_browser import browser, env  # noqa: F401
from tests.test_who_is_busy import BURNER, running
from tests.test_ws import add_user

pytestmark = pytest.mark.e2e

RULES = """\
rules:
  - alert: TestCpuBusy
    expr: cpu.usage_percent > 75
    for: {for_}
    severity: page
    summary: "CPU {{{{ value }}}} % busy on {{{{ host }}}}"
    labels: {{team: test}}
"""
AM_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: blackhole
"""
INTERVAL = 0.5


@contextmanager
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager")
    assert binary, "prometheus-alertmanager is missing: `make test` installs Debian's package"
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG)
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "alertmanager not ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def am_alerts(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/v2/alerts", params={"filter": 'alertname="TestCpuBusy"'})
    answer.raise_for_status()
    return answer.json()


def wait_for(condition, timeout: float, what: str, step: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(step)


def stored_rows(database_url: str, alert: str = "TestCpuBusy") -> list[dict[str, Any]]:
    import asyncpg

    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT state, started_at, fired_at, resolved_at FROM alerts "
                "WHERE alert = $1 ORDER BY started_at",
                alert,
            )
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return run(fetch())


def test_a_burners_alert_reaches_alertmanager_survives_a_restart_and_resolves(server_env, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.format(for_="2s"))
    run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    with alertmanager(tmp_path) as am:
        env = {
            **server_env,
            "PERFPULSE_HOSTNAME": "alerthost",
            "PERFPULSE_ALERT_RULES": str(rules),
            "PERFPULSE_ALERTMANAGER_URL": am,
            "PERFPULSE_ALERT_RESEND_SECONDS": "2",
        }
        with serve(tmp_path, "--interval", str(INTERVAL), env=env) as server:
            with running(BURNER):
                started = time.monotonic()
                [alert] = wait_for(lambda: am_alerts(am), 30, "the alert in Alertmanager")
                took = time.monotonic() - started
                print(f"in Alertmanager {took:.1f} s after the burner started (for: 2s)")
                labels = alert["labels"]
                assert {
                    k: labels[k] for k in ("alertname", "host", "severity", "team", "source")
                } == {
                    "alertname": "TestCpuBusy",
                    "host": "alerthost",
                    "severity": "page",
                    "team": "test",
                    "source": "perfpulse",
                }
                assert "busy on alerthost" in alert["annotations"]["summary"]
                metrics = httpx.get(server.url + "/metrics").text
                assert (
                    'perfpulse_alerts{alertname="TestCpuBusy",severity="page",state="firing"} 1.0'
                    in metrics
                )
                starts_at = alert["startsAt"]
                server.stop()
                # Restarted while it fires: it goes on, with its start, and no new row.
                with serve(tmp_path, "--interval", str(INTERVAL), env=env) as again:
                    time.sleep(5)  # two resends and more
                    [still] = am_alerts(am)
                    assert still["startsAt"] == starts_at
                    rows = stored_rows(server_env["PERFPULSE_DATABASE_URL"])
                    assert [r["state"] for r in rows] == ["firing"], rows
                    token = httpx.post(
                        again.url + "/api/auth/login",
                        json={"username": "alice", "password": "password1"},
                    ).json()["access_token"]
                    now = httpx.get(
                        again.url + "/api/alerts", headers={"Authorization": f"Bearer {token}"}
                    ).json()
                    assert [(a["alert"], a["state"]) for a in now["alerts"]] == [
                        ("TestCpuBusy", "firing")
                    ]
            # The burner is gone: resolved in Alertmanager (ended) and stored as resolved.
            with serve(tmp_path, "--interval", str(INTERVAL), env=env):
                wait_for(
                    lambda: all(
                        datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00")).timestamp()
                        <= time.time() + 1
                        for a in am_alerts(am)
                    ),
                    30,
                    "the alert resolved in Alertmanager",
                )
                rows = wait_for(
                    lambda: [
                        r
                        for r in stored_rows(server_env["PERFPULSE_DATABASE_URL"])
                        if r["resolved_at"] is not None
                    ],
                    10,
                    "the stored alert resolved",
                )
                assert len(rows) == 1 and rows[0]["started_at"] <= rows[0]["fired_at"]


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_arrive_once_each_signed_after_30_s_down_and_the_tick_never_waits(
    server_env, tmp_path
):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.format(for_="0s"))
    port = free_port()
    secret = "webhook-secret-for-the-test"
    env = {
        **server_env,
        "PERFPULSE_HOSTNAME": "hookhost",
        "PERFPULSE_ALERT_RULES": str(rules),
        "PERFPULSE_ALERT_WEBHOOK_URLS": f"http://127.0.0.1:{port}/hook?token=abc",
        "PERFPULSE_ALERT_WEBHOOK_SECRET": secret,
    }
    Receiver.received = []
    with serve(tmp_path, "--interval", str(INTERVAL), env=env) as server:
        seq0 = httpx.get(server.url + "/healthz").json()["seq"]
        down_since = time.monotonic()
        with running(BURNER):
            time.sleep(4)
        time.sleep(2)  # the resolving snapshot
        # The receiver is down for 30 s in all; meanwhile the ticks go on.
        time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
        ticks = httpx.get(server.url + "/healthz").json()["seq"] - seq0
        expected = (time.monotonic() - down_since) / INTERVAL
        assert ticks >= 0.8 * expected, f"{ticks} ticks in {expected:.0f} intervals"
        metrics = httpx.get(server.url + "/metrics").text
        failed = [
            line
            for line in metrics.splitlines()
            if line.startswith("perfpulse_alert_notifications_failed_total{")
        ]
        assert failed and float(failed[0].split()[-1]) > 0, failed
        assert "token=abc" not in metrics and "token=abc" not in server.log()
        httpd = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(Receiver.received) >= 2, 40, "both webhooks", step=0.5)
            time.sleep(3)  # nothing more comes
        finally:
            httpd.shutdown()
            httpd.server_close()
    bodies = [json.loads(body) for _, body in Receiver.received]
    assert [b["state"] for b in bodies] == ["firing", "resolved"], bodies
    assert {b["alert"] for b in bodies} == {"TestCpuBusy"}
    assert bodies[0]["host"] == "hookhost" and bodies[1]["resolved_at"]
    for headers, body in Receiver.received:
        signature = headers.get("X-Perfpulse-Signature")
        expected_sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected_sig}"


def test_the_alert_bar_comes_and_goes_and_the_alerts_page_keeps_it(browser, env, tmp_path):
    from playwright.sync_api import expect

    from tests.test_browser import log_in, shoot
    from tests.test_dashboard_basics import overlapping_labels

    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.format(for_="1s"))
    env = {**env, "PERFPULSE_ALERT_RULES": str(rules)}
    with serve(tmp_path, "--interval", str(INTERVAL), env=env) as server:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        log_in(page, server.url)
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        bar = page.locator("[data-test=alert-bar]")
        expect(bar).to_have_count(0)
        mark = page.locator("[data-panel=cpu] svg text").filter(has_text="TestCpuBusy >")
        tile = page.locator("[data-summary=cpu]")
        with running(BURNER):
            expect(bar).to_contain_text("TestCpuBusy", timeout=20_000)
            # The threshold on the CPU chart while it fires; the tile at the rule's level
            # (severity page: critical from 75 %), not the fixed 95 %.
            expect(mark).to_have_count(1, timeout=5_000)
            expect(tile).to_have_attribute("data-level", "critical", timeout=10_000)
            assert overlapping_labels(page) == []
            shoot(page, "alerts-bar-1440.png")
        expect(bar).to_have_count(0, timeout=20_000)
        expect(mark).to_have_count(0, timeout=5_000)
        page.click("header.top > nav >> text=Alerts")
        expect(page.locator("[data-test=no-alerts]")).to_be_visible()
        past = page.locator("[data-test=alerts-history] tr[data-alert=TestCpuBusy]")
        # Fired (once, or again if a tick of the burner dipped under the threshold), and
        # every time resolved.
        expect(past.first).to_be_visible(timeout=10_000)
        resolved = past.locator("td:nth-child(5)").all_inner_texts()
        assert resolved and "firing" not in resolved, resolved
        shoot(page, "alerts-page-1440.png")
        page.close()


SILENCE_RULES = """\
rules:
  - alert: TestHostStale
    expr: host.silent_intervals > 3
    for: 0s
    severity: warning
"""


def test_a_silent_host_is_announced_once_by_one_of_two_dashboards_even_across_a_handover(
    server_env, tmp_path
):
    """Two dashboard-only instances watch one agent. The agent stops: one firing webhook,
    whichever instance holds the lock. That instance stops: the other takes over without
    announcing it again. The agent comes back: one resolved webhook."""
    rules = tmp_path / "rules.yml"
    rules.write_text(SILENCE_RULES)
    port = free_port()
    common = {**server_env, "PERFPULSE_ALERT_RULES": str(rules), "PERFPULSE_PERF_ENABLED": "false"}
    hook = {"PERFPULSE_ALERT_WEBHOOK_URLS": f"http://127.0.0.1:{port}/hook"}

    def env(name: str, **extra: str) -> dict[str, str]:
        return {
            **common,
            "PERFPULSE_HOSTNAME": name,
            "PERFPULSE_DATA_DIR": str(tmp_path / name),
            **extra,
        }

    agent = env("quiet", PERFPULSE_DASHBOARD="false")
    dashboards = {
        name: env(name, PERFPULSE_COLLECT="false", **hook) for name in ("central1", "central2")
    }
    run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    Receiver.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    watching = "watching the fleet's hosts for silence"

    def states() -> list[str]:
        return [json.loads(body)["state"] for _, body in Receiver.received]

    try:
        with ExitStack() as stack:
            served = {
                name: stack.enter_context(serve(tmp_path, env=e)) for name, e in dashboards.items()
            }
            auth = {"Authorization": f"Bearer {token_for()}"}
            with serve(tmp_path, "--interval", str(INTERVAL), env=agent):
                wait_for(
                    lambda: httpx.get(served["central1"].url + "/api/hosts", headers=auth).json(),
                    15,
                    "the agent in the fleet",
                )
                assert states() == []
            # Now it is silent.
            wait_for(lambda: states() == ["firing"], 15, "the firing webhook")
            [leader] = [n for n, s in served.items() if watching in s.log()]
            [other] = [n for n in served if n != leader]
            answer = httpx.get(
                served[other].url + "/api/alerts", params={"host": "*"}, headers=auth
            ).json()
            assert [(a["alert"], a["host"], a["state"]) for a in answer["alerts"]] == [
                ("TestHostStale", "quiet", "firing")
            ]
            rules = httpx.get(served[other].url + "/api/alerts/rules", headers=auth).json()
            assert rules["enabled"] is True
            assert [(r["alert"], r["steps"], r["op"], r["threshold"]) for r in rules["rules"]] == [
                ("TestHostStale", ["host", "silent_intervals"], ">", 3.0)
            ]
            assert httpx.get(served[other].url + "/api/alerts/rules").status_code == 401
            assert served.pop(leader).stop() == 0
            wait_for(lambda: watching in served[other].log(), 20, "the other instance leading")
            assert "1 alerts carried over" in served[other].log()
            time.sleep(3)
            assert states() == ["firing"]  # not announced again
            with serve(tmp_path, "--interval", str(INTERVAL), env=agent):
                wait_for(lambda: states() == ["firing", "resolved"], 15, "the resolved webhook")
                time.sleep(2)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert states() == ["firing", "resolved"]
    bodies = [json.loads(body) for _, body in Receiver.received]
    assert {(b["alert"], b["host"]) for b in bodies} == {("TestHostStale", "quiet")}
    rows = stored_rows(server_env["PERFPULSE_DATABASE_URL"], "TestHostStale")
    assert [r["state"] for r in rows] == ["resolved"]
