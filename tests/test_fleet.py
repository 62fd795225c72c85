"""The fleet end to end: three real `perfpulse serve` processes on one PostgreSQL, directly
and through a real PgBouncer in transaction mode."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.db import fetchval
from tests.pgbouncer import pgbouncer, relay_url, show
from tests.servers import Served, free_port, serve
from tests.test_ws import add_user

pytestmark = pytest.mark.e2e

INTERVAL = 0.5
NAMES = ("alpha", "bravo", "charlie")
SUMMARY = {
    "cpu_busy_ratio",
    "memory_used_ratio",
    "network_receive_bytes_per_second",
    "network_transmit_bytes_per_second",
    "disk_read_bytes_per_second",
    "disk_write_bytes_per_second",
    "top_process",
    "top_process_cpu_percent",
    "top_group",
    "top_group_cpu_percent",
    "alerts_firing",
    "alerts_worst",
}


def instance_env(server_env: dict[str, str], tmp_path: Path, name: str, url: str) -> dict[str, str]:
    return {
        **server_env,
        "PERFPULSE_HOSTNAME": name,
        "PERFPULSE_DATA_DIR": str(tmp_path / name),
        "PERFPULSE_DATABASE_URL": url,
        "PERFPULSE_PERF_ENABLED": "false",
    }


class Fleet:
    def __init__(self, tmp_path: Path, envs: dict[str, dict[str, str]]) -> None:
        self.tmp_path = tmp_path
        self.envs = envs
        self.ports = {name: free_port() for name in envs}
        self.stack = ExitStack()
        self.served: dict[str, Served] = {}
        self.url = ""  # what the instances connect to (PgBouncer's, when pooled)

    def start(self, name: str) -> Served:
        self.served[name] = self.stack.enter_context(
            serve(
                self.tmp_path,
                "--interval",
                str(INTERVAL),
                env=self.envs[name],
                port=self.ports[name],
            )
        )
        return self.served[name]

    def stop(self, name: str) -> None:
        assert self.served.pop(name).stop(signal.SIGTERM) == 0


@contextmanager
def fleet_of_three(tmp_path: Path, server_env: dict[str, str], *, pooled: bool) -> Iterator[Fleet]:
    """alpha serves the dashboard and collects; bravo and charlie are agents (no
    dashboard). With `pooled`, all three write through PgBouncer and alpha listens on the
    direct URL."""
    direct = server_env["PERFPULSE_DATABASE_URL"]
    asyncio.run(add_user(direct))
    with ExitStack() as outer:
        url = (
            outer.enter_context(pgbouncer(direct, pool_size=3, relay_pool=1)) if pooled else direct
        )
        envs = {name: instance_env(server_env, tmp_path, name, url) for name in NAMES}
        for name in ("bravo", "charlie"):
            envs[name]["PERFPULSE_DASHBOARD"] = "false"
        if pooled:
            for env in envs.values():
                env["PERFPULSE_DATABASE_TRANSACTION_POOLING"] = "true"
                # The relay on a PgBouncer pool of its own (docs/fleet.md).
                env["PERFPULSE_DATABASE_RELAY_URL"] = relay_url(url)
            envs["alpha"]["PERFPULSE_DATABASE_LISTEN_URL"] = direct
        fleet = Fleet(tmp_path, envs)
        fleet.url = url
        with fleet.stack:
            for name in NAMES:
                fleet.start(name)
            yield fleet


def login(base: str) -> str:
    response = httpx.post(
        base + "/api/auth/login", json={"username": "alice", "password": "password1"}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def wait_for_hosts(base: str, token: str, names: set[str], timeout: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        listing = httpx.get(
            base + "/api/hosts", headers={"Authorization": f"Bearer {token}"}
        ).json()
        if {h["host"] for h in listing if not h["stale"]} >= names:
            return listing
        if time.monotonic() > deadline:
            raise AssertionError(f"hosts never all live: {listing}")
        time.sleep(0.2)


async def host_snapshots(ws_url: str, token: str, host: str, count: int) -> list[dict]:
    async with websockets.connect(f"{ws_url}?token={token}&host={host}") as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def stale_then_live(fleet: Fleet, ws_url: str, token: str) -> tuple[dict, float, float]:
    """Stop charlie while a fleet stream is open: how long until it is stale, then how
    long after a restart until it is live again."""
    async with websockets.connect(f"{ws_url}?token={token}&host=*") as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))

        async def until(predicate) -> float:  # type: ignore[no-untyped-def]
            started = time.monotonic()
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if predicate(message):
                    return time.monotonic() - started

        await asyncio.to_thread(fleet.stop, "charlie")
        stale_after = await until(lambda m: m.get("host") == "charlie" and m.get("stale"))
        restarted = time.monotonic()
        await asyncio.to_thread(fleet.start, "charlie")
        await until(lambda m: m.get("host") == "charlie" and m.get("stale") is False)
        live_after = time.monotonic() - restarted
    return first, stale_after, live_after


@pytest.mark.parametrize("pooled", [False, True], ids=["direct", "pgbouncer"])
def test_a_fleet_of_three_on_one_postgresql(tmp_path, server_env, pooled):
    with fleet_of_three(tmp_path, server_env, pooled=pooled) as fleet:
        alpha = fleet.served["alpha"].url
        ws_url = alpha.replace("http", "ws") + "/api/ws/metrics"
        token = login(alpha)
        listing = wait_for_hosts(alpha, token, set(NAMES))
        assert [h["host"] for h in listing] == list(NAMES)
        for host in listing:
            assert set(host) == {
                "host",
                "last_seen",
                "interval_seconds",
                "stale",
                "version",
                "collectors",
                "summary",
            }
            assert host["interval_seconds"] == INTERVAL
            assert host["last_seen"].endswith("Z")
            assert set(host["summary"]) == SUMMARY
            assert 0 <= host["summary"]["cpu_busy_ratio"] <= 1
            assert 0 < host["summary"]["memory_used_ratio"] < 1
            assert "cpu" in host["collectors"]

        bravo = asyncio.run(host_snapshots(ws_url, token, "bravo", 3))
        assert {s["host"] for s in bravo} == {"bravo"}
        assert bravo[0]["seq"] < bravo[1]["seq"] < bravo[2]["seq"]
        assert bravo[0]["cpu"]["available"] is True
        own = asyncio.run(host_snapshots(ws_url, token, "alpha", 1))
        assert own[0]["host"] == "alpha"

        first, stale_after, live_after = asyncio.run(stale_then_live(fleet, ws_url, token))
        assert first["type"] == "hosts"
        assert {h["host"] for h in first["hosts"]} == set(NAMES)
        # Stale after 3 intervals of silence, found by a sweep every 0.25 s.
        assert stale_after < 3 * INTERVAL + 2.5, stale_after  # with room for a busy machine
        assert live_after < 15, live_after

        if pooled:
            # Each instance relays on the relay's entry, one connection; its other
            # connections are on the main one.
            clients = show(fleet.url, "CLIENTS")
            relay_db = urlsplit(relay_url(fleet.url)).path.lstrip("/")
            on_relay = {c["application_name"] for c in clients if c["database"] == relay_db}
            assert on_relay == {f"perfpulse {name} relay" for name in NAMES}, clients
            elsewhere = {c["application_name"] for c in clients if c["database"] != relay_db}
            assert not any(name.endswith(" relay") for name in elsewhere), clients
        # The agents never hold more than two connections each (pooled: to PgBouncer).
        if not pooled:
            for name in ("bravo", "charlie"):
                held = asyncio.run(
                    fetchval(
                        server_env["PERFPULSE_DATABASE_URL"],
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        f"perfpulse {name}",
                    )
                )
                assert 1 <= held <= 2, (name, held)
        # An agent serves /metrics and no dashboard or login.
        agent = fleet.served["bravo"].url
        assert httpx.get(agent + "/metrics").status_code == 200
        assert httpx.post(agent + "/api/auth/login", json={}).status_code == 404
        for name in NAMES:
            assert "Traceback" not in fleet.served[name].log(), fleet.served[name].log()


def test_a_relayed_host_opens_with_its_last_minutes_then_live_and_resumes(tmp_path, server_env):
    """bravo, streamed through alpha with `backfill=120`: the first message carries the
    snapshots bravo's writer stored in the last two minutes (90 s of them from before this
    run, as an agent that had been running leaves them), then live snapshots follow; a
    client that reconnects with resume_from gets what it missed, once."""
    from datetime import UTC, datetime, timedelta

    import asyncpg

    from exporter.storage import ingest
    from tests.test_writer import snapshot

    async def stored_before(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            start = datetime.now(UTC) - timedelta(seconds=100)
            await ingest.write_batch(conn, [snapshot(i, "bravo", start) for i in range(90)])
        finally:
            await conn.close()

    asyncio.run(stored_before(server_env["PERFPULSE_DATABASE_URL"]))
    with fleet_of_three(tmp_path, server_env, pooled=False) as fleet:
        base = fleet.served["alpha"].url
        token = login(base)
        wait_for_hosts(base, token, set(NAMES))
        ws_url = base.replace("http", "ws") + "/api/ws/metrics"

        async def opened() -> tuple[dict, list[dict]]:
            async with websockets.connect(f"{ws_url}?token={token}&host=bravo&backfill=120") as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                live = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
            return first, live

        first, live = asyncio.run(opened())
        assert (first["type"], first["host"]) == ("backfill", "bravo")
        times = [datetime.fromisoformat(s["timestamp"]) for s in first["snapshots"]]
        assert times == sorted(times) and len(times) >= 90
        assert (times[-1] - times[0]).total_seconds() >= 60, (times[0], times[-1])
        assert all(s["host"] == "bravo" and "cpu" in s for s in first["snapshots"])
        seqs = [s["seq"] for s in live]
        assert all(s["host"] == "bravo" for s in live) and seqs == sorted(seqs)

        async def resumed(after: int) -> list[int]:
            async with websockets.connect(f"{ws_url}?token={token}&host=bravo") as ws:
                await ws.send(json.dumps({"resume_from": after}))
                return [json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] for _ in range(4)]

        again = asyncio.run(resumed(seqs[-1]))
        assert again == sorted(again) and again[0] > seqs[-1] and len(set(again)) == 4
        assert asyncio.run(close_of(f"{ws_url}?token={token}&host=bravo&backfill=601")) == (
            1008,
            "backfill: whole seconds from 1 to 600, on one host's stream",
        )


async def close_of(url: str) -> tuple[int, str]:
    async with websockets.connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_dashboard_only_instance_shows_the_fleet_and_not_itself(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    url = server_env["PERFPULSE_DATABASE_URL"]
    central = {**instance_env(server_env, tmp_path, "central", url), "PERFPULSE_COLLECT": "false"}
    agent = {**instance_env(server_env, tmp_path, "delta", url), "PERFPULSE_DASHBOARD": "false"}
    with (
        serve(tmp_path, "--interval", str(INTERVAL), env=agent),
        serve(tmp_path, env=central) as dashboard,
    ):
        token = login(dashboard.url)
        listing = wait_for_hosts(dashboard.url, token, {"delta"})
        assert [h["host"] for h in listing] == ["delta"]
        ws_url = dashboard.url.replace("http", "ws") + "/api/ws/metrics"
        delta = asyncio.run(host_snapshots(ws_url, token, "delta", 2))
        assert [s["host"] for s in delta] == ["delta", "delta"]
        assert asyncio.run(close_of(f"{ws_url}?token={token}")) == (
            1008,
            "this instance collects no host: pass host=NAME or host=*",
        )
        assert asyncio.run(close_of(f"{ws_url}?token={token}&host=nobody")) == (
            1008,
            "unknown host",
        )
        health = httpx.get(dashboard.url + "/healthz").json()
        assert health["collect"] is False and health["fleet"] == "listening"
        listed = run_cli(central, "hosts", "list")
        assert listed.returncode == 0 and "\ndelta\tlive\t" in listed.stdout, listed
    time.sleep(3 * INTERVAL + 0.5)
    listed = run_cli(central, "hosts", "list")
    assert "\ndelta\tstale\t" in listed.stdout, listed
    removed = run_cli(central, "hosts", "remove", "delta")
    assert removed.returncode == 0, removed
    assert "no hosts have written" in run_cli(central, "hosts", "list").stdout
    again = run_cli(central, "hosts", "remove", "delta")
    assert (again.returncode, again.stderr.strip()) == (1, "perfpulse: no host 'delta'")


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_on_the_embedded_database_there_is_no_relay_and_one_host(tmp_path):
    """`make run`'s setting: the embedded server is this instance's alone, so nothing is
    relayed or listened for; /api/hosts is this host, from its own snapshot."""
    env = {
        "PERFPULSE_DATA_DIR": str(tmp_path / "data"),
        "PERFPULSE_HOSTNAME": "solo",
        "PERFPULSE_PERF_ENABLED": "false",
    }
    with serve(tmp_path, "--interval", str(INTERVAL), env=env, timeout=60) as server:
        password = (tmp_path / "data" / "initial-admin-password").read_text().strip()
        token = httpx.post(
            server.url + "/api/auth/login", json={"username": "admin", "password": password}
        ).json()["access_token"]
        listing = httpx.get(
            server.url + "/api/hosts", headers={"Authorization": f"Bearer {token}"}
        ).json()
        ws_url = server.url.replace("http", "ws") + "/api/ws/metrics"
        fleet_close = asyncio.run(close_of(f"{ws_url}?token={token}&host=*"))
        other_close = asyncio.run(close_of(f"{ws_url}?token={token}&host=other"))
        own = asyncio.run(host_snapshots(ws_url, token, "solo", 1))
        exposition = httpx.get(server.url + "/metrics").text
    assert [h["host"] for h in listing] == ["solo"]
    assert listing[0]["stale"] is False and set(listing[0]["summary"]) == SUMMARY
    assert fleet_close == (1008, "no fleet: this instance's embedded database holds one host")
    assert other_close == (1008, "no fleet: this instance's embedded database holds one host")
    assert own[0]["host"] == "solo"
    assert "perfpulse_relay_published_total" not in exposition
    assert "perfpulse_fleet_hosts" not in exposition
