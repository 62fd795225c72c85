"""One long-lived `perf stat -a -I <ms> -x,` child, parsed incrementally and supervised.

A `perf stat` spawn costs ~15 ms of CPU; one child printing an interval line per event is
nearly free. The supervisor restarts the child with backoff when it dies, kills and reaps
it when it stops producing, and terminates and reaps it on shutdown (no zombie, no orphan).
Readers (the perf_events and memory_bandwidth collectors) only look at its latest state,
so the sampler never waits on perf.

About 300 lines on purpose: the child's output format, its parser and its supervisor
change together. The pure parsing functions come first and are tested alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from exporter.spec import HARDWARE_EVENTS, SOFTWARE_EVENTS

log = logging.getLogger(__name__)

DEFAULT_EVENTS = HARDWARE_EVENTS + SOFTWARE_EVENTS
# Intel integrated memory controller: 64 bytes per CAS command.
IMC_EVENTS = ("cas_count_read", "cas_count_write")
CACHE_LINE_BYTES = 64
UNIT_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PerfLine:
    """One line of `perf stat -x,` interval output."""

    time: float
    event: str
    value: float | None  # None when perf printed <not supported> / <not counted>
    unit: str
    running_ratio: float  # share of the interval the counter was on the PMU (multiplexing)
    status: str  # "counted", "not supported", "not counted"


def parse_perf_line(line: str) -> PerfLine | None:
    """Parse `time,value,unit,event,run_ns,pct[,metric,metric_unit]`; None for anything else.

    Comments (`#`), blank lines, perf's error text and partial lines all give None.
    """
    fields = line.strip().split(",")
    if len(fields) < 6 or line.lstrip().startswith("#"):
        return None
    try:
        timestamp = float(fields[0])
    except ValueError:
        return None
    raw, unit, event = fields[1], fields[2], fields[3]
    if not event:
        return None
    if raw.startswith("<") and raw.endswith(">"):
        status = raw.strip("<>")
        return PerfLine(timestamp, event, None, unit, 0.0, status)
    try:
        value = float(raw)
        pct = float(fields[5]) if fields[5] else 100.0
    except ValueError:
        return None
    return PerfLine(timestamp, event, value, unit, pct / 100.0, "counted")


def scaled(line: PerfLine) -> float | None:
    """The count extrapolated to the whole interval (perf runs with --no-scale)."""
    if line.value is None or line.running_ratio <= 0:
        return None
    return line.value / line.running_ratio


@dataclass(frozen=True, slots=True)
class EventState:
    """What is known about one event after an interval: cumulative scaled total and the
    last interval. A value: each interval makes new ones, so a sample that holds them
    never sees a later interval."""

    status: str = "pending"
    reason: str | None = None
    total: float = 0.0
    last_value: float | None = None
    last_interval: float | None = None
    running_ratio: float | None = None
    unit: str = ""

    @property
    def available(self) -> bool:
        return self.status == "counted"

    @property
    def rate(self) -> float | None:
        if self.last_value is None or not self.last_interval:
            return None
        return self.last_value / self.last_interval


@dataclass
class PerfState:
    """The latest picture from the perf child, shared with the collectors.

    `events` is replaced, never changed in place: readers keep the mapping they took.
    """

    events: Mapping[str, EventState] = field(default_factory=dict)
    error: str | None = None  # why the child stopped; before it first runs: warming up
    intervals: int = 0
    restarts: int = 0
    last_line_at: float | None = None


def diagnose(binary: str, sys_root: Path, proc_root: Path) -> list[str]:
    """Why hardware counters may be missing here, once, in words an operator can act on."""
    notes = []
    if shutil.which(binary) is None:
        notes.append(f"perf binary {binary!r} not found (Debian: apt-get install linux-perf)")
    try:
        paranoid = int((proc_root / "sys/kernel/perf_event_paranoid").read_text())
        notes.append(f"kernel.perf_event_paranoid = {paranoid}")
    except (OSError, ValueError):
        paranoid = None
    if os.geteuid() != 0 and not _has_perfmon(proc_root):
        notes.append(
            "running without root or CAP_PERFMON: system-wide counting needs "
            "perf_event_paranoid <= 0 or that capability"
        )
    devices = sys_root / "bus/event_source/devices"
    if devices.is_dir() and not (devices / "cpu").exists() and not any(devices.glob("cpu_*")):
        notes.append(
            "no 'cpu' PMU under /sys/bus/event_source/devices: hardware counters are not "
            "exposed here (typical of virtual machines); software events still work"
        )
    return notes


def _has_perfmon(proc_root: Path) -> bool:
    try:
        for line in (proc_root / "self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return bool(caps & (1 << 38) or caps & (1 << 21))  # CAP_PERFMON, CAP_SYS_ADMIN
    except (OSError, ValueError):
        pass
    return False


def imc_events(sys_root: Path) -> list[str]:
    """`uncore_imc*/cas_count_read/`-style events for every memory controller found."""
    devices = sys_root / "bus/event_source/devices"
    found = []
    for pmu in sorted(devices.glob("uncore_imc*")) if devices.is_dir() else []:
        for event in IMC_EVENTS:
            if (pmu / "events" / event).exists():
                found.append(f"{pmu.name}/{event}/")
    return found


class PerfStat:
    """Supervises the perf child and keeps `state` current."""

    def __init__(
        self,
        *,
        binary: str = "perf",
        events: Sequence[str] = DEFAULT_EVENTS,
        extra_events: Sequence[str] = (),
        interval: float = 1.0,
        sys_root: Path = Path("/sys"),
        proc_root: Path = Path("/proc"),
        stall_intervals: float = 5.0,
    ) -> None:
        self.binary = binary
        self.events = [*events, *extra_events]
        self.interval_ms = max(100, round(interval * 1000))
        self.sys_root = sys_root
        self.proc_root = proc_root
        self.stall_seconds = max(2.0, stall_intervals * self.interval_ms / 1000)
        self.state = PerfState(events={name: EventState() for name in self.events})
        self.process: asyncio.subprocess.Process | None = None
        self._pending: dict[str, PerfLine] = {}
        self._pending_time: float | None = None
        self._previous_time = 0.0

    def argv(self) -> list[str]:
        return [
            self.binary,
            "stat",
            "--no-big-num",
            "--no-scale",
            "-a",
            "-x,",
            "-I",
            str(self.interval_ms),
            "-e",
            ",".join(self.events),
        ]

    async def run(self) -> None:
        """Keep one child alive until cancelled; on cancellation, terminate and reap it."""
        for note in diagnose(self.binary, self.sys_root, self.proc_root):
            log.info("perf: %s", note)
        backoff = 1.0
        last_reason: str | None = None
        try:
            while True:
                started = time.monotonic()
                reason = await self._run_child()
                self.state.error = reason
                self.state.restarts += 1
                if time.monotonic() - started > 60:
                    backoff = 1.0  # it ran well for a while: start over gently
                # The same failure again (no permission, say) is not news every minute.
                level = logging.DEBUG if reason == last_reason else logging.WARNING
                log.log(level, "perf stat stopped (%s); restarting in %.0fs", reason, backoff)
                last_reason = reason
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            await self._reap()

    async def _run_child(self) -> str:
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: killed as a whole
            )
        except OSError as exc:
            return f"cannot start {self.binary}: {exc.strerror or exc}"
        assert self.process.stderr is not None
        errors: list[str] = []
        self._pending, self._pending_time = {}, None
        last_good = time.monotonic()
        try:
            while True:
                # A child that prints nothing, or nothing we can read, counts as stalled.
                remaining = self.stall_seconds - (time.monotonic() - last_good)
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                    # a cancellation that arrives as a line does, and shutdown would hang.
                    async with asyncio.timeout(max(0.0, remaining)):
                        raw = await self.process.stderr.readline()
                except TimeoutError:
                    return f"no usable output for {self.stall_seconds:.0f}s" + (
                        f" (it printed: {errors[0][:200]})" if errors else ""
                    )
                if not raw:
                    break
                line = raw.decode(errors="replace")
                parsed = parse_perf_line(line)
                if parsed is None:
                    if line.strip() and len(errors) < 5:
                        errors.append(line.strip())
                    continue
                last_good = self.state.last_line_at = time.monotonic()
                self._take(parsed)
        finally:
            await self._reap()
        code = self.process.returncode
        detail = "; ".join(errors[:2])
        return f"perf exited with code {code}" + (f": {detail}" if detail else "")

    def _take(self, line: PerfLine) -> None:
        if self._pending_time is not None and line.time != self._pending_time:
            self._commit()
        self._pending_time = line.time
        self._pending[line.event] = line
        if len(self._pending) == len(self.events):
            self._commit()

    def _commit(self) -> None:
        if self._pending_time is None:
            return
        length = self._pending_time - self._previous_time
        self._previous_time = self._pending_time
        events = dict(self.state.events)
        for name, line in self._pending.items():
            before = events.get(name, EventState())
            counted = line.status == "counted"
            value = scaled(line)
            events[name] = EventState(
                status=line.status,
                reason=None if counted else f"<{line.status}>",
                total=before.total + (value or 0.0),
                last_value=value,
                last_interval=length if length > 0 else None,
                running_ratio=line.running_ratio if counted else None,
                unit=line.unit,
            )
        self.state.events = MappingProxyType(events)  # published whole, read-only
        self.state.intervals += 1
        self.state.error = None
        self._pending, self._pending_time = {}, None

    async def _reap(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(2):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        self._previous_time = 0.0
