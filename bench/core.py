"""Exporter core: cost of one sampling tick, /metrics latency, idle CPU.

Each figure is measured beside Debian's prometheus-node-exporter in the same run.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from typing import Any

import httpx
import psutil

from bench.common import free_port, machine, median, percentile, perfpulse_argv, process
from exporter.collectors import build_collectors
from exporter.config import load_settings
from exporter.runtime import Runtime

NODE_EXPORTER = "prometheus-node-exporter"
# node_exporter collectors that cover what perfpulse's four psutil-style collectors do.
NODE_EQUIVALENTS = {"cpu": "cpu", "memory": "meminfo", "network": "netdev", "disk": "diskstats"}
# Everything perfpulse's four collectors read: load average, /proc/stat counters, CPU
# frequency, swap traffic from vmstat, filesystem usage and pressure stall information
# come from further collectors.
NODE_ALSO_COVERED = ("loadavg", "stat", "cpufreq", "vmstat", "filesystem", "pressure")
DURATION = re.compile(r'^node_scrape_collector_duration_seconds\{collector="(\w+)"\} (\S+)$', re.M)


def tick_cost(ticks: int, names: tuple[str, ...] = tuple(NODE_EQUIVALENTS)) -> dict[str, Any]:
    """CPU and wall time of one full tick (the named collectors, threads, snapshot)."""
    settings = load_settings(sampling_interval_seconds=1.0, hostname="bench")
    collectors = [c for c in build_collectors(settings) if c.name in names]
    sampler = Runtime(settings, collectors=collectors).sampler

    cpu: list[float] = []
    wall: list[float] = []
    serialize: list[float] = []
    per_collector: dict[str, list[float]] = {name: [] for name in names}

    async def run() -> None:
        await sampler.sample_once()
        for _ in range(ticks):
            c0, w0 = time.process_time(), time.perf_counter()
            snapshot = await sampler.sample_once()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            s0 = time.process_time()
            snapshot.to_json()
            serialize.append(time.process_time() - s0)
            for name, result in snapshot.results.items():
                per_collector[name].append(result.duration_seconds)
            await asyncio.sleep(0.005)

    asyncio.run(run())
    return {
        "tick_cpu_ms_median": median(cpu) * 1e3,
        "tick_wall_ms_median": median(wall) * 1e3,
        "snapshot_json_cpu_ms_median": median(serialize) * 1e3,
        "collector_ms_median": {k: median(v) * 1e3 for k, v in per_collector.items()},
    }


def scrape_latency(url: str, scrapes: int) -> list[float]:
    latencies = []
    with httpx.Client() as client:
        client.get(url)
        for _ in range(scrapes):
            t0 = time.perf_counter()
            response = client.get(url)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
    return latencies


def node_collector_durations(url: str, scrapes: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {
        name: [] for name in (*NODE_EQUIVALENTS.values(), *NODE_ALSO_COVERED)
    }
    with httpx.Client() as client:
        for _ in range(scrapes):
            for name, value in DURATION.findall(client.get(url).text):
                if name in samples:
                    samples[name].append(float(value))
            time.sleep(0.01)
    return {name: median(values) * 1e3 for name, values in samples.items()}


def idle_cpu(pid: int, seconds: float) -> float:
    """Percent of one core the process used while nobody scraped it."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / seconds


def run(ticks: int, scrapes: int, idle_seconds: float) -> dict[str, Any]:
    node = shutil.which(NODE_EXPORTER)
    if node is None:
        raise SystemExit(f"bench: {NODE_EXPORTER} is missing; run `make bench` (installs it)")
    result: dict[str, Any] = {"machine": machine()}
    result.update(tick_cost(ticks))
    # statvfs runs on the filesystem collector's worker thread, under the deadline.
    with_fs = tick_cost(ticks, (*NODE_EQUIVALENTS, "filesystem"))
    result["tick_with_filesystem_wall_ms_median"] = with_fs["tick_wall_ms_median"]
    result["tick_with_filesystem_cpu_ms_median"] = with_fs["tick_cpu_ms_median"]
    result["filesystem_ms_median"] = with_fs["collector_ms_median"]["filesystem"]

    node_port, node_min_port, pp_port = free_port(), free_port(), free_port()
    node_url = f"http://127.0.0.1:{node_port}/metrics"
    node_min_url = f"http://127.0.0.1:{node_min_port}/metrics"
    pp_url = f"http://127.0.0.1:{pp_port}/metrics"
    four = [f"--collector.{name}" for name in (*NODE_EQUIVALENTS.values(), *NODE_ALSO_COVERED)]
    with (
        process([node, f"--web.listen-address=127.0.0.1:{node_port}"], node_url),
        process(
            [
                node,
                f"--web.listen-address=127.0.0.1:{node_min_port}",
                "--collector.disable-defaults",
                *four,
            ],
            node_min_url,
        ),
        process(
            perfpulse_argv(
                "--host",
                "127.0.0.1",
                "--port",
                str(pp_port),
                "--interval",
                "1",
                "--log-level",
                "warning",
            ),
            pp_url,
        ) as perfpulse,
    ):
        result["node_collector_ms_median"] = node_collector_durations(
            node_min_url, max(50, scrapes // 4)
        )
        # Interleave in rounds so both servers see the same machine noise.
        lat: dict[str, list[float]] = {
            "perfpulse": [],
            "node_exporter": [],
            "node_exporter_four": [],
        }
        rounds = 10
        for _ in range(rounds):
            lat["perfpulse"] += scrape_latency(pp_url, scrapes // rounds)
            lat["node_exporter"] += scrape_latency(node_url, scrapes // rounds)
            lat["node_exporter_four"] += scrape_latency(node_min_url, scrapes // rounds)
        result["scrape_ms"] = {
            name: {"p50": percentile(v, 50) * 1e3, "p99": percentile(v, 99) * 1e3, "n": len(v)}
            for name, v in lat.items()
        }
        with httpx.Client() as client:
            result["scrape_bytes"] = {
                "perfpulse": len(client.get(pp_url).content),
                "node_exporter": len(client.get(node_url).content),
                "node_exporter_four": len(client.get(node_min_url).content),
            }
        time.sleep(2)
        result["idle_cpu_percent_of_core_at_1s"] = idle_cpu(perfpulse.pid, idle_seconds)
        result["idle_seconds"] = idle_seconds
    node_ms = result["node_collector_ms_median"]
    result["node_four_collectors_ms_sum"] = sum(node_ms[n] for n in NODE_EQUIVALENTS.values())
    result["node_all_equivalent_ms_sum"] = sum(node_ms.values())
    result["tick_vs_node_four_ratio"] = (
        result["tick_wall_ms_median"] / result["node_four_collectors_ms_sum"]
    )
    result["scrape_p50_ratio_vs_node"] = (
        result["scrape_ms"]["perfpulse"]["p50"] / result["scrape_ms"]["node_exporter"]["p50"]
    )
    return result


def report(result: dict[str, Any]) -> str:
    s = result["scrape_ms"]
    lines = [
        f"Machine: {result['machine']}",
        "",
        "| measure | perfpulse | node_exporter | ratio |",
        "|---|---|---|---|",
        f"| one tick, wall (median; node: sum of cpu+meminfo+netdev+diskstats durations) "
        f"| {result['tick_wall_ms_median']:.2f} ms | {result['node_four_collectors_ms_sum']:.2f} ms "
        f"| {result['tick_vs_node_four_ratio']:.2f} |",
        f"| one tick, wall (median; node: those four + {', '.join(NODE_ALSO_COVERED)}) "
        f"| {result['tick_wall_ms_median']:.2f} ms | {result['node_all_equivalent_ms_sum']:.2f} ms "
        f"| {result['tick_wall_ms_median'] / result['node_all_equivalent_ms_sum']:.2f} |",
        f"| one tick + filesystem (statvfs on its thread), wall (median; node: the nine) "
        f"| {result['tick_with_filesystem_wall_ms_median']:.2f} ms "
        f"| {result['node_all_equivalent_ms_sum']:.2f} ms "
        f"| {result['tick_with_filesystem_wall_ms_median'] / result['node_all_equivalent_ms_sum']:.2f} |",
        f"| one tick, CPU time (median) | {result['tick_cpu_ms_median']:.2f} ms | n/a | |",
        f"| one tick + filesystem, CPU time (median) "
        f"| {result['tick_with_filesystem_cpu_ms_median']:.2f} ms | n/a | |",
        f"| snapshot to JSON, CPU time (median) | {result['snapshot_json_cpu_ms_median']:.2f} ms | n/a | |",
        f"| /metrics p50 (node: all default collectors) | {s['perfpulse']['p50']:.2f} ms "
        f"| {s['node_exporter']['p50']:.2f} ms | {result['scrape_p50_ratio_vs_node']:.2f} |",
        f"| /metrics p99 (node: all default collectors) | {s['perfpulse']['p99']:.2f} ms "
        f"| {s['node_exporter']['p99']:.2f} ms | {s['perfpulse']['p99'] / s['node_exporter']['p99']:.2f} |",
        f"| /metrics p50 (node: only the equivalent collectors) | {s['perfpulse']['p50']:.2f} ms "
        f"| {s['node_exporter_four']['p50']:.2f} ms | {s['perfpulse']['p50'] / s['node_exporter_four']['p50']:.2f} |",
        f"| exposition size | {result['scrape_bytes']['perfpulse']} B | {result['scrape_bytes']['node_exporter']} B "
        f"(equivalent collectors only: {result['scrape_bytes']['node_exporter_four']} B) | |",
        f"| idle CPU at 1 s interval ({result['idle_seconds']:g} s, no scrapes) "
        f"| {result['idle_cpu_percent_of_core_at_1s']:.2f} % of a core | | |",
        "",
        "Per collector (median ms): perfpulse "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["collector_ms_median"].items())
        + "; node_exporter "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["node_collector_ms_median"].items()),
    ]
    return "\n".join(lines)
