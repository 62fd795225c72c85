"""Live stream: N authenticated WebSocket clients on loopback at 1 Hz.

The clients run in a separate process (one asyncio loop) so the server's CPU is its own.
Measured: delay from a snapshot's timestamp to its receipt (p50/p99), server CPU while
streaming, and server memory per connection (RSS growth / N).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import tempfile
import time
from datetime import datetime
from typing import Any

import httpx
import psutil
import websockets

from bench.common import free_port, machine, percentile, perfpulse_argv, process


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _clients(url: str, token: str, count: int, seconds: float, out: Any) -> None:
    delays: list[float] = []
    measuring = asyncio.Event()
    stop = asyncio.Event()

    async def read(ws: Any) -> None:
        # Read from the moment of connecting, so no message waits in the client's buffer;
        # record only once every client is connected.
        while not stop.is_set():
            message = await ws.recv()
            received = time.time()
            if measuring.is_set():
                # Only the timestamp is needed: find it without parsing all of the JSON.
                start = message.index('"timestamp":"') + 13
                stamp = datetime.fromisoformat(message[start : message.index('"', start)])
                delays.append(received - stamp.timestamp())

    connections = []
    readers = []
    for start in range(0, count, 200):
        batch = [
            websockets.connect(
                url,
                subprotocols=["bearer", token],
                ping_interval=None,
                max_queue=4,
                compression=None,
            )
            for _ in range(start, min(count, start + 200))
        ]
        for ws in await asyncio.gather(*batch):
            connections.append(ws)
            readers.append(asyncio.create_task(read(ws)))
    out.put(("connected", len(connections)))
    await asyncio.sleep(2)
    measuring.set()
    await asyncio.sleep(seconds)
    stop.set()
    out.put(("delays", delays))
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)


def _client_process(url: str, token: str, count: int, seconds: float, out: Any) -> None:
    _raise_fd_limit()
    asyncio.run(_clients(url, token, count, seconds, out))


def run_one(count: int, seconds: float, processes: int) -> dict[str, Any]:
    _raise_fd_limit()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            "PERFPULSE_DATA_DIR": data_dir,
            "PERFPULSE_LOG_LEVEL": "warning",
            "PERFPULSE_SAMPLING_INTERVAL_SECONDS": "1",
            "PERFPULSE_HOST": "127.0.0.1",
            "PERFPULSE_PORT": str(port),
        }
        with process(perfpulse_argv(), base + "/healthz", env) as server:
            deadline = time.monotonic() + 60
            while httpx.get(base + "/healthz").json().get("database") != "ready":
                if time.monotonic() > deadline:
                    raise RuntimeError("database never became ready")
                time.sleep(0.2)
            with open(os.path.join(data_dir, "initial-admin-password")) as file:
                password = file.read().strip()
            token = httpx.post(
                base + "/api/auth/login", json={"username": "admin", "password": password}
            ).json()["access_token"]
            proc = psutil.Process(server.pid)
            time.sleep(2)
            rss_before = proc.memory_info().rss
            out: Any = multiprocessing.Queue()
            url = base.replace("http", "ws") + "/api/ws/metrics"
            workers = [
                multiprocessing.Process(
                    target=_client_process, args=(url, token, count // processes, seconds, out)
                )
                for _ in range(processes)
            ]
            for worker in workers:
                worker.start()
            connected = sum(out.get(timeout=300)[1] for _ in workers)
            time.sleep(2)
            rss_after = proc.memory_info().rss
            cpu_before, wall_before = proc.cpu_times(), time.monotonic()
            delays = [d for _ in workers for d in out.get(timeout=seconds + 120)[1]]
            cpu_after, wall_after = proc.cpu_times(), time.monotonic()
            for worker in workers:
                worker.join(60)
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "clients": connected,
        "messages": len(delays),
        "delay_ms_p50": percentile(delays, 50) * 1e3,
        "delay_ms_p99": percentile(delays, 99) * 1e3,
        "delay_ms_max": max(delays) * 1e3,
        "server_cpu_percent_of_core": 100 * cpu / (wall_after - wall_before),
        "server_rss_kib_per_connection": (rss_after - rss_before) / 1024 / connected,
        "server_rss_mib": rss_after / 2**20,
    }


def run(counts: list[int], seconds: float, processes: int = 1) -> dict[str, Any]:
    return {
        "machine": machine(),
        "client_processes": processes,
        "runs": [run_one(n, seconds, processes) for n in counts],
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}",
        "",
        "| clients | messages | delay p50 | delay p99 | delay max | server CPU | RSS per connection |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['clients']} | {r['messages']} | {r['delay_ms_p50']:.1f} ms | {r['delay_ms_p99']:.1f} ms "
            f"| {r['delay_ms_max']:.1f} ms | {r['server_cpu_percent_of_core']:.1f} % of a core "
            f"| {r['server_rss_kib_per_connection']:.1f} KiB |"
        )
    return "\n".join(lines)
