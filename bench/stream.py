"""Live stream: N authenticated WebSocket clients on loopback at 1 Hz.

The clients run in a separate process (one asyncio loop) so the server's CPU is its own.
Measured: delay from a snapshot's timestamp to its receipt (p50/p99), server CPU while
streaming, and server memory per connection (RSS growth / N).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import datetime
from typing import Any

import psutil

from bench.common import machine, percentile, perfpulse
from exporter.server import raise_open_file_limit


class LeanClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unmasked server frames, pong to pings.

    The load generator shares the machine's two cores with the server; a full client
    library spends more CPU per message than the server does, and would measure itself.
    """

    def __init__(self, token: str, host: str, path: str, sink: Any) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bearer, {token}\r\n\r\n"
        ).encode()
        self.sink = sink
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(bytes(self.buffer[:200]).decode()))
                return
            del self.buffer[: end + 4]
            self.upgraded.set_result(None)
        while len(self.buffer) >= 2:
            opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < offset + length:
                return
            payload = bytes(self.buffer[offset : offset + length])
            del self.buffer[: offset + length]
            if opcode == 0x1:
                self.sink(payload, received)
            elif opcode == 0x9 and self.transport is not None:  # ping: masked pong, zero key
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)


async def _clients(url: str, token: str, count: int, seconds: float, out: Any) -> None:
    delays: list[float] = []
    measuring = False

    def sink(payload: bytes, received: float) -> None:
        if measuring:
            # Only the timestamp is needed: find it without parsing all of the JSON.
            start = payload.index(b'"timestamp":"') + 13
            stamp = datetime.fromisoformat(payload[start : payload.index(b'"', start)].decode())
            delays.append(received - stamp.timestamp())

    host, _, path = url.removeprefix("ws://").partition("/")
    address, port = host.split(":")
    loop = asyncio.get_running_loop()
    transports = []
    for start in range(0, count, 200):
        batch = []
        for _ in range(start, min(count, start + 200)):
            protocol = LeanClient(token, host, "/" + path, sink)
            batch.append(loop.create_connection(lambda p=protocol: p, address, int(port)))
        for transport, protocol in await asyncio.gather(*batch):
            await protocol.upgraded
            transports.append(transport)
    out.put(("connected", len(transports)))
    await asyncio.sleep(2)
    measuring = True
    await asyncio.sleep(seconds)
    measuring = False
    out.put(("delays", delays))
    for transport in transports:
        transport.close()


def _client_process(url: str, token: str, count: int, seconds: float, out: Any) -> None:
    raise_open_file_limit()
    asyncio.run(_clients(url, token, count, seconds, out))


def run_one(count: int, seconds: float, processes: int) -> dict[str, Any]:
    raise_open_file_limit()
    # The simulated clients all come from one address with one token: the bounds per
    # address and per user are raised to their number (thousands of real clients would
    # come from thousands of addresses and users).
    bounds = {
        "PERFPULSE_MAX_CONNECTIONS_PER_CLIENT": str(count + 100),
        "PERFPULSE_WS_MAX_STREAMS_PER_USER": str(count + 100),
    }
    with perfpulse(1.0, bounds) as server:
        proc = psutil.Process(server.pid)
        time.sleep(2)
        rss_before = proc.memory_info().rss
        out: Any = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(
                target=_client_process,
                args=(server.stream_url, server.token, count // processes, seconds, out),
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
