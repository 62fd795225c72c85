"""The six collectors, in snapshot order."""

from __future__ import annotations

from exporter.collectors.base import Collector
from exporter.collectors.cpu import CpuCollector
from exporter.collectors.disk import DiskCollector
from exporter.collectors.memory import MemoryCollector
from exporter.collectors.network import NetworkCollector
from exporter.collectors.placeholder import NotImplementedCollector
from exporter.config import Settings

COLLECTOR_NAMES = ("cpu", "memory", "network", "disk", "perf_events", "memory_bandwidth")


def build_collectors(settings: Settings) -> list[Collector]:
    """One instance of each collector, reading the sources the settings point at."""
    proc, sys = settings.proc_root, settings.sys_root
    collectors: list[Collector] = [
        CpuCollector(proc, sys),
        MemoryCollector(proc),
        NetworkCollector(proc),
        DiskCollector(proc, sys, rootfs=settings.rootfs),
        NotImplementedCollector("perf_events"),
        NotImplementedCollector("memory_bandwidth"),
    ]
    assert tuple(c.name for c in collectors) == COLLECTOR_NAMES
    return collectors
