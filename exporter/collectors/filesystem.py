"""Filesystem usage: statvfs of every real (block-backed) mount, like df.

statvfs is the one collector call that can block: a hung NFS or FUSE server, a dying
device. So this collector is `blocking`: the sampler's runner calls it on a worker thread
under the collector deadline, and a call that never returns is reported (collector
`filesystem` unavailable, "still running after ...") instead of stalling the loop or piling
up threads. Its figures appear in the snapshot's `disk` section, as `filesystems`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import JSON, Clock
from exporter.collectors.families import labeled_gauge
from exporter.collectors.sections import FilesystemData, FilesystemUsageData

log = logging.getLogger(__name__)

MOUNTS_TTL_SECONDS = 30.0
REFRESH_SECONDS = 5.0  # between two statvfs rounds
# Filesystem types the kernel marks "nodev" but that hold real data.
DATA_NODEV_TYPES = frozenset({"zfs"})

StatVfs = Callable[[str], Any]


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

    def to_dict(self) -> FilesystemUsageData:
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
class FilesystemSample:
    filesystems: list[FilesystemUsage]

    def to_dict(self) -> FilesystemData:
        return {"filesystems": [fs.to_dict() for fs in self.filesystems]}

    def metrics(self) -> Iterator[Metric]:
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


_FS_HELP = {
    "size_bytes": "Filesystem size.",
    "free_bytes": "Free space, including blocks reserved for root.",
    "avail_bytes": "Space available to unprivileged users.",
    "files": "Inodes in total.",
    "files_free": "Free inodes.",
}


class FilesystemCollector:
    """statvfs of each real filesystem; runs off the event loop (see the module doc)."""

    name = "filesystem"
    blocking = True
    # Sizes and use change slowly, and each run is a thread hand-off: every 5 s is enough
    # (the snapshots between carry the last reading).
    refresh_seconds = REFRESH_SECONDS
    part_of = "disk"  # its figures go into the disk section of the snapshot
    placeholder: JSON = {"filesystems": []}  # noqa: RUF012 (read only)

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        rootfs: Path = Path("/"),
        clock: Clock = time.monotonic,
        statvfs: StatVfs = os.statvfs,
    ) -> None:
        self.proc_root = proc_root
        self.rootfs = rootfs
        self.clock = clock
        self.statvfs = statvfs
        self._mounts: tuple[float, list[Mount]] | None = None

    def collect(self) -> FilesystemSample:
        return FilesystemSample(self._statvfs_all(self._real_mounts(self.clock())))

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

    def _statvfs_all(self, mounts: list[Mount]) -> list[FilesystemUsage]:
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
