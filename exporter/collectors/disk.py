"""Disk: I/O per block device from /proc/diskstats, usage per real filesystem (statvfs)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import (
    JSON,
    Clock,
    LastReading,
    WorkerThread,
    rate,
    rates,
    read_text,
    sum_rates,
)
from exporter.collectors.families import labeled_counter, labeled_gauge

log = logging.getLogger(__name__)

SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size
# Partitions, RAM disks and loop devices, as node_exporter's default device exclude.
DEFAULT_DEVICE_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$"
COUNTERS = (
    "reads_completed",
    "writes_completed",
    "read_bytes",
    "written_bytes",
    "read_time_seconds",
    "write_time_seconds",
    "io_time_seconds",
)
# Counters that make sense as per-second rates (time counters become busy_percent).
RATE_COUNTERS = ("reads_completed", "writes_completed", "read_bytes", "written_bytes")
MOUNTS_TTL_SECONDS = 30.0
FIRST_STATVFS_WAIT_SECONDS = 0.5
STATVFS_STUCK_SECONDS = 10.0
# Filesystem types the kernel marks "nodev" but that hold real data.
DATA_NODEV_TYPES = frozenset({"zfs"})

StatVfs = Callable[[str], Any]


def parse_diskstats(text: str) -> dict[str, dict[str, float]]:
    """Per device: the `COUNTERS` (bytes and seconds) plus `io_in_progress`."""
    result: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14:
            continue
        v = [int(x) for x in fields[3:14]]
        result[fields[2]] = {
            "reads_completed": v[0],
            "writes_completed": v[4],
            "read_bytes": v[2] * SECTOR_BYTES,
            "written_bytes": v[6] * SECTOR_BYTES,
            "read_time_seconds": v[3] / 1000,
            "write_time_seconds": v[7] / 1000,
            "io_time_seconds": v[9] / 1000,
            "io_in_progress": v[8],
        }
    return result


@dataclass(frozen=True, slots=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str


def _unescape(field: str) -> str:
    """Mount fields escape space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return mounts


def parse_nodev_filesystems(text: str) -> frozenset[str]:
    """Filesystem types /proc/filesystems marks `nodev` (not backed by a block device)."""
    return frozenset(
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("nodev") and len(line.split()) > 1
    )


def real_filesystems(mounts: list[Mount], nodev: frozenset[str]) -> list[Mount]:
    """Block-backed mounts, one per device (bind mounts repeat the device)."""
    seen: set[str] = set()
    result = []
    for mount in mounts:
        if mount.fstype in nodev and mount.fstype not in DATA_NODEV_TYPES:
            continue
        if mount.device in seen:
            continue
        seen.add(mount.device)
        result.append(mount)
    return result


@dataclass(frozen=True, slots=True)
class FilesystemUsage:
    mount: Mount
    size_bytes: int
    free_bytes: int
    avail_bytes: int
    files: int
    files_free: int

    def to_dict(self) -> JSON:
        used = self.size_bytes - self.free_bytes
        # Like df: the reserved blocks are neither used nor available to users.
        usable = used + self.avail_bytes
        return {
            "mountpoint": self.mount.mountpoint,
            "device": self.mount.device,
            "fstype": self.mount.fstype,
            "total_bytes": self.size_bytes,
            "used_bytes": used,
            "available_bytes": self.avail_bytes,
            "percent": 100.0 * used / usable if usable else None,
        }


@dataclass(frozen=True, slots=True)
class DiskSample:
    devices: dict[str, dict[str, float]]
    previous: dict[str, dict[str, float]] | None
    elapsed: float | None
    total_devices: frozenset[str]
    filesystems: list[FilesystemUsage]

    def to_dict(self) -> JSON:
        before = self.previous
        devices = {
            name: _device_view(row, before.get(name) if before else None, self.elapsed)
            for name, row in self.devices.items()
        }
        counted = sorted(self.total_devices & self.devices.keys())
        total: JSON = {
            f"{key}_total": sum(self.devices[n][key] for n in counted) for key in COUNTERS
        }
        seen_twice = [devices[n] for n in counted if before is not None and n in before]
        rate_keys = [f"{key}_per_second" for key in RATE_COUNTERS]
        if before is None:
            total.update(dict.fromkeys(rate_keys))
            total["busy_percent"] = None
        else:
            total.update(sum_rates(seen_twice, rate_keys))
            busy = [d["busy_percent"] for d in seen_twice]
            # The busiest device: a saturated disk is not hidden by idle ones.
            total["busy_percent"] = None if any(b is None for b in busy) else max(busy, default=0.0)
        total["io_in_progress"] = sum(self.devices[n]["io_in_progress"] for n in counted)
        return {
            "total": total,
            "devices": devices,
            "filesystems": [fs.to_dict() for fs in self.filesystems],
        }

    def metrics(self) -> Iterator[Metric]:
        for key in COUNTERS:
            yield labeled_counter(
                f"perfpulse_disk_{key}_total",
                f"{_HELP[key]} (from /proc/diskstats).",
                ("device",),
                (((name,), row[key]) for name, row in self.devices.items()),
            )
        yield labeled_gauge(
            "perfpulse_disk_io_now",
            "I/Os currently in progress.",
            ("device",),
            (((name,), row["io_in_progress"]) for name, row in self.devices.items()),
        )
        labels = ("device", "mountpoint", "fstype")
        for attr, doc in _FS_HELP.items():
            yield labeled_gauge(
                f"perfpulse_filesystem_{attr}",
                doc,
                labels,
                (
                    ((fs.mount.device, fs.mount.mountpoint, fs.mount.fstype), getattr(fs, attr))
                    for fs in self.filesystems
                ),
            )


_HELP = {
    "reads_completed": "Reads completed",
    "writes_completed": "Writes completed",
    "read_bytes": "Bytes read",
    "written_bytes": "Bytes written",
    "read_time_seconds": "Seconds spent by all reads",
    "write_time_seconds": "Seconds spent by all writes",
    "io_time_seconds": "Seconds the device had I/O in flight (busy time)",
}
_FS_HELP = {
    "size_bytes": "Filesystem size.",
    "free_bytes": "Free space, including blocks reserved for root.",
    "avail_bytes": "Space available to unprivileged users.",
    "files": "Inodes in total.",
    "files_free": "Free inodes.",
}


def _device_view(
    row: dict[str, float], before: dict[str, float] | None, elapsed: float | None
) -> JSON:
    counters = {key: row[key] for key in COUNTERS}
    per_second = rates({key: row[key] for key in RATE_COUNTERS}, before, elapsed)
    busy_before = None if before is None else before["io_time_seconds"]
    busy = rate(row["io_time_seconds"], busy_before, elapsed)
    out: JSON = {f"{key}_total": value for key, value in counters.items()}
    out.update({f"{key}_per_second": value for key, value in per_second.items()})
    out["busy_percent"] = None if busy is None else min(100.0, 100.0 * busy)
    out["io_in_progress"] = row["io_in_progress"]
    return out


class DiskCollector:
    """Reads /proc/diskstats and statvfs of each real filesystem."""

    name = "disk"
    blocking = False  # procfs inline; statvfs runs on its own thread (see _filesystems)

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        *,
        rootfs: Path = Path("/"),
        clock: Clock = time.monotonic,
        statvfs: StatVfs = os.statvfs,
        device_exclude: str = DEFAULT_DEVICE_EXCLUDE,
    ) -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.rootfs = rootfs
        self.clock = clock
        self.statvfs = statvfs
        self.device_exclude = re.compile(device_exclude)
        self._last: LastReading[dict[str, dict[str, float]]] = LastReading()
        self._diskstats_path = str(proc_root / "diskstats")
        self._stacked: tuple[frozenset[str], frozenset[str]] | None = None
        self._mounts: tuple[float, list[Mount]] | None = None
        self._worker = WorkerThread("collector-disk-statvfs")
        self._refresh: Future[list[FilesystemUsage]] | None = None
        self._refresh_since = 0.0
        self._usage: list[FilesystemUsage] | None = None
        self._stuck_logged = False

    def collect(self) -> DiskSample:
        now = self.clock()
        devices = {
            name: row
            for name, row in parse_diskstats(read_text(self._diskstats_path)).items()
            if not self.device_exclude.search(name)
        }
        previous, elapsed = self._last.swap(now, devices)
        total_devices = self._unstacked(frozenset(devices))
        return DiskSample(devices, previous, elapsed, total_devices, self._filesystems(now))

    def _unstacked(self, names: frozenset[str]) -> frozenset[str]:
        """Devices that sit on no other device: dm-*, md* and the like would double I/O."""
        if self._stacked is None or self._stacked[0] != names:
            self._stacked = (names, frozenset(n for n in names if not self._is_stacked(n)))
        return self._stacked[1]

    def _is_stacked(self, device: str) -> bool:
        try:
            return any((self.sys_root / "block" / device / "slaves").iterdir())
        except OSError:
            return False

    def _real_mounts(self, now: float) -> list[Mount]:
        """Block-backed mounts, re-read every MOUNTS_TTL_SECONDS (mounts change rarely)."""
        if self._mounts is not None and now - self._mounts[0] < MOUNTS_TTL_SECONDS:
            return self._mounts[1]
        mounts_file = self.proc_root / "1/mounts"  # the host's view when run in a container
        if not mounts_file.exists():
            mounts_file = self.proc_root / "self/mounts"
        try:
            mounts = parse_mounts(mounts_file.read_text())
            nodev = parse_nodev_filesystems((self.proc_root / "filesystems").read_text())
        except OSError as exc:
            log.debug("cannot list filesystems: %s", exc)
            mounts, nodev = [], frozenset()
        self._mounts = (now, real_filesystems(mounts, nodev))
        return self._mounts[1]

    def _filesystems(self, now: float) -> list[FilesystemUsage]:
        """The latest statvfs figures, refreshed in the background every tick.

        statvfs can block (a FUSE daemon, a dying device), so it never runs on the
        sampling path: each tick starts a refresh on the worker thread and takes the
        newest completed one. Only the first tick waits for it, briefly.
        """
        if self._refresh is None or self._refresh.done():
            if self._refresh is not None and self._refresh.exception() is None:
                self._usage = self._refresh.result()
            self._refresh = self._worker.submit(self._statvfs_all, self._real_mounts(now))
            self._refresh_since = now
            if self._usage is None:
                with contextlib.suppress(FutureTimeout):
                    self._usage = self._refresh.result(timeout=FIRST_STATVFS_WAIT_SECONDS)
        elif now - self._refresh_since > STATVFS_STUCK_SECONDS and not self._stuck_logged:
            log.warning(
                "statvfs has not returned for %.0fs; filesystem usage is stale",
                now - self._refresh_since,
            )
            self._stuck_logged = True
        return self._usage or []

    def _statvfs_all(self, mounts: list[Mount]) -> list[FilesystemUsage]:
        self._stuck_logged = False
        result = []
        for mount in mounts:
            path = self.rootfs / mount.mountpoint.lstrip("/")
            try:
                st = self.statvfs(str(path))
            except OSError as exc:
                log.debug("statvfs %s: %s", path, exc)
                continue
            block = st.f_frsize
            result.append(
                FilesystemUsage(
                    mount,
                    size_bytes=st.f_blocks * block,
                    free_bytes=st.f_bfree * block,
                    avail_bytes=st.f_bavail * block,
                    files=st.f_files,
                    files_free=st.f_ffree,
                )
            )
        return result
