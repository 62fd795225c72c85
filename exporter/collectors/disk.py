"""Disk: I/O per block device from /proc/diskstats (filesystem usage: `filesystem.py`)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import (
    JSON,
    Clock,
    LastReading,
    rate,
    rates,
    read_text,
    sum_rates,
)
from exporter.collectors.families import labeled_counter, labeled_gauge
from exporter.collectors.pressure import NOT_READ, Pressure, PressureReading
from exporter.collectors.sections import DeviceData, DiskData

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
class DiskSample:
    devices: dict[str, dict[str, float]]
    previous: dict[str, dict[str, float]] | None
    elapsed: float | None
    total_devices: frozenset[str]
    pressure: PressureReading = NOT_READ

    def to_dict(self) -> DiskData:
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
            total.update(dict.fromkeys(LATENCIES))
            total["busy_percent"] = None
        else:
            total.update(sum_rates([cast(JSON, d) for d in seen_twice], rate_keys))
            before_counted = [before[n] for n in counted if n in before]
            now_counted = [self.devices[n] for n in counted if n in before]
            total.update(_latencies(now_counted, before_counted))
            busy = [d["busy_percent"] for d in seen_twice]
            # The busiest device: a saturated disk is not hidden by idle ones.
            known = [b for b in busy if b is not None]
            total["busy_percent"] = None if len(known) < len(busy) else max(known, default=0.0)
        total["io_in_progress"] = sum(self.devices[n]["io_in_progress"] for n in counted)
        # Keys from COUNTERS and RATE_COUNTERS; tests/test_sections.py checks them.
        return {
            "total": cast(DeviceData, total),
            "devices": devices,
            "pressure": self.pressure.data,
            "pressure_error": self.pressure.error,
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
        yield from self.pressure.metrics()


_HELP = {
    "reads_completed": "Reads completed",
    "writes_completed": "Writes completed",
    "read_bytes": "Bytes read",
    "written_bytes": "Bytes written",
    "read_time_seconds": "Seconds spent by all reads",
    "write_time_seconds": "Seconds spent by all writes",
    "io_time_seconds": "Seconds the device had I/O in flight (busy time)",
}


# Average seconds per completed read and write over the interval, as node-mixin computes
# disk latency: the time the completed requests spent (queue and service) over their
# count. None on the first reading and when no request of that kind completed.
LATENCIES = {
    "read_latency_seconds": ("read_time_seconds", "reads_completed"),
    "write_latency_seconds": ("write_time_seconds", "writes_completed"),
}


def _latencies(
    now: list[dict[str, float]], before: list[dict[str, float]]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, (time_key, count_key) in LATENCIES.items():
        if not before or len(before) != len(now):
            out[key] = None
            continue
        spent = sum(n[time_key] - b[time_key] for n, b in zip(now, before, strict=True))
        done = sum(n[count_key] - b[count_key] for n, b in zip(now, before, strict=True))
        out[key] = spent / done if done > 0 and spent >= 0 else None
    return out


def _device_view(
    row: dict[str, float], before: dict[str, float] | None, elapsed: float | None
) -> DeviceData:
    counters = {key: row[key] for key in COUNTERS}
    per_second = rates({key: row[key] for key in RATE_COUNTERS}, before, elapsed)
    busy_before = None if before is None else before["io_time_seconds"]
    busy = rate(row["io_time_seconds"], busy_before, elapsed)
    out: JSON = {f"{key}_total": value for key, value in counters.items()}
    out.update({f"{key}_per_second": value for key, value in per_second.items()})
    out["busy_percent"] = None if busy is None else min(100.0, 100.0 * busy)
    out.update(_latencies([row], [before] if before is not None else []))
    out["io_in_progress"] = row["io_in_progress"]
    return cast(DeviceData, out)


class DiskCollector:
    """Reads /proc/diskstats."""

    name = "disk"
    blocking = False  # procfs only

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        *,
        clock: Clock = time.monotonic,
        device_exclude: str = DEFAULT_DEVICE_EXCLUDE,
    ) -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.clock = clock
        self.device_exclude = re.compile(device_exclude)
        self._last: LastReading[dict[str, dict[str, float]]] = LastReading()
        self._diskstats_path = str(proc_root / "diskstats")
        self._stacked: tuple[frozenset[str], frozenset[str]] | None = None
        self._pressure = Pressure("io", proc_root)

    def collect(self) -> DiskSample:
        now = self.clock()
        devices = {
            name: row
            for name, row in parse_diskstats(read_text(self._diskstats_path)).items()
            if not self.device_exclude.search(name)
        }
        previous, elapsed = self._last.swap(now, devices)
        total_devices = self._unstacked(frozenset(devices))
        return DiskSample(devices, previous, elapsed, total_devices, self._pressure.read())

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
