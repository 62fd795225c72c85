"""CPU: time by mode (total and per CPU), load, frequency, context switches, interrupts.

Reads /proc/stat directly: one read gives every CPU and every counter, where psutil needs
several calls. Usage is computed from deltas of the cumulative times, never by sleeping.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Clock, LastReading, TickReads, Unavailable, rate, read_text
from exporter.collectors.families import counter, gauge, labeled_counter, labeled_gauge
from exporter.collectors.pressure import NOT_READ, Pressure, PressureReading
from exporter.collectors.sections import CpuData, PerCpu

MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
IDLE_MODES = ("idle", "iowait")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The counters of /proc/stat, times converted to seconds."""

    total: dict[str, float]
    per_cpu: dict[str, dict[str, float]]
    context_switches: int
    interrupts: int
    procs_running: int
    procs_blocked: int
    boot_time: int


def parse_proc_stat(text: str, ticks_per_second: float) -> ProcStat:
    """Parse /proc/stat. Guest time is already inside user/nice and is not repeated."""
    total: dict[str, float] = {}
    per_cpu: dict[str, dict[str, float]] = {}
    scalars: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        key = fields[0]
        if key.startswith("cpu"):
            times = {
                mode: int(raw) / ticks_per_second
                for mode, raw in zip(MODES, fields[1 : 1 + len(MODES)], strict=False)
            }
            if key == "cpu":
                total = times
            else:
                per_cpu[key[3:]] = times
        elif key in ("ctxt", "intr", "procs_running", "procs_blocked", "btime"):
            scalars[key] = int(fields[1])
    if not total:
        raise ValueError("no aggregate 'cpu' line in /proc/stat")
    return ProcStat(
        total=total,
        per_cpu=per_cpu,
        context_switches=scalars.get("ctxt", 0),
        interrupts=scalars.get("intr", 0),
        procs_running=scalars.get("procs_running", 0),
        procs_blocked=scalars.get("procs_blocked", 0),
        boot_time=scalars.get("btime", 0),
    )


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg."""
    one, five, fifteen = (float(value) for value in text.split()[:3])
    return one, five, fifteen


_PROCESSOR = re.compile(r"^processor\s*:\s*(\d+)", re.M)
_MHZ = re.compile(r"^cpu MHz\s*:\s*([\d.]+)", re.M)


def parse_cpuinfo_mhz(text: str) -> dict[str, float]:
    """Per-CPU "cpu MHz" from /proc/cpuinfo (x86; other architectures may not print it)."""
    processors = _PROCESSOR.findall(text)
    mhz = _MHZ.findall(text)
    if len(mhz) != len(processors):
        return {}
    return {cpu: float(value) for cpu, value in zip(processors, mhz, strict=True)}


def usage_percent(now: dict[str, float], before: dict[str, float] | None) -> float | None:
    """Busy share of the CPU time that passed between two readings, in percent."""
    if before is None:
        return None
    elapsed = sum(now[m] - before.get(m, 0.0) for m in now)
    if elapsed <= 0:
        return None
    idle = sum(now.get(m, 0.0) - before.get(m, 0.0) for m in IDLE_MODES)
    return min(100.0, max(0.0, 100.0 * (1.0 - idle / elapsed)))


def mode_percents(
    now: dict[str, float], before: dict[str, float] | None
) -> dict[str, float | None]:
    """Share of each mode in the CPU time that passed, in percent (None when unknown)."""
    if before is None:
        return dict.fromkeys(now)
    elapsed = sum(now[m] - before.get(m, 0.0) for m in now)
    result: dict[str, float | None] = {}
    for mode, value in now.items():
        share = rate(value, before.get(mode), elapsed)
        result[mode] = None if share is None else min(100.0, 100.0 * share)
    return result


@dataclass(frozen=True, slots=True)
class CpuSample:
    stat: ProcStat
    previous: ProcStat | None
    elapsed: float | None
    load: tuple[float, float, float] | None
    frequency_hz: dict[str, float]
    pressure: PressureReading = NOT_READ

    def to_dict(self) -> CpuData:
        before = self.previous
        total_before = None if before is None else before.total
        ctxt_before = None if before is None else before.context_switches
        intr_before = None if before is None else before.interrupts
        per_cpu: list[PerCpu] = [
            {
                "cpu": cpu,
                "usage_percent": usage_percent(
                    times, before.per_cpu.get(cpu) if before is not None else None
                ),
            }
            for cpu, times in self.stat.per_cpu.items()
        ]
        freqs = list(self.frequency_hz.values())
        return {
            "count": len(self.stat.per_cpu),
            "usage_percent": usage_percent(self.stat.total, total_before),
            "modes_percent": mode_percents(self.stat.total, total_before),
            "per_cpu": per_cpu,
            "times_seconds": self.stat.total,
            "load_average": (
                None
                if self.load is None
                else {"1m": self.load[0], "5m": self.load[1], "15m": self.load[2]}
            ),
            "frequency_mhz": sum(freqs) / len(freqs) / 1e6 if freqs else None,
            "context_switches_total": self.stat.context_switches,
            "interrupts_total": self.stat.interrupts,
            "context_switches_per_second": rate(
                self.stat.context_switches, ctxt_before, self.elapsed
            ),
            "interrupts_per_second": rate(self.stat.interrupts, intr_before, self.elapsed),
            "procs_running": self.stat.procs_running,
            "procs_blocked": self.stat.procs_blocked,
            "pressure": self.pressure.data,
            "pressure_error": self.pressure.error,
        }

    def metrics(self) -> Iterator[Metric]:
        stat = self.stat
        yield labeled_counter(
            "perfpulse_cpu_seconds_total",
            "Seconds each CPU spent in each mode (from /proc/stat).",
            ("cpu", "mode"),
            (
                ((cpu, mode), value)
                for cpu, times in stat.per_cpu.items()
                for mode, value in times.items()
            ),
        )
        yield counter(
            "perfpulse_context_switches_total",
            "Context switches since boot.",
            stat.context_switches,
        )
        yield counter(
            "perfpulse_interrupts_total", "Interrupts serviced since boot.", stat.interrupts
        )
        yield gauge("perfpulse_procs_running", "Runnable tasks.", stat.procs_running)
        yield gauge("perfpulse_procs_blocked", "Tasks blocked waiting for I/O.", stat.procs_blocked)
        yield gauge(
            "perfpulse_boot_time_seconds", "Boot time, seconds since the epoch.", stat.boot_time
        )
        if self.load is not None:
            for window, value in zip(("1", "5", "15"), self.load, strict=True):
                yield gauge(f"perfpulse_load{window}", f"{window}-minute load average.", value)
        yield from self.pressure.metrics()
        if self.frequency_hz:
            yield labeled_gauge(
                "perfpulse_cpu_frequency_hertz",
                "Current CPU frequency.",
                ("cpu",),
                (((cpu,), hz) for cpu, hz in self.frequency_hz.items()),
            )


class CpuCollector:
    """Reads /proc/stat, /proc/loadavg and the CPU frequency; keeps the previous reading."""

    name = "cpu"
    blocking = False  # procfs only

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        *,
        clock: Clock = time.monotonic,
        ticks_per_second: float | None = None,
        tick_reads: TickReads | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.clock = clock
        self._tick_reads = tick_reads  # /proc/stat is read by processes too
        self.ticks_per_second = ticks_per_second or float(os.sysconf("SC_CLK_TCK"))
        self._last: LastReading[ProcStat] = LastReading()
        self._cpufreq: bool | None = None
        self._stat_path = str(proc_root / "stat")
        self._loadavg_path = str(proc_root / "loadavg")
        self._cpuinfo_path = str(proc_root / "cpuinfo")
        self._pressure = Pressure("cpu", proc_root)

    def collect(self) -> CpuSample:
        now = self.clock()
        text = (
            self._tick_reads.read(self._stat_path)
            if self._tick_reads is not None
            else read_text(self._stat_path)
        )
        stat = parse_proc_stat(text, self.ticks_per_second)
        previous, elapsed = self._last.swap(now, stat)
        return CpuSample(
            stat, previous, elapsed, self._load(), self._frequency(stat), self._pressure.read()
        )

    def _load(self) -> tuple[float, float, float] | None:
        try:
            return parse_loadavg(read_text(self._loadavg_path))
        except Unavailable:
            return None

    def _frequency(self, stat: ProcStat) -> dict[str, float]:
        """Hz per CPU from cpufreq when the kernel has it, else /proc/cpuinfo."""
        if self._cpufreq is None:  # decided once: cpufreq does not come and go
            probe = self.sys_root / "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"
            self._cpufreq = probe.exists()
        if self._cpufreq:
            result = {}
            for cpu in stat.per_cpu:
                path = self.sys_root / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"
                try:
                    result[cpu] = int(path.read_text()) * 1e3
                except (OSError, ValueError):
                    continue  # offline CPU
            return result
        try:
            mhz = parse_cpuinfo_mhz(read_text(self._cpuinfo_path))
        except Unavailable:
            return {}
        return {cpu: value * 1e6 for cpu, value in mhz.items()}
