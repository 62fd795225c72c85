"""Processes: who is busy. Each process's CPU, resident memory and disk I/O, read straight
from /proc/PID/stat and /proc/PID/io (psutil's per-process path costs several times more).

Reading every process every tick would cost more than everything else perfpulse does, so
the whole table is read now and then, and the processes that matter every tick:

- a **full scan** (every process's stat and io) every `scan_seconds` (30 by default), and
  at once when the machine does more than the tracked processes account for: busy time
  (/proc/stat) a tenth of a core beyond theirs, memory available (/proc/meminfo) down by
  more than 64 MiB (2 % of memory where that is less) since the scan, or pages read and dirtied
  (/proc/vmstat) at more than 1 MiB/s beyond their I/O: something new got busy;
- every other tick, a **pass over the tracked processes**: those the last scan put on top.

A process's rates are over the time since its previous reading (a tick, or a scan's
window); one seen for the first time gets its average since it started. Processes are
known by (pid, start time), so a reused PID is a new process. A process that exits between
listing and reading, an unreadable /proc/PID/io (another user's process without root or
CAP_SYS_PTRACE) and a /proc mounted with hidepid are normal: counted in the section, never
an error of the collector.

Besides the live `top`, the collector keeps each minute's account (CPU seconds, peak
memory, bytes read and written per process) and hands the finished minute's top
consumers to the first snapshot of the next minute (`minute`): that is what history
stores. For /metrics it groups processes by name (process-exporter's namegroups), never
by PID: CPU seconds (monotonic: exited processes' last counts are kept), resident memory
and process count per name, at most `max_groups` names.
"""

from __future__ import annotations

import heapq
import os
import pwd
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Clock, TickReads, Unavailable, read_text
from exporter.collectors.families import gauge, labeled_counter, labeled_gauge, stable
from exporter.collectors.sections import (
    ProcessEntry,
    ProcessesData,
    ProcessMinute,
    ProcessMinuteEntry,
)

COMMAND_BYTES = 120  # of a command line, in the snapshot
SCAN_SECONDS = 30.0
# What the tracked processes do not explain, that triggers a scan: busy time, in cores;
# memory available lost since the scan (the smaller of the two); I/O, bytes a second.
UNEXPLAINED_CORES = 0.1
UNEXPLAINED_MEMORY = (64 << 20, 0.02)
UNEXPLAINED_IO = float(1 << 20)
SCAN_REASONS = ("scheduled", "cpu", "memory", "io")
ACTIVE_PERCENT = 2.0  # CPU share of one core from which a process on top is read every tick
# Below these a process is idle, not on top: CPU % of a core, resident bytes, I/O bytes/s.
RANK_FLOORS = (0.1, 0.0, 1024.0)
MAX_TABLE = 10_000  # processes a full table request returns at most
WallClock = Callable[[], datetime]
K = TypeVar("K")


# --- parsing --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """The fields of /proc/PID/stat perfpulse uses."""

    pid: int
    name: str  # comm: at most 15 bytes, may hold spaces and parentheses
    state: str
    ppid: int
    cpu_ticks: int  # utime + stime
    threads: int
    start_ticks: int  # since boot
    rss_pages: int
    kernel_thread: bool = False

    @property
    def group(self) -> str:
        """The name /metrics groups the process under: its own, but a kernel thread's
        without the CPU, queue or device it serves (`kworker/3:1-events` is `[kworker]`,
        as ps brackets kernel threads): one series for what is otherwise one per CPU."""
        if not self.kernel_thread:
            return self.name
        return "[" + self.name.split("/", 1)[0].split(":", 1)[0] + "]"


PF_KTHREAD = 0x00200000  # in the flags field of /proc/PID/stat


def parse_stat(text: str) -> ProcessStat:
    """Parse /proc/PID/stat. The name sits in parentheses and may contain both, so the
    fields are counted from the last closing one."""
    open_at, close_at = text.index("("), text.rindex(")")
    fields = text[close_at + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); flags is 9, utime 14, stime 15, threads 20,
    # start 22, rss 24.
    return ProcessStat(
        pid=int(text[:open_at]),
        name=text[open_at + 1 : close_at],
        state=fields[0],
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        threads=int(fields[17]),
        start_ticks=int(fields[19]),
        rss_pages=int(fields[21]),
        kernel_thread=bool(int(fields[6]) & PF_KTHREAD),
    )


def parse_io(text: str) -> tuple[int, int]:
    """(read_bytes, write_bytes) from /proc/PID/io: what reached the block layer, not the
    page cache (rchar/wchar count every read and write system call)."""
    read = write = 0
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == "read_bytes":
            read = int(value)
        elif key == "write_bytes":
            write = int(value)
    return read, write


def parse_cmdline(raw: bytes, name: str, limit: int = COMMAND_BYTES) -> str:
    """The command line, arguments joined by spaces and cut at `limit` characters; a
    kernel thread (empty cmdline) is shown as `[name]`, as ps does."""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace").strip()
    if not text:
        return f"[{name}]"
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def parse_cgroup(text: str) -> str:
    """The process's group from /proc/PID/cgroup, relative to the hierarchy's root: the
    unified hierarchy's (`0::/...`), else the named systemd hierarchy's, else the first."""
    unified = systemd = first = None
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            unified = path
        elif controllers == "name=systemd":
            systemd = path
        elif first is None:
            first = path
    chosen = unified if unified not in (None, "/") else systemd or unified or first or "/"
    return chosen.strip("/")


def parse_busy_ticks(text: str) -> int:
    """user + nice + system of the aggregate line of /proc/stat: the time processes can
    account for (irq, softirq and steal are nobody's)."""
    fields = text[: text.index("\n")].split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])


def parse_mem_available(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) of /proc/meminfo, in bytes."""
    return _field(text, "MemTotal:") * 1024, _field(text, "MemAvailable:") * 1024


def parse_paged_bytes(text: str, page_size: int) -> int:
    """Bytes read from block devices (pgpgin, KiB) and pages dirtied (nr_dirtied) since
    boot, from /proc/vmstat: what processes' read_bytes and write_bytes count, as it
    happens (pgpgout waits for writeback)."""
    return _field(text, "pgpgin ") * 1024 + _field(text, "nr_dirtied ") * page_size


def _field(text: str, key: str) -> int:
    """The number after `key` at the start of a line of a kernel table: a search, where
    splitting a 200-line file every tick costs more."""
    if text.startswith(key):
        at = 0
    else:
        at = text.find("\n" + key)
        if at < 0:
            raise ValueError(f"no {key.strip()} in the table")
        at += 1
    end = text.find("\n", at)
    return int(text[at + len(key) : end if end >= 0 else None].split()[0])


def hidepid(mounts: str) -> str | None:
    """The hidepid option /proc is mounted with, if any ("2", "invisible", ...)."""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "proc" and parts[1] in ("/proc", "/host/proc"):
            for option in parts[3].split(","):
                if option.startswith("hidepid=") and option not in ("hidepid=0", "hidepid=off"):
                    return option.removeprefix("hidepid=")
    return None


# --- readings --------------------------------------------------------------------------


@dataclass(slots=True)
class Reading:
    """One process at one moment."""

    stat: ProcessStat
    io: tuple[int, int] | None  # None: /proc/PID/io not readable
    at: float  # the collector's clock
    quiet: bool = False  # no CPU and no I/O since the reading before

    @property
    def key(self) -> tuple[int, int]:
        return self.stat.pid, self.stat.start_ticks


@dataclass(slots=True)
class Rates:
    cpu_percent: float | None
    read_bytes_per_second: float | None
    write_bytes_per_second: float | None


@dataclass(slots=True)
class Described:
    """What is read only for processes that make the top list, kept per process."""

    command: str
    user: str
    cgroup: str


@dataclass(slots=True)
class MinuteAccount:
    """One process's share of the current minute."""

    name: str
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    read_bytes: int = 0
    write_bytes: int = 0


@dataclass(slots=True)
class Minute:
    start: datetime
    accounts: dict[tuple[int, int], MinuteAccount] = field(default_factory=dict)


def read_small(path: str, size: int = 4096) -> bytes:
    """One read of a small kernel file (a process's stat or io is a few hundred bytes):
    open, read, close, where `read_text` reads until an empty read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def parse_stat_bytes(raw: bytes) -> ProcessStat:
    return parse_stat(raw.decode("utf-8", "replace"))


def parse_io_bytes(raw: bytes) -> tuple[int, int]:
    """`parse_io` for the kernel's fixed layout (rchar, wchar, syscr, syscw, read_bytes,
    write_bytes, ...), checked by name; any other layout goes through `parse_io`."""
    fields = raw.split()
    if len(fields) >= 12 and fields[8] == b"read_bytes:" and fields[10] == b"write_bytes:":
        return int(fields[9]), int(fields[11])
    return parse_io(raw.decode("ascii", "replace"))


class ProcessTable:
    """Reads processes from a proc root: all of them, or some by PID."""

    def __init__(self, proc_root: Path, clock: Clock) -> None:
        self.proc_root = proc_root
        self.clock = clock
        self.vanished = 0  # processes that exited between listing and reading
        self.io_unreadable = 0

    def pids(self) -> list[int]:
        try:
            with os.scandir(self.proc_root) as entries:
                return [int(e.name) for e in entries if e.name.isdigit()]
        except FileNotFoundError:
            raise Unavailable(f"{self.proc_root} does not exist") from None

    def read(
        self, pids: Iterable[int], previous: dict[tuple[int, int], Reading] | None = None
    ) -> list[Reading]:
        """Readings of `pids`; the ones that exit meanwhile are counted, not raised. With
        `previous`, a process that used no CPU since then and did no I/O then keeps its
        I/O counters without a read (I/O takes system calls, and they take CPU)."""
        readings = []
        self.vanished = self.io_unreadable = 0
        root = str(self.proc_root)
        clock = self.clock
        for pid in pids:
            base = f"{root}/{pid}"
            try:
                stat = parse_stat_bytes(read_small(base + "/stat"))
            except (OSError, ValueError, IndexError):
                self.vanished += 1  # exited (ENOENT, ESRCH) between listing and reading
                continue
            before = previous.get((pid, stat.start_ticks)) if previous else None
            if before is not None and before.stat.cpu_ticks == stat.cpu_ticks and before.quiet:
                readings.append(Reading(stat, before.io, clock(), quiet=True))
                continue
            io: tuple[int, int] | None
            try:
                io = parse_io_bytes(read_small(base + "/io"))
            except PermissionError:  # checked at open or at read (ptrace access)
                io = None
                self.io_unreadable += 1
            except (OSError, ValueError):
                io = None
            quiet = before is not None and before.io == io
            readings.append(Reading(stat, io, clock(), quiet=quiet))
        return readings


class HeldFiles:
    """Open /proc/PID/stat and io files of the processes read every tick: each reading is
    one pread, where opening, reading and closing are three system calls. A descriptor
    belongs to its process: once it exits, the read fails (a reused PID is another
    process), and the files are closed."""

    def __init__(self, proc_root: Path, clock: Clock) -> None:
        self.proc_root = proc_root
        self.clock = clock
        self._files: dict[tuple[int, int], tuple[int, int | None]] = {}
        weakref.finalize(self, HeldFiles._close_all, self._files)

    def hold(self, keys: Iterable[tuple[int, int]]) -> None:
        """Keep exactly these processes' files open."""
        wanted = set(keys)
        for key in list(self._files):
            if key not in wanted:
                self._close(key)
        for key in wanted - set(self._files):
            base = f"{self.proc_root}/{key[0]}"
            try:
                stat_fd = os.open(base + "/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                io_fd: int | None = os.open(base + "/io", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                io_fd = None
            self._files[key] = (stat_fd, io_fd)

    def read(self) -> tuple[list[Reading], list[tuple[int, int]]]:
        """Readings of the held processes, and the ones that are gone."""
        readings, gone = [], []
        for key, (stat_fd, io_fd) in list(self._files.items()):
            try:
                stat = parse_stat_bytes(os.pread(stat_fd, 4096, 0))
            except (OSError, ValueError, IndexError):
                gone.append(key)
                self._close(key)
                continue
            if stat.start_ticks != key[1]:
                gone.append(key)
                self._close(key)
                continue
            io: tuple[int, int] | None = None
            if io_fd is not None:
                try:
                    io = parse_io_bytes(os.pread(io_fd, 4096, 0))
                except (OSError, ValueError):
                    io = None
            readings.append(Reading(stat, io, self.clock()))
        return readings, gone

    def _close(self, key: tuple[int, int]) -> None:
        for fd in self._files.pop(key, ()):
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _close_all(files: dict[tuple[int, int], tuple[int, int | None]]) -> None:
        for stat_fd, io_fd in files.values():
            os.close(stat_fd)
            if io_fd is not None:
                os.close(io_fd)
        files.clear()


# --- the collector ---------------------------------------------------------------------


class ProcessesCollector:
    """See the module doc. The top `top` processes by each of CPU, memory and I/O make the
    live list; `scan_seconds` spaces full scans."""

    name = "processes"
    blocking = False  # procfs only

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        top: int = 10,
        scan_seconds: float = SCAN_SECONDS,
        max_groups: int = 100,
        clock: Clock = time.monotonic,
        wall_clock: WallClock = lambda: datetime.now(UTC),
        ticks_per_second: float | None = None,
        page_size: int | None = None,
        tick_reads: TickReads | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.top_n = top
        self.scan_seconds = scan_seconds
        self.max_groups = max_groups
        self.clock = clock
        self.wall_clock = wall_clock
        self.hz = ticks_per_second or float(os.sysconf("SC_CLK_TCK"))
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        self.table = ProcessTable(proc_root, clock)
        self.held = HeldFiles(proc_root, clock)
        self._tick_reads = tick_reads
        # The same strings the cpu, memory and memory_bandwidth collectors read.
        self._stat_path = str(proc_root / "stat")
        self._meminfo_path = str(proc_root / "meminfo")
        self._vmstat_path = str(proc_root / "vmstat")
        Key = tuple[int, int]
        self._last: dict[Key, Reading] = {}  # every process's latest reading
        self._rates: dict[Key, Rates] = {}
        self._windows: dict[Key, float | None] = {}  # seconds the rates cover
        self._top: list[Key] = []  # the last scan's union of tops
        self._tracked: list[Key] = []  # of them, the ones doing something: read every tick
        self._entries: dict[Key, ProcessEntry] = {}
        self._live: list[ProcessEntry] | None = None  # the live top, until something changes
        self._described: dict[Key, Described] = {}
        self._users: dict[int, str] = {}
        self._scanned_at: datetime | None = None
        self._scanned_mono = -float("inf")
        self._scan_cost = 0.0
        self._count = self._running = self._vanished = self._io_unreadable = 0
        self._groups: tuple[list[tuple[str, float, int, int]], int] = ([], 0)
        self._families: list[Metric] = []
        self._busy: tuple[float, int] | None = None  # (when, /proc/stat busy ticks)
        self._paged: tuple[float, int] | None = None  # (when, /proc/vmstat bytes)
        self._available_at_scan: int | None = None  # MemAvailable at the last scan
        self.scan_reasons: Counter[str] = Counter()  # full scans, by what caused them
        self._exited_cpu: Counter[str] = Counter()  # per name: CPU ticks of exited processes
        self._minute: Minute | None = None
        self._hidepid: str | None = None
        self._hidepid_read = False
        self.full_scans = 0
        self.scans_triggered = 0

    def collect(self) -> ProcessesSample:
        now, wall = self.clock(), self.wall_clock()
        busy = self._busy_ticks()
        paged = self._paged_bytes()
        available = self._mem_available()
        if now - self._scanned_mono >= self.scan_seconds:
            self.scan_reasons["scheduled"] += 1
            readings = self._full_scan(now, wall)
        else:
            before = {key: self._last[key] for key in self._tracked if key in self._last}
            readings = self._refresh(now)
            reason = self._unexplained(busy, paged, available, now, before, readings)
            if reason is not None and self._may_scan(now):
                self.scans_triggered += 1
                self.scan_reasons[reason] += 1
                readings = self._full_scan(now, wall)
        if self._scanned_mono == now and available is not None:
            self._available_at_scan = available[1]
        self._busy = (now, busy) if busy is not None else None
        self._paged = (now, paged) if paged is not None else None
        finished = self._account(readings, wall)
        return ProcessesSample(self, self._live_top(), finished)

    # --- reading --------------------------------------------------------------------------

    def _read(self, path: str) -> str:
        return self._tick_reads.read(path) if self._tick_reads else read_text(path)

    def _busy_ticks(self) -> int | None:
        try:
            return parse_busy_ticks(self._read(self._stat_path))
        except (Unavailable, ValueError, IndexError):
            return None

    def _paged_bytes(self) -> int | None:
        try:
            return parse_paged_bytes(self._read(self._vmstat_path), self.page_size)
        except (Unavailable, ValueError):
            return None

    def _mem_available(self) -> tuple[int, int] | None:
        try:
            return parse_mem_available(self._read(self._meminfo_path))
        except (Unavailable, ValueError, KeyError, IndexError):
            return None

    def _may_scan(self, now: float) -> bool:
        """An early scan at most once a second, and never taking more than a tenth of the
        time (thousands of processes make a scan cost tens of milliseconds)."""
        return now - self._scanned_mono >= max(1.0, 10 * self._scan_cost)

    def _full_scan(self, now: float, wall: datetime) -> list[Reading]:
        started = self.clock()
        readings = self.table.read(self.table.pids(), self._last)
        seen = {reading.key for reading in readings}
        for key, gone in list(self._last.items()):
            if key not in seen:  # exited: its CPU stays in its name's counter
                self._exited_cpu[gone.stat.group] += gone.stat.cpu_ticks
                self._forget(key)
        self._bound_exited()
        self._update(readings, now, first_scan=self._scanned_at is None)
        self._scanned_at, self._scanned_mono = wall, now
        self._count = len(readings)
        self._running = sum(1 for r in readings if r.stat.state == "R")
        self._vanished, self._io_unreadable = self.table.vanished, self.table.io_unreadable
        self.full_scans += 1
        self._top = self._ranked(list(self._last))
        self._live = None
        for key in self._top:  # command line and group can change (a service starting)
            self._described.pop(key, None)
        self._tracked = [key for key in self._top if self._active(key)]
        self.held.hold(self._tracked)
        self._entries = {}
        self._groups = self._group_rows()
        self._families = self._build_families()
        if not self._hidepid_read:
            self._hidepid_read = True
            try:
                self._hidepid = hidepid(read_text(str(self.proc_root / "self/mounts")))
            except Unavailable:
                self._hidepid = None
        self._scan_cost = self.clock() - started
        return readings

    def _forget(self, key: tuple[int, int]) -> None:
        for table in (self._last, self._rates, self._windows, self._described, self._entries):
            table.pop(key, None)

    def _active(self, key: tuple[int, int]) -> bool:
        """Doing something now: CPU, or I/O over a window perfpulse measured (I/O since a
        process started says nothing about now)."""
        rates = self._rates[key]
        if (rates.cpu_percent or 0.0) >= ACTIVE_PERCENT:
            return True
        measured = self._windows.get(key) is not None and self._scanned_at is not None
        return measured and bool(
            (rates.read_bytes_per_second or 0.0) > 0 or (rates.write_bytes_per_second or 0.0) > 0
        )

    def _refresh(self, now: float) -> list[Reading]:
        """Read the tracked processes again; the ones that exited leave the top."""
        if not self._tracked:
            return []
        readings, gone = self.held.read()
        self._live = None
        for key in gone:
            if key in self._last:
                self._exited_cpu[self._last[key].stat.group] += self._last[key].stat.cpu_ticks
                self._forget(key)
        gone_keys = set(gone)
        self._tracked = [key for key in self._tracked if key not in gone_keys]
        self._top = [key for key in self._top if key in self._last]
        self._update(readings, now)
        for reading in readings:
            self._entries.pop(reading.key, None)
        return readings

    def _update(self, readings: list[Reading], now: float, *, first_scan: bool = False) -> None:
        uptime = self._uptime() if any(r.key not in self._last for r in readings) else None
        for reading in readings:
            key = reading.key
            before = self._last.get(key)
            window: float | None
            if before is None:  # first seen: its average since it started
                age = None if uptime is None else uptime - reading.stat.start_ticks / self.hz
                elapsed = age if age is not None and age > 0 else None
                base_cpu, base_io = 0, (0, 0)
                # What it did before perfpulse looked belongs to no minute perfpulse saw:
                # at the first scan nothing; later, at most since the previous scan.
                window = (
                    None
                    if first_scan or elapsed is None
                    else min(elapsed, now - self._scanned_mono)
                )
            else:
                elapsed = window = reading.at - before.at
                base_cpu, base_io = before.stat.cpu_ticks, before.io or (0, 0)
            self._rates[key] = self._rates_between(reading, base_cpu, base_io, elapsed, before)
            self._windows[key] = window
            self._last[key] = reading

    def _rates_between(
        self,
        reading: Reading,
        base_cpu: int,
        base_io: tuple[int, int],
        elapsed: float | None,
        before: Reading | None,
    ) -> Rates:
        if elapsed is None or elapsed <= 0:
            return Rates(None, None, None)
        cpu = max(0, reading.stat.cpu_ticks - base_cpu) / self.hz / elapsed * 100.0
        if reading.io is None or (before is not None and before.io is None):
            return Rates(cpu, None, None)
        read = max(0, reading.io[0] - base_io[0]) / elapsed
        write = max(0, reading.io[1] - base_io[1]) / elapsed
        return Rates(cpu, read, write)

    def _uptime(self) -> float | None:
        try:
            return float(read_text(str(self.proc_root / "uptime")).split()[0])
        except (Unavailable, ValueError, IndexError):
            return None

    def _unexplained(
        self,
        busy: int | None,
        paged: int | None,
        available: tuple[int, int] | None,
        now: float,
        before: dict[tuple[int, int], Reading],
        after: list[Reading],
    ) -> str | None:
        """What the machine did beyond what the tracked processes explain ("cpu", "memory",
        "io"), if anything."""
        pairs = [(before[r.key], r) for r in after if r.key in before]
        if busy is not None and self._busy is not None and now > self._busy[0]:
            explained = sum(b.stat.cpu_ticks - a.stat.cpu_ticks for a, b in pairs)
            cores = (busy - self._busy[1] - explained) / self.hz / (now - self._busy[0])
            if cores > UNEXPLAINED_CORES:
                return "cpu"
        if available is not None and self._available_at_scan is not None:
            lost = self._available_at_scan - available[1]
            if lost > min(UNEXPLAINED_MEMORY[0], UNEXPLAINED_MEMORY[1] * available[0]):
                return "memory"
        if paged is not None and self._paged is not None and now > self._paged[0]:
            explained = sum(_io_total(b.io) - _io_total(a.io) for a, b in pairs)
            rate = (paged - self._paged[1] - explained) / (now - self._paged[0])
            if rate > UNEXPLAINED_IO:
                return "io"
        return None

    # --- ranking ----------------------------------------------------------------------------

    def _cpu(self, key: tuple[int, int]) -> float:
        return self._rates[key].cpu_percent or 0.0

    def _memory(self, key: tuple[int, int]) -> float:
        return float(self._last[key].stat.rss_pages * self.page_size)

    def _io(self, key: tuple[int, int]) -> float:
        rates = self._rates[key]
        return (rates.read_bytes_per_second or 0.0) + (rates.write_bytes_per_second or 0.0)

    def _ranked(self, keys: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The union of the top N by CPU, by resident memory and by disk I/O."""
        return union_top(keys, [self._cpu, self._memory, self._io], self.top_n, RANK_FLOORS)

    def _live_top(self) -> list[ProcessEntry]:
        """The last scan's top, the tracked ones as of this tick, by CPU (the same list
        while nothing was read again)."""
        if self._live is not None:
            return self._live
        self._top.sort(key=self._cpu, reverse=True)
        entries = []
        for key in self._top:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = self._entry(key)
            entries.append(entry)
        self._live = entries
        return entries

    def _entry(self, key: tuple[int, int]) -> ProcessEntry:
        reading, rates = self._last[key], self._rates[key]
        described = self._describe(key, reading)
        return {
            "pid": reading.stat.pid,
            "name": reading.stat.name,
            "command": described.command,
            "user": described.user,
            "state": reading.stat.state,
            "cpu_percent": _round(rates.cpu_percent),
            "rss_bytes": reading.stat.rss_pages * self.page_size,
            "read_bytes_per_second": _round(rates.read_bytes_per_second),
            "write_bytes_per_second": _round(rates.write_bytes_per_second),
            "cgroup": described.cgroup,
        }

    def _describe(self, key: tuple[int, int], reading: Reading) -> Described:
        """Command line, user and group: read once per process (only for those shown)."""
        described = self._described.get(key)
        if described is None:
            base = self.proc_root / str(reading.stat.pid)
            try:
                command = parse_cmdline(read_small(str(base / "cmdline")), reading.stat.name)
            except OSError:
                command = f"[{reading.stat.name}]"
            try:
                cgroup = parse_cgroup(read_text(base / "cgroup"))
            except (Unavailable, OSError):
                cgroup = ""
            try:
                uid = os.stat(base).st_uid
            except OSError:
                uid = -1
            described = self._described[key] = Described(command, self._user(uid), cgroup)
        return described

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError):
                name = str(uid)
            if len(self._users) < 10_000:
                self._users[uid] = name
        return name

    # --- the minute's account -----------------------------------------------------------------

    def _account(self, readings: list[Reading], wall: datetime) -> ProcessMinute | None:
        """Add this tick's readings to the current minute; return the minute that just
        ended, if one did."""
        start = wall.replace(second=0, microsecond=0)
        finished = None
        if self._minute is not None and self._minute.start != start:
            finished = self._finish(self._minute)
            self._minute = None
        if self._minute is None:
            self._minute = Minute(start)
        accounts = self._minute.accounts
        for reading in readings:
            key = reading.key
            account = accounts.get(key)
            if account is None:
                account = accounts[key] = MinuteAccount(reading.stat.name)
            account.rss_bytes = max(account.rss_bytes, reading.stat.rss_pages * self.page_size)
            rates, window = self._rates.get(key), self._windows.get(key)
            if rates is None or window is None:
                continue
            if rates.cpu_percent is not None:
                account.cpu_seconds += rates.cpu_percent / 100.0 * window
            if rates.read_bytes_per_second is not None:
                account.read_bytes += int(rates.read_bytes_per_second * window)
                account.write_bytes += int((rates.write_bytes_per_second or 0.0) * window)
        if len(accounts) > 4 * MAX_TABLE:  # a fork storm: keep the biggest
            biggest = heapq.nlargest(MAX_TABLE, accounts.items(), key=lambda i: i[1].cpu_seconds)
            self._minute.accounts = dict(biggest)
        return finished

    def _finish(self, minute: Minute) -> ProcessMinute:
        accounts = minute.accounts
        measures: list[Callable[[tuple[int, int]], float]] = [
            lambda k: accounts[k].cpu_seconds,
            lambda k: float(accounts[k].rss_bytes),
            lambda k: float(accounts[k].read_bytes + accounts[k].write_bytes),
        ]
        top: list[ProcessMinuteEntry] = []
        for key in union_top(list(accounts), measures, self.top_n):
            account = accounts[key]
            reading = self._last.get(key)
            # Described now if it is still running (it may never have been shown live).
            described = self._describe(key, reading) if reading else self._described.get(key)
            top.append(
                {
                    "pid": key[0],
                    "name": account.name,
                    "command": described.command if described else f"[{account.name}]",
                    "user": described.user if described else "",
                    "cgroup": described.cgroup if described else "",
                    "cpu_seconds": round(account.cpu_seconds, 3),
                    "rss_bytes": account.rss_bytes,
                    "read_bytes": account.read_bytes,
                    "write_bytes": account.write_bytes,
                }
            )
        return {"start": minute.start.isoformat(), "top": top}

    # --- groups for /metrics, the whole table -------------------------------------------------

    def _group_rows(self) -> tuple[list[tuple[str, float, int, int]], int]:
        """(name, CPU seconds, resident bytes, processes) per name, at most `max_groups`
        (by CPU seconds), and how many names were left out; renewed at each full scan."""
        cpu: Counter[str] = Counter()
        rss: Counter[str] = Counter()
        count: Counter[str] = Counter()
        for reading in self._last.values():
            name = reading.stat.group
            cpu[name] += reading.stat.cpu_ticks
            rss[name] += reading.stat.rss_pages * self.page_size
            count[name] += 1
        kept = heapq.nlargest(
            self.max_groups, list(count), key=lambda n: cpu[n] + self._exited_cpu[n]
        )
        rows = [
            (name, (cpu[name] + self._exited_cpu[name]) / self.hz, rss[name], count[name])
            for name in sorted(kept)
        ]
        return rows, len(count) - len(kept)

    def _build_families(self) -> list[Metric]:
        """The /metrics families, built at each full scan (scrapes in between render the
        same objects: marked stable, their text is formatted once)."""
        rows, left_out = self._groups
        families: list[Metric] = [
            labeled_counter(
                "perfpulse_process_group_cpu_seconds_total",
                "CPU seconds of the processes of each name, exited ones included.",
                ("groupname",),
                (((name,), cpu) for name, cpu, _, _ in rows),
            ),
            labeled_gauge(
                "perfpulse_process_group_resident_memory_bytes",
                "Resident memory of the processes of each name.",
                ("groupname",),
                (((name,), rss) for name, _, rss, _ in rows),
            ),
            labeled_gauge(
                "perfpulse_process_group_processes",
                "Processes of each name.",
                ("groupname",),
                (((name,), count) for name, _, _, count in rows),
            ),
            gauge(
                "perfpulse_process_groups_left_out",
                "Process names left out of the perfpulse_process_group_* series (past the cap).",
                left_out,
            ),
            gauge("perfpulse_processes", "Processes in the latest full scan.", self._count),
            labeled_counter(
                "perfpulse_process_scans_total",
                "Full scans of the process table, by what caused them: scheduled, or cpu, "
                "memory or io the tracked processes did not explain.",
                ("reason",),
                (((reason,), self.scan_reasons[reason]) for reason in SCAN_REASONS),
            ),
        ]
        return [stable(family) for family in families]

    def _bound_exited(self) -> None:
        """Exited processes' CPU is kept per name; names no longer running are forgotten
        once there are many (their series are gone from /metrics anyway)."""
        if len(self._exited_cpu) > 4 * self.max_groups:
            running = {reading.stat.group for reading in self._last.values()}
            for name in list(self._exited_cpu):
                if name not in running:
                    del self._exited_cpu[name]

    @property
    def scanned_at(self) -> datetime | None:
        return self._scanned_at

    def table_rows(self, limit: int = MAX_TABLE, sort: str = "cpu") -> list[ProcessEntry]:
        """The first `limit` processes of the latest readings by `sort` (cpu, memory or
        io): the full table, on demand. Only the rows returned are described (command
        line, user, group: read once per process)."""
        measure = {"cpu": self._cpu, "memory": self._memory, "io": self._io}[sort]
        keys = heapq.nlargest(limit, self._last, key=measure)
        return [self._entry(key) for key in keys]

    def table_size(self) -> int:
        return len(self._last)


class ProcessesSample:
    """One tick's view of the process table."""

    def __init__(
        self, collector: ProcessesCollector, top: list[ProcessEntry], minute: ProcessMinute | None
    ) -> None:
        self.top = top
        self.minute = minute
        self.count = collector._count
        self.running = collector._running
        self.scanned_at = collector._scanned_at
        self.vanished = collector._vanished
        self.io_unreadable = collector._io_unreadable
        self.hidepid = collector._hidepid
        self.groups, self.groups_left_out = collector._groups
        self.full_scans = collector.full_scans
        self.families = collector._families

    def to_dict(self) -> ProcessesData:
        return {
            "count": self.count,
            "running": self.running,
            "scanned_at": None if self.scanned_at is None else self.scanned_at.isoformat(),
            "io_unreadable": self.io_unreadable,
            "hidepid": self.hidepid,
            "top": self.top,
            "minute": self.minute,
        }

    def metrics(self) -> Iterator[Metric]:
        return iter(self.families)


def union_top(
    keys: list[K],
    measures: list[Callable[[K], float]],
    n: int,
    floors: tuple[float, ...] | None = None,
) -> list[K]:
    """The union of the `n` largest keys by each measure (zeros left out, and values under
    the measure's floor), ordered by the first measure, largest first."""
    chosen: dict[K, None] = {}
    for i, measure in enumerate(measures):
        floor = floors[i] if floors else 0.0
        for key in heapq.nlargest(n, keys, key=measure):
            value = measure(key)
            if value > 0 and value >= floor:
                chosen[key] = None
    return sorted(chosen, key=measures[0], reverse=True)


def _io_total(io: tuple[int, int] | None) -> int:
    return 0 if io is None else io[0] + io[1]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
