"""Hardware and software performance counters, from the supervised perf child."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Unavailable
from exporter.collectors.families import labeled_gauge
from exporter.collectors.perfstat import IMC_EVENTS, EventState, PerfStat
from exporter.collectors.sections import PerfEventsData

# perf reports task-clock in milliseconds; everything else is a count.
_SECONDS_PER_UNIT = {"msec": 1e-3}


def _metric_name(event: str, unit: str) -> str:
    """perfpulse_perf_<event>_total; task-clock, a time, becomes ..._seconds_total."""
    suffix = "_seconds_total" if unit in _SECONDS_PER_UNIT else "_total"
    return "perfpulse_perf_" + event.replace("-", "_") + suffix


def _ratio(numerator: EventState | None, denominator: EventState | None) -> float | None:
    """A derived ratio, only from events that were actually counted in the last interval."""
    if numerator is None or denominator is None:
        return None
    if not (numerator.available and denominator.available):
        return None
    if numerator.last_value is None or not denominator.last_value:
        return None
    return numerator.last_value / denominator.last_value


@dataclass(frozen=True, slots=True)
class PerfSample:
    """One perf interval as it was when the tick read it (EventState values never change)."""

    events: Mapping[str, EventState]
    interval: float | None
    warming_up: bool = False  # perf runs but has not reported its first interval yet

    def _base(self, event: EventState, value: float | None) -> float | None:
        return None if value is None else value * _SECONDS_PER_UNIT.get(event.unit, 1.0)

    def to_dict(self) -> PerfEventsData:
        e = self.events
        rates = {name: self._base(s, s.rate) for name, s in e.items() if s.available}
        return {
            "warming_up": self.warming_up,
            "interval_seconds": self.interval,
            "ipc": _ratio(e.get("instructions"), e.get("cycles")),
            "cache_miss_ratio": _ratio(e.get("cache-misses"), e.get("cache-references")),
            "branch_miss_ratio": _ratio(e.get("branch-misses"), e.get("branch-instructions")),
            "frontend_stall_ratio": _ratio(e.get("stalled-cycles-frontend"), e.get("cycles")),
            "backend_stall_ratio": _ratio(e.get("stalled-cycles-backend"), e.get("cycles")),
            "rates": rates,
            "events": {
                name: {
                    "available": s.available,
                    "reason": s.reason,
                    "per_second": self._base(s, s.rate),
                    "total": self._base(s, s.total) if s.available or s.total else None,
                    "running_ratio": s.running_ratio,
                }
                for name, s in e.items()
            },
        }

    def metrics(self) -> Iterator[Metric]:
        for name, state in self.events.items():
            if state.total or state.available:
                yield CounterMetricFamily(
                    _metric_name(name, state.unit),
                    f"perf event {name}, scaled for multiplexing"
                    + (" (seconds)" if state.unit == "msec" else "")
                    + ".",
                    value=self._base(state, state.total),
                )
        yield labeled_gauge(
            "perfpulse_perf_event_available",
            "1 if perf counted the event in its last interval, else 0.",
            ("event",),
            (((name,), 1.0 if s.available else 0.0) for name, s in self.events.items()),
        )
        yield labeled_gauge(
            "perfpulse_perf_running_ratio",
            "Share of the last interval the event was on the PMU (below 1: multiplexed).",
            ("event",),
            (
                ((name,), s.running_ratio)
                for name, s in self.events.items()
                if s.running_ratio is not None
            ),
        )


class PerfEventsCollector:
    """Reads the perf child's latest interval; never waits on perf."""

    name = "perf_events"
    blocking = False  # reads shared state only

    def __init__(self, perf: PerfStat) -> None:
        self.perf = perf

    def collect(self) -> PerfSample:
        state = self.perf.state
        if state.intervals == 0 and state.restarts == 0:
            # perf's first interval is still to come: available, no values yet.
            return PerfSample({}, None, warming_up=True)
        if state.error is not None:
            raise Unavailable(state.error)
        core = {
            name: s for name, s in state.events.items() if not any(x in name for x in IMC_EVENTS)
        }
        if not any(s.available for s in core.values()):
            reasons = sorted({s.reason for s in core.values() if s.reason})
            raise Unavailable(
                "no event could be counted: " + ", ".join(reasons) if reasons else "no data yet"
            )
        return PerfSample(core, self.perf.interval_ms / 1000)
