"""Helpers shared by the benchmarks: percentiles, machine description, processes."""

from __future__ import annotations

import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from exporter.storage.embedded import url_for
from exporter.storage.migrate import migrate


async def fresh_database(admin_url: str, name: str) -> str:
    """Database `name` on the server of `admin_url`, emptied (dropped if there) and
    migrated; its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = url_for(admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


@asynccontextmanager
async def scratch_database(admin_url: str, name: str) -> AsyncIterator[str]:
    """A `fresh_database` for the block, dropped afterwards whatever happens (a shared
    server keeps nothing of a run)."""
    try:
        yield await fresh_database(admin_url, name)
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted data."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return (
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} x {cpu}, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def process(
    argv: Sequence[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` until the context ends, once `ready_url` answers 200; its output goes to
    `log` (appended), or nowhere."""
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        argv,
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            output.close()  # type: ignore[union-attr]


def perfpulse_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", "serve", *args]


@dataclass(frozen=True, slots=True)
class Running:
    """A `perfpulse serve` started by `perfpulse()`: where it is, and a token."""

    base: str
    pid: int
    data_dir: str
    token: str

    @property
    def stream_url(self) -> str:
        return self.base.replace("http", "ws") + "/api/ws/metrics"


@contextmanager
def perfpulse(
    interval: float = 1.0,
    env: dict[str, str] | None = None,
    tree: str | None = None,
    log: Path | None = None,
) -> Iterator[Running]:
    """`perfpulse serve` on a free loopback port with its embedded PostgreSQL in a
    temporary data directory; returns once the database is ready, logged in as the
    first-start admin. `tree`: run the perfpulse of another checkout (a baseline); `log`:
    where its output goes."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        full_env = {
            "PERFPULSE_DATA_DIR": data_dir,
            "PERFPULSE_LOG_LEVEL": "warning",
            "PERFPULSE_SAMPLING_INTERVAL_SECONDS": str(interval),
            "PERFPULSE_HOST": "127.0.0.1",
            "PERFPULSE_PORT": str(port),
            **(env or {}),
        }
        if tree is not None:  # `python -m` looks in the working directory first
            full_env["PYTHONPATH"] = tree
        with process(perfpulse_argv(), base + "/healthz", full_env, cwd=tree, log=log) as server:
            deadline = time.monotonic() + 60
            while httpx.get(base + "/healthz").json().get("database") != "ready":
                if time.monotonic() > deadline:
                    raise RuntimeError("database never became ready")
                time.sleep(0.2)
            password = Path(data_dir, "initial-admin-password").read_text().strip()
            token = httpx.post(
                base + "/api/auth/login", json={"username": "admin", "password": password}
            ).json()["access_token"]
            yield Running(base, server.pid, data_dir, token)
