"""`perfpulse watch`: log in, follow the live stream, print one compact line per snapshot."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any, TextIO

import httpx
import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from exporter.sinks.protocol import PATH, POLICY_VIOLATION, SUBPROTOCOL

MAX_BACKOFF_SECONDS = 30.0


class WatchError(Exception):
    """Cannot go on (bad credentials, refused token); the message says why."""


def login(base_url: str, username: str, password: str) -> str:
    try:
        response = httpx.post(
            f"{base_url}/api/auth/login",
            json={"username": username, "password": password},
            timeout=10,
        )
    except httpx.TransportError as exc:
        raise WatchError(f"cannot reach {base_url}: {exc}") from None
    if response.status_code != 200:
        detail = response.json().get("detail", response.text) if response.content else ""
        raise WatchError(f"login failed ({response.status_code}): {detail}")
    token: str = response.json()["access_token"]
    return token


def _rate(value: float | None, unit: str = "B/s") -> str:
    if value is None:
        return "-"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000:
            return f"{value:.1f} {prefix}{unit}"
        value /= 1000
    return f"{value:.1f} P{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


# What the summary line shows, by path into the snapshot (tests/test_sections.py walks
# each through the declared section types and a real snapshot).
SUMMARY_PATHS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "usage_percent"),
    "mem": ("memory", "percent"),
    "rx": ("network", "total", "receive_bytes_per_second"),
    "tx": ("network", "total", "transmit_bytes_per_second"),
    "read": ("disk", "total", "read_bytes_per_second"),
    "written": ("disk", "total", "written_bytes_per_second"),
    "busy": ("disk", "total", "busy_percent"),
    "ipc": ("perf_events", "ipc"),
}


def _at(snapshot: dict[str, Any], name: str) -> Any:
    node: Any = snapshot
    for key in SUMMARY_PATHS[name]:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _available(snapshot: dict[str, Any], name: str) -> bool:
    section = snapshot.get(SUMMARY_PATHS[name][0])
    return isinstance(section, dict) and section.get("available") is True


def summarize(snapshot: dict[str, Any]) -> str:
    """One line: time, CPU, memory, network and disk rates, hardware counters if any."""
    time = datetime.fromisoformat(snapshot["timestamp"]).astimezone().strftime("%H:%M:%S")
    parts = [f"{time} #{snapshot['seq']}"]
    parts.append(f"cpu {_pct(_at(snapshot, 'cpu'))}" if _available(snapshot, "cpu") else "cpu n/a")
    parts.append(f"mem {_pct(_at(snapshot, 'mem'))}" if _available(snapshot, "mem") else "mem n/a")
    if _available(snapshot, "rx"):
        parts.append(f"net rx {_rate(_at(snapshot, 'rx'))} tx {_rate(_at(snapshot, 'tx'))}")
    if _available(snapshot, "read"):
        parts.append(
            f"disk r {_rate(_at(snapshot, 'read'))} w {_rate(_at(snapshot, 'written'))} "
            f"busy {_pct(_at(snapshot, 'busy'))}"
        )
    ipc = _at(snapshot, "ipc")
    if _available(snapshot, "ipc") and ipc is not None:
        parts.append(f"ipc {ipc:.2f}")
    return "  ".join(parts)


async def follow(
    base_url: str,
    token: str,
    *,
    raw: bool = False,
    out: TextIO = sys.stdout,
    limit: int | None = None,
) -> None:
    """Print snapshots until interrupted; reconnect with backoff and resume where it left off."""
    ws_url = "ws" + base_url.removeprefix("http") + PATH
    last_seq: int | None = None
    backoff = 1.0
    printed = 0
    while True:
        try:
            async with websockets.connect(
                ws_url,
                subprotocols=[Subprotocol(SUBPROTOCOL), Subprotocol(token)],
                max_size=16 << 20,
            ) as connection:
                backoff = 1.0
                if last_seq is not None:
                    await connection.send(orjson.dumps({"resume_from": last_seq}).decode())
                async for message in connection:
                    snapshot = orjson.loads(message)
                    if last_seq is not None and snapshot["seq"] <= last_seq:
                        continue
                    last_seq = snapshot["seq"]
                    out.write(
                        (message if isinstance(message, str) else message.decode())
                        if raw
                        else summarize(snapshot)
                    )
                    out.write("\n")
                    out.flush()
                    printed += 1
                    if limit is not None and printed >= limit:
                        return
        except BrokenPipeError:
            raise  # stdout is closed: nobody is reading any more
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == POLICY_VIOLATION:
                raise WatchError(f"stream refused the token: {exc.rcvd.reason}") from None
            print(f"perfpulse watch: disconnected; retrying in {backoff:.0f}s", file=sys.stderr)
        except (TimeoutError, OSError, InvalidHandshake, InvalidStatus) as exc:
            print(f"perfpulse watch: {exc}; retrying in {backoff:.0f}s", file=sys.stderr)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
