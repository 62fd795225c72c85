"""Who is busy, on this machine's real kernel through a real `perfpulse serve`: a CPU
burner, a memory hog and a writer started by the test are named first by what they do,
live on the stream, in /metrics (by name and by cgroup) and, after their minute, in
history."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

from tests.conftest import token_for
from tests.servers import serve
from tests.test_cgroups import real_group, unified_root
from tests.test_ws import add_user

pytestmark = pytest.mark.e2e

HZ = os.sysconf("SC_CLK_TCK")

# Each names itself (prctl PR_SET_NAME sets the name /proc/PID/stat shows), then works.
# The burner hashes in two threads (hashlib lets go of the interpreter lock on large
# buffers), so it stays first by CPU even beside another process that keeps a core busy.
NAMED = "import ctypes; ctypes.CDLL(None).prctl(15, {name!r}.encode(), 0, 0, 0)\n"
BURNER = NAMED.format(name="ppburner") + (
    "import hashlib, threading\n"
    "data = b'x' * (8 << 20)\n"
    "def burn():\n"
    "    while True: hashlib.sha256(data).digest()\n"
    "threads = [threading.Thread(target=burn, daemon=True) for _ in range(2)]\n"
    "[t.start() for t in threads]\n"
    "[t.join() for t in threads]\n"
)


def _hog() -> str:
    """A process resident in more memory than any other on the machine (at least
    256 MiB; the test run itself may hold more)."""
    largest = max(
        (
            p.info["memory_info"].rss
            for p in psutil.process_iter(["memory_info"])
            if p.info["memory_info"] is not None
        ),
        default=0,
    )
    size = max(256 << 20, largest + (128 << 20))
    return NAMED.format(name="pphog") + (
        f"import time\nblock = bytearray({size})\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"  # touched: resident
        "time.sleep(600)\n"
    )


WRITER = NAMED.format(name="ppwriter") + (
    "import os, sys, time\nchunk = b'w' * (1 << 20)\n"
    "with open(sys.argv[1], 'wb') as f:\n"
    "    while True:\n"
    "        for _ in range(16): f.write(chunk)\n"
    "        f.flush(); os.fsync(f.fileno()); f.seek(0); time.sleep(0.05)\n"
)


@contextmanager
def running(script: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", script, *args])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


class Follower(threading.Thread):
    """Every snapshot of the stream, with when it arrived."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url = url.replace("http", "ws") + "/api/ws/metrics"
        self.token = token
        self.snapshots: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        async def follow() -> None:
            async with websockets.connect(
                self.url, subprotocols=["bearer", self.token], max_size=None
            ) as ws:
                while not self.stop.is_set():
                    try:
                        self.snapshots.append(json.loads(await asyncio.wait_for(ws.recv(), 1)))
                    except TimeoutError:
                        continue

        asyncio.run(follow())

    def wait_for(self, predicate: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for snapshot in self.snapshots[seen:]:
                if predicate(snapshot):
                    return snapshot
            seen = len(self.snapshots)
            time.sleep(0.05)
        raise AssertionError(f"not seen within {timeout} s; last: {self.snapshots[-1:]}")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def named(snapshot: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in snapshot["processes"]["top"] if p["name"] == name), None)


def first_by(snapshot: dict[str, Any], key: str) -> str | None:
    top = snapshot["processes"]["top"]
    return max(top, key=lambda p: p[key] or 0)["name"] if top else None


def test_the_busy_are_named_first_live_and_in_metrics(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    # The default scan interval (30 s): what finds them in time is what they do.
    with serve(tmp_path, "--interval", "1", env=server_env) as server:
        follower = Follower(server.url, token_for())
        follower.start()
        follower.wait_for(lambda s: s["processes"].get("scanned_at"), 10)

        # CPU: first within two ticks of starting, at its own share.
        with running(BURNER) as burner:
            started_at = len(follower.snapshots)
            first = follower.wait_for(lambda s: first_by(s, "cpu_percent") == "ppburner", 10)
            ticks_to_first = follower.snapshots.index(first) - started_at + 1
            before, at = cpu_ticks(burner.pid), time.monotonic()
            count = len(follower.snapshots)
            time.sleep(3.2)
            own = (cpu_ticks(burner.pid) - before) / HZ / (time.monotonic() - at) * 100
            window = [named(s, "ppburner") for s in follower.snapshots[count:]]
            reported = [p["cpu_percent"] for p in window if p and p["cpu_percent"] is not None]

        # Memory and disk writes: first by theirs within seconds (each triggers a scan).
        with running(_hog()), running(WRITER, str(tmp_path / "written")):
            hog = follower.wait_for(lambda s: first_by(s, "rss_bytes") == "pphog", 15)
            writer = follower.wait_for(
                lambda s: first_by(s, "write_bytes_per_second") == "ppwriter", 15
            )
            metrics = httpx.get(server.url + "/metrics").text
        follower.stop.set()
        follower.join(5)
    assert ticks_to_first <= 2, ticks_to_first
    assert len(reported) >= 2
    assert abs(sum(reported) / len(reported) - own) <= 15, (reported, own)
    assert named(hog, "pphog")["rss_bytes"] >= 256 << 20  # type: ignore[index]
    assert named(writer, "ppwriter")["write_bytes_per_second"] > 1 << 20  # type: ignore[index]
    assert 'perfpulse_process_group_resident_memory_bytes{groupname="pphog"}' in metrics
    assert 'perfpulse_process_group_processes{groupname="ppwriter"} 1.0' in metrics


def test_a_real_cgroup_shows_in_the_snapshot_and_metrics(tmp_path, server_env):
    """A group made on the machine's cgroup2 hierarchy (and the v1 cpuacct-free
    controllers where mounted) with the burner in it: the snapshot's cgroups and
    perfpulse_cgroup_cpu_seconds_total{name=...} have its CPU."""
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    env = {**server_env, "PERFPULSE_PROCESSES_SCAN_SECONDS": "1"}
    group_name = "perfpulse-busy-test.service"
    v1 = [c for c in (Path("/sys/fs/cgroup") / n for n in ("memory", "pids"))
          if (c / "cgroup.procs").exists()]  # fmt: skip
    with (
        real_group(group_name, [unified_root(), *v1]) as groups,
        serve(tmp_path, "--interval", "1", env=env) as server,
        running(BURNER) as burner,
    ):
        for group in groups:
            (group / "cgroup.procs").write_text(str(burner.pid))
        follower = Follower(server.url, token_for())
        follower.start()
        try:
            snapshot = follower.wait_for(
                lambda s: any(
                    g["name"] == group_name and (g["cpu_percent"] or 0) > 50
                    for g in s["cgroups"]["groups"]
                ),
                15,
            )
            counted = 0.0
            for line in httpx.get(server.url + "/metrics").text.splitlines():
                if line.startswith("perfpulse_cgroup_cpu_seconds_total{") and group_name in line:
                    counted = float(line.split()[-1])
        finally:
            follower.stop.set()
            follower.join(5)
    entry = next(g for g in snapshot["cgroups"]["groups"] if g["name"] == group_name)
    assert entry["kind"] == "service" and entry["path"] == group_name
    assert named(snapshot, "ppburner")["cgroup"] == group_name  # type: ignore[index]
    assert counted > 0.5


def test_history_names_who_was_on_top_in_a_minute(tmp_path, server_env):
    """The burner runs in a real group through the end of a minute (20 s of it at least):
    that minute's history names it first by CPU, and its group with its CPU seconds."""
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    env = {
        **server_env,
        "PERFPULSE_PROCESSES_SCAN_SECONDS": "2",
        "PERFPULSE_BATCH_MAX_AGE_SECONDS": "1",
    }
    group_name = "perfpulse-history-test.service"
    auth = {"Authorization": f"Bearer {token_for()}"}
    with (
        real_group(group_name, [unified_root()]) as (group,),
        serve(tmp_path, "--interval", "1", env=env) as server,
        running(BURNER) as burner,
    ):
        (group / "cgroup.procs").write_text(str(burner.pid))
        started = time.time()
        # A minute the burner runs 20 s of at least: this one, or else the next, whole.
        minute = int(started // 60) * 60
        if minute + 60 - started < 20:
            minute += 60
        ran = minute + 60 - max(started, minute)
        time.sleep(minute + 60 + 4 - time.time())  # its account is written after it ends
        window = {
            "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(minute)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(minute + 60)),
        }
        processes = httpx.get(
            server.url + "/api/metrics/history",
            params={"metric_type": "processes", **window},
            headers=auth,
        ).json()
        groups = httpx.get(
            server.url + "/api/metrics/history",
            params={"metric_type": "cgroups", **window},
            headers=auth,
        ).json()
        too_long = httpx.get(
            server.url + "/api/metrics/history",
            params={"metric_type": "processes", "start": "now-2d"},
            headers=auth,
        )
    (bucket,) = processes["buckets"]
    assert bucket["minutes"] == 1 and processes["bucket_seconds"] == 60
    leader = bucket["top"][0]
    assert leader["name"] == "ppburner" and leader["pid"] == burner.pid
    assert leader["cpu_seconds"] > 0.5 * ran  # more than half a core while it ran
    assert leader["cgroup"] == group_name
    (by_group,) = groups["buckets"]
    entry = next(g for g in by_group["groups"] if g["name"] == group_name)
    assert entry["cpu_seconds"] > 0.5 * ran
    assert too_long.status_code == 422
    assert "at most 24 hours" in too_long.text


def test_the_whole_process_table_on_demand(tmp_path, server_env):
    """GET /api/processes: every process of the last scan, sorted as asked and cut at
    `limit`, only with a token; a bad parameter is a 422 that names it."""
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    env = {**server_env, "PERFPULSE_PROCESSES_SCAN_SECONDS": "1"}
    with serve(tmp_path, "--interval", "0.5", env=env) as server, running(_hog()):
        headers = {"Authorization": f"Bearer {token_for()}"}
        url = server.url + "/api/processes"
        deadline = time.monotonic() + 15
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = httpx.get(url, params={"sort": "memory", "limit": 3}, headers=headers)
            if answer.status_code == 200:
                body = answer.json()
                if body["processes"] and body["processes"][0]["name"] == "pphog":
                    break
            time.sleep(0.3)
        by_cpu = httpx.get(url, params={"limit": 5000}, headers=headers).json()
        unauthenticated = httpx.get(url)
        bad_sort = httpx.get(url, params={"sort": "pid"}, headers=headers)
        too_many = httpx.get(url, params={"limit": 5001}, headers=headers)
    rss = [p["rss_bytes"] for p in body["processes"]]
    assert body["processes"][0]["name"] == "pphog" and len(rss) == 3
    assert rss == sorted(rss, reverse=True)
    assert by_cpu["count"] == len(by_cpu["processes"]) > 10  # the whole table, here
    cpu = [p["cpu_percent"] or 0 for p in by_cpu["processes"]]
    assert cpu == sorted(cpu, reverse=True)
    assert {p["pid"] for p in by_cpu["processes"]} >= {os.getpid()}
    assert unauthenticated.status_code == 401
    assert bad_sort.status_code == 422 and "sort" in bad_sort.text
    assert too_many.status_code == 422 and "limit" in too_many.text
