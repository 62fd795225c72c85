"""Memory bandwidth, from the best source the machine offers, and paging I/O from vmstat.

/proc/vmstat counts paging (pages read from and written to disk), not DRAM traffic: it is
reported under its own names and always says `"source": "vmstat"`. Real bandwidth comes
from the memory controllers' CAS counters (`uncore_imc`, through the perf child) or from
resctrl's memory-bandwidth monitoring (`mbm_total_bytes`), when the machine has them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Clock, LastReading, TickReads, rate, read_text
from exporter.collectors.families import counter, labeled_gauge
from exporter.collectors.memory import parse_vmstat
from exporter.collectors.perfstat import CACHE_LINE_BYTES, UNIT_BYTES, PerfStat
from exporter.collectors.sections import BandwidthSource, MemoryBandwidthData, VmstatRates

# vmstat counter -> (exported name, multiplier to the exported unit)
VMSTAT = {
    "pgpgin": ("pgpgin_bytes", 1024),  # the kernel counts KiB
    "pgpgout": ("pgpgout_bytes", 1024),
    "pswpin": ("pswpin_pages", 1),
    "pswpout": ("pswpout_pages", 1),
    "pgfault": ("page_faults", 1),
    "pgmajfault": ("major_page_faults", 1),
    "numa_hit": ("numa_hit", 1),
    "numa_miss": ("numa_miss", 1),
}
_VMSTAT_HELP = {
    "pgpgin_bytes": "Bytes paged in from block devices (/proc/vmstat pgpgin; paging, not DRAM).",
    "pgpgout_bytes": "Bytes paged out to block devices (/proc/vmstat pgpgout; paging, not DRAM).",
    "pswpin_pages": "Pages swapped in.",
    "pswpout_pages": "Pages swapped out.",
    "page_faults": "Page faults, minor and major.",
    "major_page_faults": "Major page faults (needed I/O).",
    "numa_hit": "Allocations satisfied on the intended NUMA node.",
    "numa_miss": "Allocations that fell to another NUMA node.",
}


def vmstat_counters(text: str) -> dict[str, float]:
    raw = parse_vmstat(text)
    return {name: raw[key] * scale for key, (name, scale) in VMSTAT.items() if key in raw}


def resctrl_total_bytes(root: Path) -> int | None:
    """Sum of mbm_total_bytes over every L3 domain, or None without resctrl monitoring."""
    files = sorted(root.glob("mon_data/mon_L3_*/mbm_total_bytes")) if root.is_dir() else []
    if not files:
        return None
    total = 0
    for path in files:
        try:
            total += int(path.read_text())
        except (OSError, ValueError):
            return None  # "Unavailable" while a domain is being set up
    return total


@dataclass(frozen=True, slots=True)
class BandwidthSample:
    source: BandwidthSource
    read_bytes: float | None
    write_bytes: float | None
    total_bytes: float | None
    read_rate: float | None
    write_rate: float | None
    total_rate: float | None
    vmstat: dict[str, float]
    vmstat_rates: dict[str, float | None]

    def to_dict(self) -> MemoryBandwidthData:
        return {
            "source": self.source,
            "read_bytes_per_second": self.read_rate,
            "write_bytes_per_second": self.write_rate,
            "total_bytes_per_second": self.total_rate,
            # Keys from the VMSTAT table; tests/test_sections.py checks them.
            "vmstat": cast(
                VmstatRates,
                {
                    "source": "vmstat",
                    **{f"{name}_per_second": value for name, value in self.vmstat_rates.items()},
                },
            ),
        }

    def metrics(self) -> Iterator[Metric]:
        yield labeled_gauge(
            "perfpulse_memory_bandwidth_source",
            "Where memory bandwidth figures come from (uncore_imc, resctrl, or only vmstat).",
            ("source",),
            [((self.source,), 1.0)],
        )
        if self.read_bytes is not None:
            yield counter(
                "perfpulse_memory_read_bytes_total",
                "Bytes read from DRAM (memory-controller CAS reads x 64).",
                self.read_bytes,
            )
        if self.write_bytes is not None:
            yield counter(
                "perfpulse_memory_write_bytes_total",
                "Bytes written to DRAM (memory-controller CAS writes x 64).",
                self.write_bytes,
            )
        if self.source == "resctrl" and self.total_bytes is not None:
            yield counter(
                "perfpulse_memory_transfer_bytes_total",
                "Bytes moved between L3 and DRAM, reads and writes (resctrl mbm_total_bytes).",
                self.total_bytes,
            )
        for name, value in self.vmstat.items():
            yield counter(f"perfpulse_vmstat_{name}_total", _VMSTAT_HELP[name], value)


def _bytes(value: float, unit: str) -> float:
    """perf applies sysfs scales: CAS counts arrive as MiB, or as plain counts without."""
    return value * UNIT_BYTES[unit] if unit in UNIT_BYTES else value * CACHE_LINE_BYTES


class MemoryBandwidthCollector:
    """DRAM traffic where measurable, plus /proc/vmstat paging I/O, each named by source."""

    name = "memory_bandwidth"
    blocking = False  # procfs, sysfs counters and the perf child's state

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        *,
        perf: PerfStat | None = None,
        clock: Clock = time.monotonic,
        tick_reads: TickReads | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.resctrl = sys_root / "fs/resctrl"
        self.perf = perf
        self.clock = clock
        self._vmstat_path = str(proc_root / "vmstat")
        self._read_shared = tick_reads.read if tick_reads is not None else read_text
        self._last: LastReading[tuple[dict[str, float], int | None]] = LastReading()

    def _imc(self) -> tuple[float | None, float | None, float | None, float | None]:
        """(read total, write total, read rate, write rate) in bytes from the perf child."""
        if self.perf is None:
            return None, None, None, None
        read = write = read_rate = write_rate = None
        for name, event in self.perf.state.events.items():
            if "/cas_count" not in name or not event.available:
                continue
            total = _bytes(event.total, event.unit)
            per_second = None if event.rate is None else _bytes(event.rate, event.unit)
            if "cas_count_read" in name:
                read = (read or 0.0) + total
                read_rate = None if per_second is None else (read_rate or 0.0) + per_second
            else:
                write = (write or 0.0) + total
                write_rate = None if per_second is None else (write_rate or 0.0) + per_second
        return read, write, read_rate, write_rate

    def collect(self) -> BandwidthSample:
        now = self.clock()
        vmstat = vmstat_counters(self._read_shared(self._vmstat_path))
        resctrl = resctrl_total_bytes(self.resctrl)
        previous, elapsed = self._last.swap(now, (vmstat, resctrl))
        vmstat_rates = {
            name: rate(value, previous[0].get(name) if previous else None, elapsed)
            for name, value in vmstat.items()
        }
        read, write, read_rate, write_rate = self._imc()
        if read is not None or write is not None:
            total_rate = None if read_rate is None or write_rate is None else read_rate + write_rate
            return BandwidthSample(
                "uncore_imc",
                read,
                write,
                None,
                read_rate,
                write_rate,
                total_rate,
                vmstat,
                vmstat_rates,
            )
        if resctrl is not None:
            before = None if previous is None else previous[1]
            return BandwidthSample(
                "resctrl",
                None,
                None,
                resctrl,
                None,
                None,
                rate(resctrl, before, elapsed),
                vmstat,
                vmstat_rates,
            )
        return BandwidthSample("vmstat", None, None, None, None, None, None, vmstat, vmstat_rates)
