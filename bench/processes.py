"""processes — what attribution costs: the process scan at 100, 1,000 and 5,000 extra
processes, the per-tick pass over the processes on top, the cgroups collector, and the
frame with and without the two sections.

For each size, that many `sleep` processes are spawned (one shell forks them; all are
killed at the end), then, in this process:

- a full scan (`ProcessesCollector` forced to rescan): CPU time, median of several, and
  per process;
- the same table read through psutil (`process_iter` with the attributes the section
  carries), the baseline the issue measured, in the same run;
- a tick between scans (the tracked processes read again through held descriptors);
- the cost per second at the default cadence (a scan every `PERFPULSE_PROCESSES_SCAN_SECONDS`,
  a tick every second), as % of one core;
- the cgroups collector's tick.

Frame size: one snapshot of every collector (perf off) serialized as the stream sends it,
and the same snapshot without `processes` and `cgroups`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.common import machine, median
from exporter.collectors.cgroups import CgroupsCollector
from exporter.collectors.processes import SCAN_SECONDS, ProcessesCollector
from exporter.config import load_settings
from exporter.runtime import Runtime

PSUTIL_ATTRS = ["name", "username", "cpu_times", "memory_info", "io_counters", "cmdline"]


def _spawn(count: int) -> subprocess.Popen[bytes]:
    """`count` sleeping processes under one shell (its own process group)."""
    shell = subprocess.Popen(
        ["sh", "-c", f"i=0; while [ $i -lt {count} ]; do sleep 3600 & i=$((i+1)); done; wait"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(psutil.Process(shell.pid).children()) >= count:
            return shell
        time.sleep(0.2)
    _kill(shell)
    raise RuntimeError(f"could not spawn {count} processes in 120 s")


def _kill(shell: subprocess.Popen[bytes]) -> None:
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    # Reaped by init; wait until they are gone from /proc so the next size starts clean.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
        p.info["name"] == "sleep" and p.info["ppid"] in (1, shell.pid)
        for p in psutil.process_iter(["name", "ppid"])
    ):
        time.sleep(0.2)


def _cpu_ms(call: Any) -> float:
    started = time.process_time()
    call()
    return (time.process_time() - started) * 1e3


def _psutil_table() -> int:
    n = 0
    for process in psutil.process_iter(PSUTIL_ATTRS, ad_value=None):
        n += process.info["name"] is not None
    return n


def measure(extra: int, scans: int, ticks: int) -> dict[str, Any]:
    shell = _spawn(extra) if extra else None
    try:
        collector = ProcessesCollector(Path("/proc"))
        collector.collect()  # the first scan: every process new
        time.sleep(0.5)

        def scan() -> None:
            collector._scanned_mono = -float("inf")  # due: the next collect scans
            collector.collect()

        scan_ms = [_cpu_ms(scan) for _ in range(scans)]
        count = collector.table_size()
        psutil_ms = [_cpu_ms(_psutil_table) for _ in range(max(3, scans // 4))]
        tick_ms = []
        for _ in range(ticks):
            before = collector.full_scans
            collector._scanned_mono = time.monotonic()  # scanned just now: a tick only
            cost = _cpu_ms(collector.collect)
            if collector.full_scans == before:  # an early scan is a scan, not a tick
                tick_ms.append(cost)
            time.sleep(0.01)
        cgroups = CgroupsCollector(Path("/sys/fs/cgroup"))
        cgroups.collect()
        cgroup_ms = [_cpu_ms(cgroups.collect) for _ in range(ticks)]
        scan, tick = median(scan_ms), median(tick_ms) if tick_ms else float("nan")
        per_second_ms = scan / SCAN_SECONDS + tick * (1 - 1 / SCAN_SECONDS)
        return {
            "extra_processes": extra,
            "processes_seen": count,
            "scan_cpu_ms_median": scan,
            "scan_us_per_process": scan * 1e3 / count,
            "psutil_cpu_ms_median": median(psutil_ms),
            "psutil_us_per_process": median(psutil_ms) * 1e3 / count,
            "tick_cpu_ms_median": tick,
            "tracked": len(collector._tracked),
            "per_second_percent_of_core": per_second_ms / 10,
            "cgroups_tick_cpu_ms_median": median(cgroup_ms),
        }
    finally:
        if shell is not None:
            _kill(shell)


def frame_sizes(ticks: int = 30) -> dict[str, Any]:
    """At 1 s for `ticks` s: the first scan's rates are averages since each process
    started, the later ones over the interval between scans, as in a running server."""
    settings = load_settings(sampling_interval_seconds=1.0, hostname="bench", perf_enabled=False)
    sampler = Runtime(settings).sampler
    full: list[int] = []
    without: list[int] = []

    async def run() -> None:
        await sampler.sample_once()
        for _ in range(ticks):
            await asyncio.sleep(1.0)
            snapshot = await sampler.sample_once()
            frame = snapshot.to_json()
            full.append(len(frame))
            data = json.loads(frame)
            for name in ("processes", "cgroups"):
                data.pop(name)
            without.append(len(orjson.dumps(data)))

    asyncio.run(run())
    return {"frame_bytes_median": median(full), "frame_bytes_without_median": median(without)}


def run(sizes: list[int], scans: int = 20, ticks: int = 100) -> dict[str, Any]:
    rows = [measure(0, scans, ticks)]
    for extra in sizes:
        rows.append(measure(extra, scans if extra < 5000 else max(5, scans // 2), ticks))
    return {"machine": machine(), "sizes": rows, "frame": frame_sizes()}


def report(result: dict[str, Any]) -> str:
    lines = [
        result["machine"],
        "",
        "| extra processes | seen | full scan, CPU ms | per process, µs | psutil, µs per process "
        "| ratio | tick between scans, ms (tracked) | per second at 1 s ticks, % of a core "
        "| cgroups tick, ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["sizes"]:
        lines.append(
            f"| {row['extra_processes']:,} | {row['processes_seen']:,} "
            f"| {row['scan_cpu_ms_median']:.2f} | {row['scan_us_per_process']:.1f} "
            f"| {row['psutil_us_per_process']:.1f} "
            f"| {row['scan_us_per_process'] / row['psutil_us_per_process']:.2f} "
            f"| {row['tick_cpu_ms_median']:.3f} ({row['tracked']}) "
            f"| {row['per_second_percent_of_core']:.3f} | {row['cgroups_tick_cpu_ms_median']:.3f} |"
        )
    frame = result["frame"]
    lines += [
        "",
        f"Frame: {frame['frame_bytes_median']:,.0f} bytes with processes and cgroups, "
        f"{frame['frame_bytes_without_median']:,.0f} without "
        f"(+{frame['frame_bytes_median'] - frame['frame_bytes_without_median']:,.0f}).",
    ]
    return "\n".join(lines)
