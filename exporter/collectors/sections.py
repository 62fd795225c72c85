"""The declared type of each snapshot section: the contract the live stream, the stored
rows (`storage/fields.py`), the panel spec and `perfpulse watch` all read.

A collector's `to_dict()` returns its section's type; the snapshot adds `"available":
true` in front, or replaces the whole section with `Unavailable` when the collector has
nothing. Maps keyed by what the machine has (CPUs' modes, interfaces, devices, perf
events) are `dict[str, ...]`. tests/test_sections.py walks every path the spec, the stored
fields and `watch` use through these types and through a real snapshot of this machine.
"""

from __future__ import annotations

from typing import Literal, TypedDict

Rate = float | None  # per second; None on the first reading or after a counter reset


class Unavailable(TypedDict):
    available: Literal[False]
    error: str | None


# --- cpu ---------------------------------------------------------------------------


class PerCpu(TypedDict):
    cpu: str
    usage_percent: float | None


LoadAverage = TypedDict("LoadAverage", {"1m": float, "5m": float, "15m": float})


class PressureLine(TypedDict):
    """One line of a /proc/pressure file: stall shares in percent, and the total."""

    avg10: float
    avg60: float
    avg300: float
    total_seconds: float


class PressureData(TypedDict):
    some: PressureLine  # some non-idle tasks were stalled
    full: PressureLine | None  # all of them (absent for cpu before Linux 5.13)


class CpuData(TypedDict):
    count: int
    usage_percent: float | None
    modes_percent: dict[str, float | None]
    per_cpu: list[PerCpu]
    times_seconds: dict[str, float]
    load_average: LoadAverage | None
    frequency_mhz: float | None
    context_switches_total: int
    interrupts_total: int
    context_switches_per_second: Rate
    interrupts_per_second: Rate
    procs_running: int
    procs_blocked: int
    pressure: PressureData | None  # /proc/pressure; None with the reason in pressure_error
    pressure_error: str | None


# --- memory ------------------------------------------------------------------------


class MemoryData(TypedDict):
    total_bytes: int
    available_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float | None
    buffers_bytes: int
    cached_bytes: int
    shared_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    swap_percent: float
    swap_in_bytes_total: int
    swap_out_bytes_total: int
    swap_in_bytes_per_second: Rate
    swap_out_bytes_per_second: Rate
    pressure: PressureData | None  # /proc/pressure; None with the reason in pressure_error
    pressure_error: str | None


# --- network -----------------------------------------------------------------------


class InterfaceData(TypedDict):
    receive_bytes_total: int
    receive_packets_total: int
    receive_errors_total: int
    receive_drops_total: int
    transmit_bytes_total: int
    transmit_packets_total: int
    transmit_errors_total: int
    transmit_drops_total: int
    receive_bytes_per_second: Rate
    receive_packets_per_second: Rate
    receive_errors_per_second: Rate
    receive_drops_per_second: Rate
    transmit_bytes_per_second: Rate
    transmit_packets_per_second: Rate
    transmit_errors_per_second: Rate
    transmit_drops_per_second: Rate


class InterfaceEntry(InterfaceData, total=False):
    kind: str | None  # loopback | virtual | physical; None where sysfs does not say
    in_total: bool  # counted in the section's total (loopback is not)


class NetworkData(TypedDict):
    total: InterfaceData  # every interface but loopback
    interfaces: dict[str, InterfaceEntry]


# --- disk and filesystem -----------------------------------------------------------


class DeviceData(TypedDict):
    reads_completed_total: float
    writes_completed_total: float
    read_bytes_total: float
    written_bytes_total: float
    read_time_seconds_total: float
    write_time_seconds_total: float
    io_time_seconds_total: float
    reads_completed_per_second: Rate
    writes_completed_per_second: Rate
    read_bytes_per_second: Rate
    written_bytes_per_second: Rate
    busy_percent: float | None
    read_latency_seconds: float | None  # average per read completed in the interval
    write_latency_seconds: float | None
    io_in_progress: float


class FilesystemUsageData(TypedDict):
    mountpoint: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    available_bytes: int
    percent: float | None


class FilesystemData(TypedDict):
    """What the `filesystem` collector adds to the disk section."""

    filesystems: list[FilesystemUsageData]


class DiskData(TypedDict):
    total: DeviceData  # devices stacked on others (dm-*, md*) left out
    devices: dict[str, DeviceData]
    pressure: PressureData | None  # /proc/pressure/io
    pressure_error: str | None


class DiskSection(DiskData, total=False):
    """The disk section as a snapshot carries it: its own figures plus the filesystem
    collector's (`filesystem_error` instead when that one has nothing)."""

    filesystems: list[FilesystemUsageData]
    filesystem_error: str | None


# --- perf_events -------------------------------------------------------------------


class PerfEventData(TypedDict):
    available: bool
    reason: str | None
    per_second: float | None  # base units (a time event, task-clock, in seconds per second)
    total: float | None
    running_ratio: float | None  # below 1: multiplexed


class PerfEventsData(TypedDict):
    warming_up: bool  # perf has not reported its first interval yet: no values
    interval_seconds: float | None
    ipc: float | None
    cache_miss_ratio: float | None
    branch_miss_ratio: float | None
    frontend_stall_ratio: float | None  # stalled-cycles-frontend / cycles
    backend_stall_ratio: float | None  # stalled-cycles-backend / cycles
    rates: dict[str, float | None]  # per counted event
    events: dict[str, PerfEventData]


# --- memory_bandwidth --------------------------------------------------------------


class VmstatRates(TypedDict, total=False):
    """Paging and faults from /proc/vmstat (keys the kernel has); not DRAM bandwidth."""

    source: Literal["vmstat"]
    pgpgin_bytes_per_second: Rate
    pgpgout_bytes_per_second: Rate
    pswpin_pages_per_second: Rate
    pswpout_pages_per_second: Rate
    page_faults_per_second: Rate
    major_page_faults_per_second: Rate
    numa_hit_per_second: Rate
    numa_miss_per_second: Rate


BandwidthSource = Literal["uncore_imc", "resctrl", "vmstat"]


class MemoryBandwidthData(TypedDict):
    source: BandwidthSource
    read_bytes_per_second: Rate
    write_bytes_per_second: Rate
    total_bytes_per_second: Rate
    vmstat: VmstatRates


# --- processes ------------------------------------------------------------------------


class ProcessEntry(TypedDict):
    """One process on top, as of this tick (tracked ones) or the last full scan."""

    pid: int
    name: str  # comm
    command: str  # the command line, cut at 120 characters; [name] for a kernel thread
    user: str
    state: str  # R running, S sleeping, D waiting on I/O, Z zombie, ...
    cpu_percent: float | None  # 100 is one core
    rss_bytes: int
    read_bytes_per_second: float | None  # None: its /proc/PID/io is not readable
    write_bytes_per_second: float | None
    cgroup: str  # relative to the hierarchy's root; "" for the root


class ProcessMinuteEntry(TypedDict):
    pid: int
    name: str
    command: str
    user: str
    cgroup: str
    cpu_seconds: float
    rss_bytes: int  # the most it held in the minute
    read_bytes: int
    write_bytes: int


class ProcessMinute(TypedDict):
    """The top consumers of one finished minute (what history stores)."""

    start: str  # ISO-8601, the minute's first second
    top: list[ProcessMinuteEntry]


class ProcessesData(TypedDict):
    count: int  # processes in the last full scan
    running: int  # of them in state R
    scanned_at: str | None  # when the last full scan was taken
    io_unreadable: int  # processes whose /proc/PID/io needs privileges perfpulse lacks
    hidepid: str | None  # /proc's hidepid option: other users' processes are not visible
    top: list[ProcessEntry]  # the union of the top N by CPU, memory and disk I/O
    minute: ProcessMinute | None  # in the first snapshot after a minute ends


# --- cgroups ---------------------------------------------------------------------------


CgroupKind = Literal["service", "container", "pod", "slice", "scope", "other"]


class CgroupPressure(TypedDict):
    cpu: float | None  # PSI `some` avg10, percent
    memory: float | None
    io: float | None


class CgroupEntry(TypedDict):
    path: str  # relative to the hierarchy's root
    kind: CgroupKind
    name: str  # the unit's name, or a container id cut to 12 characters
    cpu_percent: float | None  # 100 is one core
    memory_bytes: int | None
    memory_limit_bytes: int | None  # None: no limit
    read_bytes_per_second: float | None
    write_bytes_per_second: float | None
    tasks: int | None
    pressure: CgroupPressure | None


class CgroupMinuteEntry(TypedDict):
    path: str
    kind: CgroupKind
    name: str
    cpu_seconds: float
    memory_bytes: int | None  # the most it held in the minute


class CgroupMinute(TypedDict):
    start: str
    groups: list[CgroupMinuteEntry]


class CgroupsData(TypedDict):
    version: Literal[1, 2]  # 2 for the unified hierarchy (also on a hybrid machine)
    groups: list[CgroupEntry]  # largest first, at most PERFPULSE_CGROUPS_MAX
    left_out: int  # groups with processes past that bound
    minute: CgroupMinute | None  # in the first snapshot after a minute ends


# Each section name and its declared type, in snapshot order.
SECTION_TYPES: dict[str, type] = {
    "cpu": CpuData,
    "memory": MemoryData,
    "network": NetworkData,
    "disk": DiskSection,
    "perf_events": PerfEventsData,
    "memory_bandwidth": MemoryBandwidthData,
    "processes": ProcessesData,
    "cgroups": CgroupsData,
}
