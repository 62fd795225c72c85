"""The collectors, in snapshot order (plus `filesystem`, part of the disk section)."""

from __future__ import annotations

from typing import NoReturn

from exporter.collectors.base import Collector, TickReads, Unavailable
from exporter.collectors.cgroups import CgroupsCollector
from exporter.collectors.cpu import CpuCollector
from exporter.collectors.disk import DiskCollector
from exporter.collectors.filesystem import FilesystemCollector
from exporter.collectors.memory import MemoryCollector
from exporter.collectors.memory_bandwidth import MemoryBandwidthCollector
from exporter.collectors.network import NetworkCollector
from exporter.collectors.perf_events import PerfEventsCollector
from exporter.collectors.perfstat import PerfStat, imc_events
from exporter.collectors.processes import ProcessesCollector
from exporter.config import Settings
from exporter.spec import COLLECTOR_NAMES


class DisabledCollector:
    """A collector switched off by configuration: always unavailable, saying so."""

    blocking = False

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def collect(self) -> NoReturn:
        raise Unavailable(self.reason)


def build_perf(settings: Settings) -> PerfStat | None:
    """The perf child's supervisor (not started), or None when disabled."""
    if not settings.perf_enabled:
        return None
    return PerfStat(
        binary=settings.perf_binary,
        events=settings.perf_event_list,
        extra_events=imc_events(settings.sys_root),
        interval=settings.sampling_interval_seconds,
        sys_root=settings.sys_root,
        proc_root=settings.proc_root,
    )


def build_collectors(
    settings: Settings, perf: PerfStat | None = None, tick_reads: TickReads | None = None
) -> list[Collector]:
    """One instance of each collector, reading the sources the settings point at.

    With `tick_reads` (which the sampler renews every tick), files that two collectors
    need are read once per tick.
    """
    proc, sys = settings.proc_root, settings.sys_root
    if perf is not None:
        perf_collector: Collector = PerfEventsCollector(perf)
    elif not settings.perf_enabled:
        perf_collector = DisabledCollector("perf_events", "disabled (PERFPULSE_PERF_ENABLED=false)")
    else:
        perf_collector = DisabledCollector("perf_events", "perf child not started")
    collectors: list[Collector] = [
        CpuCollector(proc, sys, tick_reads=tick_reads),
        MemoryCollector(proc, tick_reads=tick_reads),
        NetworkCollector(proc),
        DiskCollector(proc, sys),
        FilesystemCollector(proc, rootfs=settings.rootfs),
        perf_collector,
        MemoryBandwidthCollector(proc, sys, perf=perf, tick_reads=tick_reads),
        ProcessesCollector(
            proc,
            top=settings.processes_top,
            scan_seconds=settings.processes_scan_seconds,
            max_groups=settings.process_groups_max,
            tick_reads=tick_reads,
        ),
        CgroupsCollector(
            sys / "fs" / "cgroup",
            max_groups=settings.cgroups_max,
            scan_seconds=settings.processes_scan_seconds,
        ),
    ]
    wanted = settings.collector_set
    collectors = [
        c
        if _section(c) in wanted
        else DisabledCollector(c.name, "disabled (not in PERFPULSE_COLLECTORS)")
        for c in collectors
        if c.name != "filesystem" or "disk" in wanted
    ]
    sections = tuple(c.name for c in collectors if getattr(c, "part_of", None) is None)
    assert sections == COLLECTOR_NAMES
    return collectors


def _section(collector: Collector) -> str:
    part_of: str | None = getattr(collector, "part_of", None)
    return part_of or collector.name
