"""perf collector cost: exporter CPU at a 1 s interval with perf on vs off, beside a
`perf stat` spawned once per tick (the design the long-lived child replaces)."""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
from typing import Any

import psutil

from bench.common import free_port, machine, perfpulse_argv, process
from exporter.collectors.perfstat import DEFAULT_EVENTS


def _cpu_seconds(proc: psutil.Process) -> float:
    """The process and its children (the perf child), user + system."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _serve_cpu(perf: bool, seconds: float) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            "PERFPULSE_DATA_DIR": data_dir,
            "PERFPULSE_PERF_ENABLED": "true" if perf else "false",
            "PERFPULSE_LOG_LEVEL": "warning",
        }
        argv = perfpulse_argv("--host", "127.0.0.1", "--port", str(port), "--interval", "1")
        with process(argv, f"http://127.0.0.1:{port}/healthz", env) as server:
            proc = psutil.Process(server.pid)
            time.sleep(5)  # past start-up (embedded database, first perf interval)
            before = _cpu_seconds(proc)
            time.sleep(seconds)
            return 100.0 * (_cpu_seconds(proc) - before) / seconds


def _spawn_per_tick_cpu(seconds: float) -> float:
    """CPU of one `perf stat -a` per second, each counting for a moment, as children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < seconds:
        subprocess.run(
            ["perf", "stat", "-a", "-x,", "-e", ",".join(DEFAULT_EVENTS), "--", "sleep", "0.01"],
            capture_output=True,
            check=False,
        )
        ticks += 1
        time.sleep(max(0.0, started + ticks - time.monotonic()))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return 100.0 * used / (time.monotonic() - started)


def run(seconds: float) -> dict[str, Any]:
    off = _serve_cpu(False, seconds)
    on = _serve_cpu(True, seconds)
    spawn = _spawn_per_tick_cpu(seconds)
    return {
        "machine": machine(),
        "seconds": seconds,
        "perf_off_percent": off,
        "perf_on_percent": on,
        "perf_added_percent": on - off,
        "spawn_per_tick_percent": spawn,
    }


def report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"Machine: {r['machine']}; {r['seconds']:g} s per measurement, 1 s interval",
            "",
            "| configuration | CPU, % of one core |",
            "|---|---|",
            f"| perfpulse, perf collector off | {r['perf_off_percent']:.2f} |",
            f"| perfpulse, perf collector on (long-lived child included) | {r['perf_on_percent']:.2f} |",
            f"| added by the perf collector | {r['perf_added_percent']:.2f} |",
            f"| one `perf stat` spawn per tick, alone | {r['spawn_per_tick_percent']:.2f} |",
        ]
    )
