"""abuse — the three attacks that needed no login, at the sizes the hardening targets:

1. 2,000 idle connections and 1,000 half-sent WebSocket handshakes held for 60 s
   (reopened as the server closes them) while /healthz is polled on new connections and a
   logged-in stream client counts its snapshots;
2. 200 concurrent wrong logins from one address, and a real user's login from another
   address (127.0.0.2) in the middle of them;
3. a 256 MB login body, then four 128 MB bodies at once, with the server's RSS.

perfpulse runs on its embedded PostgreSQL in a temporary data directory, at 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil

from bench.common import machine, percentile, perfpulse
from exporter.server import raise_open_file_limit
from tests.attackers import hold_argv, login_burst


def held_connections(base: str, token: str, seconds: float) -> dict[str, Any]:
    import websockets

    seqs: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        async def run() -> None:
            url = base.replace("http", "ws") + "/api/ws/metrics"
            async with websockets.connect(url, subprotocols=["bearer", token]) as ws:
                while not stop.is_set():
                    try:
                        message = await asyncio.wait_for(ws.recv(), 1.0)
                    except TimeoutError:
                        continue
                    seqs.append(json.loads(message)["seq"])

        asyncio.run(run())

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    attacker = subprocess.Popen(hold_argv(base, 2000, 1000, seconds), stdout=subprocess.PIPE)
    time.sleep(3)
    latencies, failures = [], 0
    while attacker.poll() is None:
        started = time.perf_counter()
        try:
            httpx.get(base + "/healthz", timeout=5).raise_for_status()
            latencies.append(time.perf_counter() - started)
        except httpx.HTTPError:
            failures += 1
        time.sleep(0.05)
    stats = json.loads(attacker.communicate()[0])
    stop.set()
    follower.join(5)
    missed = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else None
    return {
        "attacker": stats,
        "healthz_p50_ms": statistics.median(latencies) * 1e3,
        "healthz_p99_ms": percentile(latencies, 99) * 1e3,
        "healthz_failures": failures,
        "healthz_requests": len(latencies) + failures,
        "stream_snapshots": len(seqs),
        "stream_missed": missed,
    }


def guessing(base: str, data_dir: str) -> dict[str, Any]:
    with open(os.path.join(data_dir, "initial-admin-password")) as file:
        password = file.read().strip()

    def checks() -> float:
        for line in httpx.get(base + "/metrics").text.splitlines():
            if line.startswith("perfpulse_login_password_checks_total "):
                return float(line.split()[1])
        return 0.0

    before = checks()
    legit: dict[str, Any] = {}

    def real_user() -> None:
        time.sleep(0.2)
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=60) as client:
            started = time.perf_counter()
            response = client.post(
                base + "/api/auth/login", json={"username": "admin", "password": password}
            )
            legit.update(status=response.status_code, seconds=time.perf_counter() - started)

    thread = threading.Thread(target=real_user)
    thread.start()
    statuses = asyncio.run(login_burst(base, "admin", 200))
    thread.join()
    return {
        "guesses": len(statuses),
        "statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "password_checks": checks() - before,
        "real_user_status": legit["status"],
        "real_user_ms": legit["seconds"] * 1e3,
    }


def _body(base: str, total: int) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    chunk = b"a" * 65536
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"10000\r\n" + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:
            pass
        sock.settimeout(5)
        try:
            return sock.recv(64).split(b"\r\n")[0]
        except OSError:
            return b""


def bodies(base: str, pid: int) -> dict[str, Any]:
    proc = psutil.Process(pid)
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(proc.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    before = peak[0]
    one = _body(base, 256 << 20)
    with ThreadPoolExecutor(4) as pool:
        four = list(pool.map(lambda _: _body(base, 128 << 20), range(4)))
    time.sleep(1)
    after = proc.memory_info().rss
    done.set()
    sampler.join()
    return {
        "one_256mb": one.decode(),
        "four_128mb": [answer.decode() for answer in four],
        "rss_before_mib": before / 2**20,
        "rss_peak_mib": max(peak) / 2**20,
        "rss_after_mib": after / 2**20,
    }


def run(hold_seconds: float) -> dict[str, Any]:
    raise_open_file_limit()
    result: dict[str, Any] = {"machine": machine(), "hold_seconds": hold_seconds}
    with perfpulse(1.0) as server:
        result["held"] = held_connections(server.base, server.token, hold_seconds)
        result["bodies"] = bodies(server.base, server.pid)
        result["guessing"] = guessing(server.base, server.data_dir)
    return result


def report(result: dict[str, Any]) -> str:
    held, guess, body = result["held"], result["guessing"], result["bodies"]
    attacker = held["attacker"]
    return "\n".join(
        [
            f"Machine: {result['machine']}",
            "",
            "| attack | measure | value |",
            "|---|---|---|",
            f"| 2,000 idle + 1,000 half-sent handshakes, {result['hold_seconds']:g} s "
            f"| connections opened / closed by the server | {attacker['opened']} / "
            f"{attacker['closed_by_server']} |",
            f"| | /healthz p50 / p99 (new connection each) | {held['healthz_p50_ms']:.1f} / "
            f"{held['healthz_p99_ms']:.1f} ms ({held['healthz_failures']} failed of "
            f"{held['healthz_requests']}) |",
            f"| | stream client: snapshots / missed | {held['stream_snapshots']} / "
            f"{held['stream_missed']} |",
            f"| 200 concurrent wrong logins, one address | password checks | "
            f"{guess['password_checks']:.0f} |",
            f"| | answers | {guess['statuses']} |",
            f"| | real user from 127.0.0.2, meanwhile | {guess['real_user_status']} in "
            f"{guess['real_user_ms']:.0f} ms |",
            f"| 256 MB body, then 4 x 128 MB at once | answers | {body['one_256mb']}; "
            f"{', '.join(sorted(set(body['four_128mb'])))} |",
            f"| | server RSS before / peak / after | {body['rss_before_mib']:.0f} / "
            f"{body['rss_peak_mib']:.0f} / {body['rss_after_mib']:.0f} MiB |",
        ]
    )
