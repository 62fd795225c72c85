"""Memory: RAM and swap from /proc/meminfo, swap-in/out traffic from /proc/vmstat."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Clock, LastReading, TickReads, rate, read_text
from exporter.collectors.families import counter, gauge
from exporter.collectors.pressure import NOT_READ, Pressure, PressureReading
from exporter.collectors.sections import MemoryData

# /proc/meminfo field -> exported name (all in bytes).
MEMINFO_FIELDS = {
    "MemTotal": "total",
    "MemFree": "free",
    "MemAvailable": "available",
    "Buffers": "buffers",
    "Cached": "cached",
    "SReclaimable": "slab_reclaimable",
    "Shmem": "shared",
    "SwapTotal": "swap_total",
    "SwapFree": "swap_free",
}


def parse_meminfo(text: str) -> dict[str, int]:
    """Every /proc/meminfo field, in bytes (the kernel prints kB, meaning KiB)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        value = int(parts[0])
        result[name] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return result


def parse_vmstat(text: str) -> dict[str, int]:
    """Every /proc/vmstat counter."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value:
            result[name] = int(value)
    return result


_SWAP_IN = re.compile(r"^pswpin (\d+)$", re.M)
_SWAP_OUT = re.compile(r"^pswpout (\d+)$", re.M)


def _counter(pattern: re.Pattern[str], text: str) -> int:
    """One /proc/vmstat counter, found without parsing all ~200 lines (0 when absent)."""
    match = pattern.search(text)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True, slots=True)
class MemorySample:
    values: dict[str, int]
    swap_in_bytes: int
    swap_out_bytes: int
    previous_swap: tuple[int, int] | None
    elapsed: float | None
    pressure: PressureReading = NOT_READ

    def to_dict(self) -> MemoryData:
        v = self.values
        total, available = v["total"], v["available"]
        used = total - available
        swap_used = v["swap_total"] - v["swap_free"]
        before_in, before_out = self.previous_swap or (None, None)
        return {
            "total_bytes": total,
            "available_bytes": available,
            "used_bytes": used,
            "free_bytes": v["free"],
            "percent": 100.0 * used / total if total else None,
            "buffers_bytes": v["buffers"],
            "cached_bytes": v["cached"],
            "shared_bytes": v["shared"],
            "swap_total_bytes": v["swap_total"],
            "swap_used_bytes": swap_used,
            "swap_percent": 100.0 * swap_used / v["swap_total"] if v["swap_total"] else 0.0,
            "swap_in_bytes_total": self.swap_in_bytes,
            "swap_out_bytes_total": self.swap_out_bytes,
            "swap_in_bytes_per_second": rate(self.swap_in_bytes, before_in, self.elapsed),
            "swap_out_bytes_per_second": rate(self.swap_out_bytes, before_out, self.elapsed),
            "pressure": self.pressure.data,
            "pressure_error": self.pressure.error,
        }

    def metrics(self) -> Iterator[Metric]:
        for name, value in self.values.items():
            yield gauge(
                f"perfpulse_memory_{name}_bytes", f"/proc/meminfo {_FIELD_OF[name]}.", value
            )
        yield counter(
            "perfpulse_memory_swap_in_bytes_total",
            "Bytes swapped in from disk (pswpin x page size).",
            self.swap_in_bytes,
        )
        yield counter(
            "perfpulse_memory_swap_out_bytes_total",
            "Bytes swapped out to disk (pswpout x page size).",
            self.swap_out_bytes,
        )
        yield from self.pressure.metrics()


_FIELD_OF = {name: field for field, name in MEMINFO_FIELDS.items()}


class MemoryCollector:
    """Reads /proc/meminfo and /proc/vmstat. "Used" is total minus available."""

    name = "memory"
    blocking = False  # procfs only

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        clock: Clock = time.monotonic,
        page_size: int | None = None,
        tick_reads: TickReads | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.clock = clock
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        self._last: LastReading[tuple[int, int]] = LastReading()
        self._meminfo_path = str(proc_root / "meminfo")
        self._vmstat_path = str(proc_root / "vmstat")
        self._read_shared = tick_reads.read if tick_reads is not None else read_text
        self._pressure = Pressure("memory", proc_root)

    def collect(self) -> MemorySample:
        now = self.clock()
        meminfo = parse_meminfo(read_text(self._meminfo_path))
        values = {name: meminfo.get(field, 0) for field, name in MEMINFO_FIELDS.items()}
        if "MemAvailable" not in meminfo:  # kernels before 3.14
            values["available"] = values["free"] + values["buffers"] + values["cached"]
        vmstat = self._read_shared(self._vmstat_path)
        swap = (
            _counter(_SWAP_IN, vmstat) * self.page_size,
            _counter(_SWAP_OUT, vmstat) * self.page_size,
        )
        previous, elapsed = self._last.swap(now, swap)
        return MemorySample(values, swap[0], swap[1], previous, elapsed, self._pressure.read())
