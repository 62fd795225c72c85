"""cgroups: services, containers, pods and slices, each with its CPU share, memory, disk I/O,
task count and pressure, read from the cgroup filesystem.

Three layouts are read:

- **v2** (systemd hosts since 2021): one hierarchy at /sys/fs/cgroup gives everything;
- **hybrid** (v1 controllers, cgroup2 at /sys/fs/cgroup/unified): the unified hierarchy
  names the groups (systemd tracks every process there) and gives CPU (its `cpu.stat` is
  there without any controller) and pressure; memory, I/O and tasks come from the v1
  memory, blkio and pids controllers where the same path exists;
- **v1** alone: groups from the systemd (or cpuacct) hierarchy, CPU from cpuacct.

A group is reported when processes live in it or below it (`cgroup.events` says
`populated 1`; in v1, a non-empty `cgroup.procs` somewhere below). Like the process table,
the groups are walked every `scan_seconds` and the busiest ones' CPU is read again every
tick; rates are over the time since the previous reading. At most `max_groups` are
reported, the busiest first; `left_out` counts the rest.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Clock, Unavailable
from exporter.collectors.families import gauge, labeled_counter, labeled_gauge, stable
from exporter.collectors.processes import read_small, union_top
from exporter.collectors.sections import (
    CgroupEntry,
    CgroupKind,
    CgroupMinute,
    CgroupMinuteEntry,
    CgroupPressure,
    CgroupsData,
)

SCAN_SECONDS = 30.0
LIVE_GROUPS = 10  # the busiest groups, whose CPU is read every tick
UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes reports "no limit" as about 2^63 rounded down
WallClock = Callable[[], datetime]

# A 64-digit container id inside a unit or directory name: Docker, containerd, CRI-O,
# Podman each wrap it their own way.
_CONTAINER = re.compile(r"(?:^|[-_])([0-9a-f]{64})(?:\.scope)?$")
_POD = re.compile(r"(?:^|[-_])pod([0-9a-f_-]{36})(?:\.slice)?$")


# --- naming ------------------------------------------------------------------------------


def classify(path: str) -> tuple[CgroupKind, str]:
    """(kind, readable name) of a group from its path."""
    leaf = path.rsplit("/", 1)[-1]
    container = _CONTAINER.search(leaf)
    if container:
        return "container", container.group(1)[:12]
    pod = _POD.search(leaf)
    if pod:
        return "pod", "pod" + pod.group(1).replace("_", "-")[:12]
    if leaf.endswith(".service"):
        return "service", leaf
    if leaf.endswith(".slice"):
        return "slice", leaf
    if leaf.endswith(".scope"):
        return "scope", leaf
    return "other", leaf


# --- parsing -----------------------------------------------------------------------------


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (cpu.stat, memory.stat)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def parse_io_stat(text: str) -> tuple[int, int]:
    """(rbytes, wbytes) summed over the devices of a v2 io.stat."""
    read = write = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return read, write


def parse_blkio_bytes(text: str) -> tuple[int, int]:
    """(read, write) bytes summed over the devices of a v1 blkio.*io_service_bytes."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return read, write


def parse_pressure_some(text: str) -> tuple[float, int] | None:
    """(avg10 percent, total microseconds) of a pressure file's `some` line."""
    for line in text.splitlines():
        if line.startswith("some "):
            fields = dict(item.split("=", 1) for item in line.split()[1:])
            return float(fields["avg10"]), int(fields["total"])
    return None


def parse_memory_max(text: str) -> int | None:
    """A v2 memory.max or v1 memory.limit_in_bytes; None when unlimited."""
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= UNLIMITED_V1 else number


# --- the layout --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each figure is read from."""

    version: int  # 2 when a unified hierarchy names the groups (pure v2 or hybrid)
    names: Path  # the hierarchy whose directories are the groups
    memory: Path | None  # v1 memory controller (None: memory.* in `names`)
    blkio: Path | None
    pids: Path | None
    cpuacct: Path | None  # v1 only: CPU from cpuacct.usage


def find_layout(cgroup_root: Path) -> Layout:
    """The layout under `cgroup_root` (/sys/fs/cgroup); Unavailable without cgroups."""

    def v1(name: str) -> Path | None:
        for candidate in (name, f"{name},cpu" if name == "cpuacct" else name):
            path = cgroup_root / candidate
            if (path / "cgroup.procs").exists():
                return path
        if name == "cpuacct" and (cgroup_root / "cpu,cpuacct" / "cgroup.procs").exists():
            return cgroup_root / "cpu,cpuacct"
        return None

    if (cgroup_root / "cgroup.controllers").exists():
        return Layout(2, cgroup_root, None, None, None, None)
    unified = cgroup_root / "unified"
    if (unified / "cgroup.controllers").exists():
        return Layout(2, unified, v1("memory"), v1("blkio"), v1("pids"), None)
    names = v1("systemd") or (
        cgroup_root / "systemd" if (cgroup_root / "systemd").is_dir() else None
    )
    cpuacct = v1("cpuacct")
    if names is None and cpuacct is None:
        raise Unavailable(f"no cgroup hierarchy under {cgroup_root}")
    return Layout(1, names or cpuacct, v1("memory"), v1("blkio"), v1("pids"), cpuacct)  # type: ignore[arg-type]


# --- readings -----------------------------------------------------------------------------


@dataclass(slots=True)
class GroupReading:
    path: str
    cpu_usec: int | None
    memory_bytes: int | None
    memory_limit: int | None
    io: tuple[int, int] | None
    tasks: int | None
    pressure: dict[str, tuple[float, int]]  # resource -> (avg10, total usec)
    at: float


@dataclass(slots=True)
class GroupRates:
    cpu_percent: float | None
    read_bytes_per_second: float | None
    write_bytes_per_second: float | None


@dataclass(slots=True)
class GroupMinute:
    start: datetime
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)


def _read(path: Path) -> str | None:
    try:
        return read_small(str(path), 65536).decode("ascii", "replace")
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None


class GroupReader:
    """Reads one group's figures from the layout's files."""

    def __init__(self, layout: Layout, clock: Clock) -> None:
        self.layout = layout
        self.clock = clock

    def populated_groups(self) -> list[str]:
        """Every group (path relative to the root, the root left out) that has processes
        in it or below it."""
        found: list[str] = []
        root = self.layout.names
        v2 = self.layout.version == 2

        def walk(directory: Path, relative: str) -> bool:
            """Whether `directory` has processes (v1: in it or below)."""
            try:
                children = [e for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
            except OSError:
                return False
            if v2 and relative:
                events = _read(directory / "cgroup.events") or ""
                if "populated 1" not in events:
                    return False
                found.append(relative)
                for child in children:
                    walk(Path(child.path), f"{relative}/{child.name}" if relative else child.name)
                return True
            populated = False
            if relative and not v2:
                populated = bool((_read(directory / "cgroup.procs") or "").strip())
            for child in children:
                name = f"{relative}/{child.name}" if relative else child.name
                populated |= walk(Path(child.path), name)
            if populated and relative and not v2:
                found.append(relative)
            return populated

        walk(root, "")
        return found

    def read(self, path: str, *, cpu_only: bool = False) -> GroupReading:
        layout = self.layout
        group = layout.names / path
        if layout.cpuacct is not None:
            usage = _int(_read(layout.cpuacct / path / "cpuacct.usage"))
            cpu = None if usage is None else usage // 1000
        else:
            cpu = parse_flat_keyed(_read(group / "cpu.stat") or "").get("usage_usec")
        if cpu_only:
            return GroupReading(path, cpu, None, None, None, None, {}, self.clock())
        if layout.memory is None:
            memory = _int(_read(group / "memory.current"))
            limit_text = _read(group / "memory.max")
            io_text = _read(group / "io.stat")
            io = parse_io_stat(io_text) if io_text is not None else None
            tasks = _int(_read(group / "pids.current"))
        else:
            memory = _int(_read(layout.memory / path / "memory.usage_in_bytes"))
            limit_text = _read(layout.memory / path / "memory.limit_in_bytes")
            io_text = None
            if layout.blkio is not None:
                io_text = _read(layout.blkio / path / "blkio.throttle.io_service_bytes_recursive")
                if io_text is None:
                    io_text = _read(layout.blkio / path / "blkio.throttle.io_service_bytes")
            io = parse_blkio_bytes(io_text) if io_text is not None else None
            tasks = _int(_read(layout.pids / path / "pids.current")) if layout.pids else None
        limit = parse_memory_max(limit_text) if limit_text is not None else None
        pressure = {}
        if layout.version == 2:
            for resource in ("cpu", "memory", "io"):
                text = _read(group / f"{resource}.pressure")
                parsed = parse_pressure_some(text) if text else None
                if parsed is not None:
                    pressure[resource] = parsed
        return GroupReading(path, cpu, memory, limit, io, tasks, pressure, self.clock())


# --- the collector -------------------------------------------------------------------------


class CgroupsCollector:
    """See the module doc."""

    name = "cgroups"
    blocking = False  # cgroupfs, like sysfs, is answered from kernel memory

    def __init__(
        self,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        *,
        max_groups: int = 200,
        scan_seconds: float = SCAN_SECONDS,
        clock: Clock = time.monotonic,
        wall_clock: WallClock = lambda: datetime.now(UTC),
    ) -> None:
        self.cgroup_root = cgroup_root
        self.max_groups = max_groups
        self.scan_seconds = scan_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self._layout: Layout | None = None
        self._reader: GroupReader | None = None
        self._last: dict[str, GroupReading] = {}
        self._rates: dict[str, GroupRates] = {}
        self._windows: dict[str, float] = {}
        self._shown: list[str] = []
        self._live: list[str] = []
        self._left_out = 0
        self._families: list[Metric] = []
        self._scanned_mono = -float("inf")
        self._minute: GroupMinute | None = None

    def collect(self) -> CgroupsSample:
        if self._reader is None:
            self._layout = find_layout(self.cgroup_root)
            self._reader = GroupReader(self._layout, self.clock)
        now, wall = self.clock(), self.wall_clock()
        if now - self._scanned_mono >= self.scan_seconds:
            readings = self._scan(now)
        else:
            readings = [self._reader.read(path, cpu_only=True) for path in self._live]
            self._update(readings, keep_other_figures=True)
            self._shown.sort(key=self._cpu, reverse=True)
        finished = self._account(readings, wall)
        assert self._layout is not None
        return CgroupsSample(
            self._layout.version,
            [self._entry(path) for path in self._shown],
            self._left_out,
            finished,
            self._families,
        )

    def _scan(self, now: float) -> list[GroupReading]:
        assert self._reader is not None
        paths = self._reader.populated_groups()
        readings = [self._reader.read(path) for path in paths]
        for gone in set(self._last) - set(paths):
            for table in (self._last, self._rates, self._windows):
                table.pop(gone, None)
        self._update(readings, keep_other_figures=False)
        self._scanned_mono = now

        def memory(path: str) -> float:
            return float(self._last[path].memory_bytes or 0)

        ranked = union_top(list(self._last), [self._cpu, memory], self.max_groups)
        rest = [p for p in self._last if p not in set(ranked)]
        shown = (ranked + sorted(rest, key=memory, reverse=True))[: self.max_groups]
        self._shown = sorted(shown, key=self._cpu, reverse=True)
        self._left_out = len(self._last) - len(self._shown)
        self._live = [p for p in self._shown[:LIVE_GROUPS] if self._cpu(p) > 0]
        self._families = build_families(
            [self._last[p] for p in self._shown],
            [self._entry(p) for p in self._shown],
            self._left_out,
        )
        return readings

    def _update(self, readings: list[GroupReading], *, keep_other_figures: bool) -> None:
        for reading in readings:
            before = self._last.get(reading.path)
            if keep_other_figures and before is not None:
                # A CPU-only reading: the rest stays as the last scan read it.
                reading = GroupReading(
                    reading.path, reading.cpu_usec, before.memory_bytes, before.memory_limit,
                    before.io, before.tasks, before.pressure, reading.at,
                )  # fmt: skip
            self._rates[reading.path] = self._rates_between(before, reading)
            if before is not None:
                self._windows[reading.path] = reading.at - before.at
            self._last[reading.path] = reading

    @staticmethod
    def _rates_between(before: GroupReading | None, now: GroupReading) -> GroupRates:
        if before is None or now.at <= before.at:
            return GroupRates(None, None, None)
        elapsed = now.at - before.at
        cpu = None
        if now.cpu_usec is not None and before.cpu_usec is not None:
            cpu = max(0, now.cpu_usec - before.cpu_usec) / 1e6 / elapsed * 100.0
        read = write = None
        if now.io is not None and before.io is not None and now.io is not before.io:
            read = max(0, now.io[0] - before.io[0]) / elapsed
            write = max(0, now.io[1] - before.io[1]) / elapsed
        return GroupRates(cpu, read, write)

    def _cpu(self, path: str) -> float:
        rates = self._rates.get(path)
        return (rates.cpu_percent or 0.0) if rates else 0.0

    def _entry(self, path: str) -> CgroupEntry:
        reading, rates = self._last[path], self._rates[path]
        kind, name = classify(path)
        pressure: CgroupPressure | None = None
        if reading.pressure:
            pressure = {
                "cpu": reading.pressure["cpu"][0] if "cpu" in reading.pressure else None,
                "memory": reading.pressure["memory"][0] if "memory" in reading.pressure else None,
                "io": reading.pressure["io"][0] if "io" in reading.pressure else None,
            }
        return {
            "path": path,
            "kind": kind,
            "name": name,
            "cpu_percent": _round(rates.cpu_percent),
            "memory_bytes": reading.memory_bytes,
            "memory_limit_bytes": reading.memory_limit,
            "read_bytes_per_second": _round(rates.read_bytes_per_second),
            "write_bytes_per_second": _round(rates.write_bytes_per_second),
            "tasks": reading.tasks,
            "pressure": pressure,
        }

    def _account(self, readings: list[GroupReading], wall: datetime) -> CgroupMinute | None:
        start = wall.replace(second=0, microsecond=0)
        finished = None
        if self._minute is not None and self._minute.start != start:
            finished = self._finish(self._minute)
            self._minute = None
        if self._minute is None:
            self._minute = GroupMinute(start)
        for reading in readings:
            rates, window = self._rates.get(reading.path), self._windows.get(reading.path)
            if rates is not None and rates.cpu_percent is not None and window is not None:
                cpu = self._minute.cpu_seconds
                cpu[reading.path] = cpu.get(reading.path, 0.0) + rates.cpu_percent / 100 * window
            if reading.memory_bytes is not None:
                peak = self._minute.memory
                peak[reading.path] = max(peak.get(reading.path, 0), reading.memory_bytes)
        return finished

    def _finish(self, minute: GroupMinute) -> CgroupMinute:
        paths = set(minute.cpu_seconds) | set(minute.memory)
        kept = heapq.nlargest(
            self.max_groups,
            paths,
            key=lambda p: (minute.cpu_seconds.get(p, 0.0), minute.memory.get(p, 0)),
        )
        groups: list[CgroupMinuteEntry] = []
        for path in kept:
            kind, name = classify(path)
            groups.append(
                {
                    "path": path,
                    "kind": kind,
                    "name": name,
                    "cpu_seconds": round(minute.cpu_seconds.get(path, 0.0), 3),
                    "memory_bytes": minute.memory.get(path),
                }
            )
        return {"start": minute.start.isoformat(), "groups": groups}


class CgroupsSample:
    def __init__(
        self,
        version: int,
        groups: list[CgroupEntry],
        left_out: int,
        minute: CgroupMinute | None,
        families: list[Metric],
    ) -> None:
        self.version = version
        self.groups = groups
        self.left_out = left_out
        self.minute = minute
        self.families = families

    def to_dict(self) -> CgroupsData:
        return {
            "version": 2 if self.version == 2 else 1,
            "groups": self.groups,
            "left_out": self.left_out,
            "minute": self.minute,
        }

    def metrics(self) -> Iterator[Metric]:
        return iter(self.families)


def build_families(
    readings: list[GroupReading], groups: list[CgroupEntry], left_out: int
) -> list[Metric]:
    """The /metrics families of the groups shown, built at each scan (stable between)."""
    return [stable(family) for family in _families(readings, groups, left_out)]


def _families(
    readings: list[GroupReading], groups: list[CgroupEntry], left_out: int
) -> Iterator[Metric]:
    labels = ("cgroup", "name", "kind")
    rows = [(r, (e["path"], e["name"], e["kind"])) for r, e in zip(readings, groups, strict=True)]
    yield labeled_counter(
        "perfpulse_cgroup_cpu_seconds_total",
        "CPU seconds used by the group's processes (and its children's).",
        labels,
        ((names, r.cpu_usec / 1e6) for r, names in rows if r.cpu_usec is not None),
    )
    yield labeled_gauge(
        "perfpulse_cgroup_memory_bytes",
        "Memory charged to the group.",
        labels,
        ((names, r.memory_bytes) for r, names in rows if r.memory_bytes is not None),
    )
    yield labeled_gauge(
        "perfpulse_cgroup_memory_limit_bytes",
        "The group's memory limit (only groups that have one).",
        labels,
        ((names, r.memory_limit) for r, names in rows if r.memory_limit is not None),
    )
    yield labeled_counter(
        "perfpulse_cgroup_read_bytes_total",
        "Bytes the group read from block devices.",
        labels,
        ((names, r.io[0]) for r, names in rows if r.io is not None),
    )
    yield labeled_counter(
        "perfpulse_cgroup_written_bytes_total",
        "Bytes the group wrote to block devices.",
        labels,
        ((names, r.io[1]) for r, names in rows if r.io is not None),
    )
    yield labeled_gauge(
        "perfpulse_cgroup_tasks",
        "Tasks (threads) in the group.",
        labels,
        ((names, r.tasks) for r, names in rows if r.tasks is not None),
    )
    for resource in ("cpu", "memory", "io"):
        yield labeled_counter(
            f"perfpulse_cgroup_pressure_{resource}_waiting_seconds_total",
            f"Time some of the group's tasks were stalled on {resource} (PSI some).",
            labels,
            ((names, r.pressure[resource][1] / 1e6) for r, names in rows if resource in r.pressure),
        )
    yield gauge(
        "perfpulse_cgroups_left_out",
        "Groups with processes left out of the perfpulse_cgroup_* series (past the cap).",
        left_out,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
