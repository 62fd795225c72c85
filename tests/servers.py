"""Start real perfpulse processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from exporter.config import Settings
from exporter.server import Server, uvicorn_config


def _ready(url: str, verify: object = True) -> bool:
    """A snapshot exists and the database is ready."""
    try:
        body = httpx.get(url + "/healthz", timeout=1, verify=verify).json()  # type: ignore[arg-type]
    except httpx.TransportError:
        return False
    return body.get("status") == "ok" and body.get("database") == "ready"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"perfpulse did not exit within {timeout}s of signal {sig}:\n{self.log()}"
            ) from None


@contextmanager
def serve(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
    scheme: str = "http",
    verify: object = True,
    port: int | None = None,
    prefix: Sequence[str] = (),
) -> Iterator[Served]:
    """`perfpulse serve` on a loopback port (a free one by default); waits for a snapshot
    and the database. `prefix` runs it under another command (prlimit, say)."""
    port = port or free_port()
    log_path = tmp_path / f"perfpulse-{port}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "PERFPULSE_HOST": "127.0.0.1", "PERFPULSE_PORT": str(port)}
    full_env.update(env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "exporter", "serve", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    served = Served(process, f"{scheme}://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"perfpulse exited early:\n{served.log()}")
            if _ready(served.url, verify):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"perfpulse not ready after {timeout}s:\n{served.log()}")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def serve_in_thread(app: FastAPI, settings: Settings, timeout: float = 15) -> Iterator[str]:
    """Run an app under perfpulse's uvicorn configuration on a loopback port, in a thread."""
    import threading

    config = uvicorn_config(app, settings, host="127.0.0.1", port=free_port(), log_config=None)
    server = Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{config.port}"
    while not server.started or not _ready(url):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("perfpulse did not start (or its database never became ready)")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.exit_soon()
        thread.join(timeout)
