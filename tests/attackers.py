"""Hostile clients, run as their own process so their load does not share the measuring
process's event loop: `python -m tests.attackers hold URL --idle N --partial M --seconds S`.

`hold` keeps N idle TCP connections and M half-sent WebSocket handshakes open to the
server for S seconds, reopening any the server closes, and prints what it saw as JSON.
Only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from urllib.parse import urlsplit

import httpx

from exporter.server import raise_open_file_limit

PARTIAL_HANDSHAKE = (
    b"GET /api/ws/metrics HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"  # never the final blank line
)


def hold_argv(url: str, idle: int, partial: int, seconds: float) -> list[str]:
    """The command line that runs `hold` as a process of its own."""
    return [
        sys.executable, "-m", "tests.attackers", "hold", url,
        "--idle", str(idle), "--partial", str(partial), "--seconds", str(seconds),
    ]  # fmt: skip


def loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"attackers: {host} is not a loopback address")
    return host, parts.port or 80


async def login_burst(base: str, username: str, count: int) -> list[int]:
    """`count` wrong-password logins for `username`, all at once from one address; the
    response statuses."""
    async with httpx.AsyncClient(
        base_url=base, limits=httpx.Limits(max_connections=count), timeout=60
    ) as client:
        responses = await asyncio.gather(
            *(
                client.post("/api/auth/login", json={"username": username, "password": f"x{i}x"})
                for i in range(count)
            )
        )
    return [r.status_code for r in responses]


async def _hold_one(
    host: str, port: int, payload: bytes, until: float, stats: dict[str, int]
) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats["connect_failures"] += 1
            await asyncio.sleep(0.2)
            continue
        stats["opened"] += 1
        if payload:
            writer.write(payload)
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                await reader.read()  # returns when the server closes
            stats["closed_by_server"] += 1
        except TimeoutError:
            pass
        except OSError:
            stats["closed_by_server"] += 1
        finally:
            writer.close()


async def hold(url: str, idle: int, partial: int, seconds: float) -> dict[str, int]:
    host, port = loopback(url)
    until = time.monotonic() + seconds
    stats = {"opened": 0, "closed_by_server": 0, "connect_failures": 0}
    tasks = [
        *(_hold_one(host, port, b"", until, stats) for _ in range(idle)),
        *(_hold_one(host, port, PARTIAL_HANDSHAKE, until, stats) for _ in range(partial)),
    ]
    await asyncio.gather(*tasks)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.attackers")
    parser.add_argument("mode", choices=["hold"])
    parser.add_argument("url")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--partial", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    raise_open_file_limit()
    stats = asyncio.run(hold(args.url, args.idle, args.partial, args.seconds))
    json.dump(stats, sys.stdout)


if __name__ == "__main__":
    main()
