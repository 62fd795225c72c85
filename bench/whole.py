"""whole — what the whole stack costs an operator, side by side with node_exporter and
Glances, each measured alone for the same window:

- perfpulse: `perfpulse serve` at the interval given, on its embedded PostgreSQL, with one
  WebSocket client reading the stream and one scrape of /metrics per interval; measured
  over its whole process tree: the server, the `perf stat` child, and the PostgreSQL
  processes (daemonized, so found by their data directory);
- node_exporter (Debian's prometheus-node-exporter, default collectors) scraped at the
  same interval;
- Glances in web-server mode (installed by this benchmark into its own virtual
  environment under bench/.glances), refreshing at the same interval, with one client
  fetching its whole API (`/api/4/all`) each interval.

CPU is user + system time over the window, including the time of children that exited
(PostgreSQL's short-lived workers), as % of one core. Memory is proportional set size
(PSS, /proc/PID/smaps_rollup) summed over the tree: shared pages are counted once, not
once per process as RSS would.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import free_port, machine, perfpulse, process

GLANCES_VERSION = "4.5.8"
GLANCES_VENV = Path(__file__).parent / ".glances"
NODE_EXPORTER = "prometheus-node-exporter"


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running()]


def tree_of(pid: int, data_dir: str | None = None) -> list[psutil.Process]:
    """The process, its descendants, and (with `data_dir`) every process whose command
    line names that directory, with their descendants (a daemonized PostgreSQL)."""
    found: dict[int, psutil.Process] = {}
    roots = [psutil.Process(pid)]
    if data_dir is not None:
        for proc in psutil.process_iter(["cmdline"]):
            if any(data_dir in part for part in proc.info["cmdline"] or []):
                roots.append(proc)
    for root in roots:
        try:
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def on_cpu_seconds(pid: int) -> float:
    """CPU time of a live process's threads from /proc/PID/task/*/schedstat, in
    nanoseconds (user + system ticks come in 10 ms steps: 0.025 % of a 40 s window)."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def cpu_by_kind(procs: list[psutil.Process]) -> dict[str, float]:
    """User + system seconds of the processes and of their children that have exited, by
    kind: the server (python), perf, postgres (its processes name their role)."""
    totals: dict[str, float] = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            kind = _kind(proc)
        except psutil.NoSuchProcess:
            continue
        used = t.user + t.system + t.children_user + t.children_system
        totals[kind] = totals.get(kind, 0.0) + used
    return totals


def _kind(proc: psutil.Process) -> str:
    name = proc.name()
    if name.startswith("python"):
        return "server"
    if name == "postgres":
        cmdline = " ".join(proc.cmdline())
        if not cmdline.startswith("postgres: "):
            return "postgres postmaster"
        return "postgres " + cmdline.removeprefix("postgres: ").split(" ")[0]
    return name


def pss_bytes(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(
    find: Callable[[], list[psutil.Process]], seconds: float, main_pid: int | None = None
) -> dict[str, Any]:
    """CPU % of one core over `seconds`, PSS (median of samples) of the tree `find` gives.

    The tree is looked up again at the end: a process that started meanwhile (a new
    PostgreSQL backend) counts from its start, one that ended counts through its parent.
    """
    start = cpu_by_kind(find())
    main_start = on_cpu_seconds(main_pid) if main_pid is not None else 0.0
    samples = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(min(5.0, max(0.0, seconds - (time.monotonic() - started))))
        samples.append(pss_bytes(find()))
    elapsed = time.monotonic() - started
    main_end = on_cpu_seconds(main_pid) if main_pid is not None else 0.0
    after_procs = find()
    # A process that started meanwhile counts from zero; one that exited meanwhile is in
    # its parent's children_* times (all of its life: a slight overcount, never under).
    end = cpu_by_kind(after_procs)
    by_kind = {
        kind: 100.0 * (end.get(kind, 0.0) - start.get(kind, 0.0)) / elapsed
        for kind in sorted(end.keys() | start.keys())
    }
    return {
        "cpu_percent": sum(by_kind.values()),
        "cpu_percent_by_kind": by_kind,
        "main_process_cpu_percent": 100.0 * (main_end - main_start) / elapsed,
        "pss_mib": statistics.median(samples) / 2**20,
        "processes": len(after_procs),
    }


class Poller(threading.Thread):
    """GETs a URL every `interval` seconds until stopped (the scraper, the Glances client)."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stop = threading.Event()
        self.requests = self.failures = 0

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(self.interval):
                try:
                    client.get(self.url).raise_for_status()
                    self.requests += 1
                except httpx.HTTPError:
                    self.failures += 1


class StreamReader(threading.Thread):
    """One logged-in WebSocket client reading every snapshot."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.stop = threading.Event()
        self.received = 0

    def run(self) -> None:
        import websockets

        async def read() -> None:
            async with websockets.connect(self.url, subprotocols=["bearer", self.token]) as ws:
                while not self.stop.is_set():
                    try:
                        await asyncio.wait_for(ws.recv(), 1.0)
                        self.received += 1
                    except TimeoutError:
                        continue

        asyncio.run(read())


@contextmanager
def pollers(*threads: threading.Thread) -> Iterator[None]:
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for thread in threads:
            thread.stop.set()  # type: ignore[attr-defined]
        for thread in threads:
            thread.join(10)


def perfpulse_cost(interval: float, seconds: float, tree: str | None = None) -> dict[str, Any]:
    with perfpulse(interval, tree=tree) as server:
        reader = StreamReader(server.stream_url, server.token)
        scraper = Poller(server.base + "/metrics", interval)
        with pollers(reader, scraper):
            time.sleep(10)  # past start-up: first flushes, perf's first interval
            result = measure(lambda: tree_of(server.pid, server.data_dir), seconds, server.pid)
        result["snapshots_streamed"] = reader.received
        result["requests"] = scraper.requests
    return result


def peer_cost(argv: list[str], url: str, interval: float, seconds: float) -> dict[str, Any]:
    """A peer (node_exporter, Glances) started alone, `url` fetched every `interval`."""
    with process(argv, url) as peer:
        client = Poller(url, interval)
        with pollers(client):
            time.sleep(5)
            result = measure(lambda: tree_of(peer.pid), seconds)
        result["requests"] = client.requests
    return result


def node_exporter_cost(interval: float, seconds: float) -> dict[str, Any]:
    binary = shutil.which(NODE_EXPORTER)
    if binary is None:
        raise SystemExit(f"bench: {NODE_EXPORTER} is missing; run `make bench` (installs it)")
    port = free_port()
    argv = [binary, f"--web.listen-address=127.0.0.1:{port}"]
    return peer_cost(argv, f"http://127.0.0.1:{port}/metrics", interval, seconds)


def glances_binary() -> Path:
    """Glances (with its web server) in a virtual environment of its own."""
    binary = GLANCES_VENV / "bin" / "glances"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(GLANCES_VENV)], check=True)
        subprocess.run(
            [
                str(GLANCES_VENV / "bin/pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"glances[web]=={GLANCES_VERSION}",
            ],
            check=True,
        )
    return binary


def glances_cost(interval: float, seconds: float) -> dict[str, Any]:
    port = free_port()
    argv = [str(glances_binary()), "-w", "--disable-webui", "-B", "127.0.0.1",
            "-p", str(port), "-t", str(interval)]  # fmt: skip
    return peer_cost(argv, f"http://127.0.0.1:{port}/api/4/all", interval, seconds)


def run(
    seconds: float, runs: int, with_glances: bool = True, baseline: str | None = None
) -> dict[str, Any]:
    """`baseline`: a checkout of another perfpulse commit, measured at 1 s in the same
    run, interleaved with this one (before and after under the same machine noise)."""
    results: dict[str, list[dict[str, Any]]] = {"perfpulse": [], "node_exporter": []}
    if baseline is not None:
        results["baseline"] = []
    if with_glances:
        results["glances"] = []
        glances_binary()  # installed before any measuring
    results["perfpulse_5s"] = []
    for _ in range(runs):  # interleaved: each sees the same machine noise
        if baseline is not None:
            results["baseline"].append(perfpulse_cost(1.0, seconds, tree=baseline))
        results["perfpulse"].append(perfpulse_cost(1.0, seconds))
        results["node_exporter"].append(node_exporter_cost(1.0, seconds))
        if with_glances:
            results["glances"].append(glances_cost(1.0, seconds))
        results["perfpulse_5s"].append(perfpulse_cost(5.0, seconds))
    return {"machine": machine(), "seconds": seconds, "runs": results, "baseline": baseline}


def _stat(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def report(result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = [
        f"Machine: {result['machine']}; {result['seconds']:g} s per measurement, "
        f"{len(runs['perfpulse'])} runs each, interleaved",
        "",
        "| stack (1 s unless said) | CPU, % of one core: median (min-max) | PSS MiB: median (min-max) | processes |",
        "|---|---|---|---|",
    ]
    cpu = {name: _stat([r["cpu_percent"] for r in rs]) for name, rs in runs.items()}
    pss = {name: _stat([r["pss_mib"] for r in rs]) for name, rs in runs.items()}
    labels = {
        "perfpulse": "perfpulse: server + perf child + embedded PostgreSQL, 1 stream client, 1 s scrape",
        "perfpulse_5s": "perfpulse at 5 s (scraped every 5 s)",
        "baseline": f"perfpulse baseline ({result.get('baseline')}), 1 s, same load",
        "node_exporter": "node_exporter 1.5, scraped every 1 s",
        "glances": "Glances web server, its whole API fetched every 1 s",
    }
    for name, rs in runs.items():
        c, p = cpu[name], pss[name]
        lines.append(
            f"| {labels[name]} | {c[0]:.2f} ({c[1]:.2f}-{c[2]:.2f}) | {p[0]:.0f} ({p[1]:.0f}-{p[2]:.0f}) "
            f"| {rs[-1]['processes']} |"
        )
    lines.append("")
    lines.append(
        f"perfpulse / node_exporter CPU: {cpu['perfpulse'][0] / cpu['node_exporter'][0]:.2f}"
    )
    for name in ("baseline", "perfpulse", "perfpulse_5s"):
        if name in runs:
            server = _stat([r["main_process_cpu_percent"] for r in runs[name]])
            lines.append(
                f"{name}: the server process alone (schedstat): "
                f"{server[0]:.3f} ({server[1]:.3f}-{server[2]:.3f}) % of a core"
            )
    if "glances" in cpu:
        lines.append(f"perfpulse / Glances CPU: {cpu['perfpulse'][0] / cpu['glances'][0]:.2f}")
    kinds = sorted({k for r in runs["perfpulse"] for k in r["cpu_percent_by_kind"]})
    by_kind = {
        k: statistics.median([r["cpu_percent_by_kind"].get(k, 0.0) for r in runs["perfpulse"]])
        for k in kinds
    }
    lines.append(
        "perfpulse at 1 s, by process (median % of a core): "
        + ", ".join(f"{k} {v:.3f}" for k, v in by_kind.items())
    )
    return "\n".join(lines)
