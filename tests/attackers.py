"""Hostile clients, run as their own process so their load does not share the measuring
process's event loop: `python -m tests.attackers MODE URL ...`; each prints what it saw
as JSON. Only loopback addresses are accepted as targets.

- `hold`: N idle TCP connections and M half-sent WebSocket handshakes kept open for S
  seconds, reopening any the server closes.
- `slow-bodies`: N requests whose headers announce a 10,000-byte body that never comes
  (or comes a byte every 3 s with `--drip`), from several loopback addresses, reopened as
  the server closes them.
- `resume-burst`: N streams (spread over the given tokens) opened, then all resuming
  from 0 at once and reading as fast as they can (or resetting at once with `--reset`).
- `ping-flood`: N logged-in streams sending pings as fast as the socket takes them and
  never reading, reconnecting whenever dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import socket
import struct
import sys
import time
from typing import Any
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


BODY_HEAD = (
    b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10000\r\n\r\n"
)


def slow_bodies_argv(
    url: str, connections: int, seconds: float, *, drip: bool = False, sources: int = 8
) -> list[str]:
    return [
        sys.executable, "-m", "tests.attackers", "slow-bodies", url,
        "--connections", str(connections), "--seconds", str(seconds),
        "--sources", str(sources), *(["--drip"] if drip else []),
    ]  # fmt: skip


async def _slow_body(
    host: str, port: int, source: str, drip: bool, until: float, stats: dict[str, Any]
) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            stats["connect_failures"] += 1
            await asyncio.sleep(0.2)
            continue
        stats["opened"] += 1
        opened = time.monotonic()
        writer.write(BODY_HEAD)

        dripping = asyncio.create_task(_dribble(writer)) if drip else None
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                answer = await reader.read()
            stats["closed_by_server"] += 1
            stats["longest_held"] = max(stats["longest_held"], time.monotonic() - opened)
            status = answer[9:12].decode(errors="replace") if answer else "closed"
            stats["answers"][status] = stats["answers"].get(status, 0) + 1
        except TimeoutError:
            stats["longest_held"] = max(stats["longest_held"], time.monotonic() - opened)
        except OSError:
            stats["closed_by_server"] += 1
        finally:
            if dripping is not None:
                dripping.cancel()
            writer.close()


async def _dribble(writer: asyncio.StreamWriter) -> None:
    while True:
        await asyncio.sleep(3)
        writer.write(b" ")


async def slow_bodies(
    url: str, connections: int, seconds: float, drip: bool, sources: int = 8
) -> dict[str, Any]:
    """Headers that promise a body, then nothing (or a byte every 3 s), from `sources`
    loopback addresses (127.0.0.2 on) in turn."""
    host, port = loopback(url)
    until = time.monotonic() + seconds
    stats: dict[str, Any] = {
        "opened": 0, "closed_by_server": 0, "connect_failures": 0, "longest_held": 0.0,
        "answers": {},
    }  # fmt: skip
    addresses = [f"127.0.0.{i}" for i in range(2, 2 + sources)]
    await asyncio.gather(
        *(
            _slow_body(host, port, addresses[i % len(addresses)], drip, until, stats)
            for i in range(connections)
        )
    )
    return stats


def resume_burst_argv(
    url: str, tokens: list[str], streams: int, seconds: float, *, reset: bool = False
) -> list[str]:
    return [
        sys.executable, "-m", "tests.attackers", "resume-burst", url,
        "--streams", str(streams), "--seconds", str(seconds), "--tokens", ",".join(tokens),
        *(["--reset"] if reset else []),
    ]  # fmt: skip


async def resume_burst(
    url: str, tokens: list[str], streams: int, seconds: float, reset: bool
) -> dict[str, Any]:
    """Open `streams` streams, then send every one `{"resume_from": 0}` at once; read
    for `seconds` (or reset each connection at once with `reset`)."""
    import websockets

    ws_url = url.replace("http", "ws", 1) + "/api/ws/metrics"
    stats: dict[str, Any] = {"opened": 0, "frames": 0, "refused": 0, "bytes": 0}
    sockets = []
    for i in range(streams):
        try:
            ws = await websockets.connect(
                ws_url,
                subprotocols=["bearer", tokens[i % len(tokens)]],  # type: ignore[list-item]
                max_size=None,
                ping_interval=None,
            )
        except Exception:
            stats["refused"] += 1
            continue
        sockets.append(ws)
        stats["opened"] += 1
    started = time.monotonic()
    await asyncio.gather(*(ws.send('{"resume_from": 0}') for ws in sockets))
    if reset:
        for ws in sockets:
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()
        return stats

    async def read(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(seconds):
                while True:
                    message = await ws.recv()
                    stats["frames"] += 1
                    stats["bytes"] += len(message)

    await asyncio.gather(*(read(ws) for ws in sockets))
    stats["seconds"] = time.monotonic() - started
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return stats


def ping_flood_argv(url: str, token: str, connections: int, seconds: float) -> list[str]:
    return [
        sys.executable, "-m", "tests.attackers", "ping-flood", url,
        "--connections", str(connections), "--seconds", str(seconds), "--tokens", token,
    ]  # fmt: skip


PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # masked, 125-byte payload


async def _ping_one(host: str, port: int, token: str, until: float, stats: dict[str, int]) -> None:
    handshake = (
        f"GET /api/ws/metrics?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    while time.monotonic() < until:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats["connect_failures"] += 1
            await asyncio.sleep(0.05)
            continue
        stats["connections"] += 1
        writer.write(handshake)
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                while True:
                    writer.write(PING * 64)
                    stats["pings"] += 64
                    await writer.drain()
        except TimeoutError:
            pass
        except OSError:
            stats["dropped"] += 1
        finally:
            writer.close()


async def ping_flood(url: str, token: str, connections: int, seconds: float) -> dict[str, int]:
    host, port = loopback(url)
    until = time.monotonic() + seconds
    stats = {"connections": 0, "pings": 0, "dropped": 0, "connect_failures": 0}
    await asyncio.gather(*(_ping_one(host, port, token, until, stats) for _ in range(connections)))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.attackers")
    parser.add_argument("mode", choices=["hold", "slow-bodies", "resume-burst", "ping-flood"])
    parser.add_argument("url")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--partial", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--tokens", default="")
    parser.add_argument("--drip", action="store_true")
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    raise_open_file_limit()
    tokens = [t for t in args.tokens.split(",") if t]
    stats: object
    if args.mode == "hold":
        stats = asyncio.run(hold(args.url, args.idle, args.partial, args.seconds))
    elif args.mode == "slow-bodies":
        stats = asyncio.run(
            slow_bodies(args.url, args.connections, args.seconds, args.drip, args.sources)
        )
    elif args.mode == "resume-burst":
        stats = asyncio.run(resume_burst(args.url, tokens, args.streams, args.seconds, args.reset))
    else:
        stats = asyncio.run(ping_flood(args.url, tokens[0], args.connections, args.seconds))
    json.dump(stats, sys.stdout)


if __name__ == "__main__":
    main()
