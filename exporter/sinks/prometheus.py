"""Prometheus exposition: a custom Collector over the sampler's latest snapshot.

Nothing is sampled at scrape time: a scrape renders what the last tick read, so scrapes
are cheap and never disturb the sampling schedule.
"""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Callable, Iterator
from functools import lru_cache

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.collectors.families import STABLE_TEXT, stable
from exporter.sampler import Sampler, Snapshot


class SnapshotCollector(Collector):
    """Exposes the latest snapshot's raw counters plus perfpulse's own health."""

    def __init__(self, latest: Callable[[], Snapshot | None], skipped: Callable[[], int]) -> None:
        self._latest = latest
        self._skipped = skipped

    def describe(self) -> list[Metric]:
        # Families depend on the machine (devices, CPUs); nothing to pre-declare.
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "perfpulse_build_info",
            "perfpulse build information; the value is always 1.",
            labels=("version", "python_version"),
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield CounterMetricFamily(
            "perfpulse_sampler_skipped_ticks_total",
            "Ticks skipped because a tick overran the sampling interval.",
            value=self._skipped(),
        )
        snapshot = self._latest()
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "perfpulse_last_snapshot_timestamp_seconds",
            "When the latest snapshot was taken, seconds since the epoch.",
            value=snapshot.timestamp.timestamp(),
        )
        success = GaugeMetricFamily(
            "perfpulse_collector_success",
            "1 if the collector produced data in the latest snapshot, else 0.",
            labels=("collector",),
        )
        duration = GaugeMetricFamily(
            "perfpulse_collector_duration_seconds",
            "Seconds the collector took in the latest snapshot.",
            labels=("collector",),
        )
        for name, result in snapshot.results.items():
            success.add_metric([name], 1.0 if result.ok else 0.0)
            duration.add_metric([name], result.duration_seconds)
            if result.sample is not None:
                yield from result.sample.metrics()
        yield success
        yield duration


class SelfCollector(Collector):
    """The standard process_* metrics of this process, as prometheus_client's
    ProcessCollector names and documents them, at less cost a scrape: /proc/self/stat in
    one read, the descriptor limit from getrlimit (not by parsing /proc/self/limits), the
    start time computed once."""

    def __init__(self, proc: str = "/proc") -> None:
        self._stat = f"{proc}/self/stat"
        self._fds = f"{proc}/self/fd"
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = resource.getpagesize()
        fields = self._fields()
        with open(f"{proc}/stat", "rb") as stat:
            btime = next(float(line.split()[1]) for line in stat if line.startswith(b"btime "))
        self._start = stable(
            GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=float(fields[19]) / self._ticks + btime,
            )
        )

    def _fields(self) -> list[bytes]:
        fd = os.open(self._stat, os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        return raw[raw.rindex(b")") + 1 :].split()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        fields = self._fields()
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=float(fields[20])
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            value=float(fields[21]) * self._page,
        )
        yield self._start
        yield CounterMetricFamily(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            value=(float(fields[11]) + float(fields[12])) / self._ticks,
        )
        yield GaugeMetricFamily(
            "process_open_fds", "Number of open file descriptors.", value=len(os.listdir(self._fds))
        )
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=float(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        )


def build_registry(sampler: Sampler) -> CollectorRegistry:
    """A fresh registry: perfpulse's snapshot metrics and the process_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.latest, lambda: sampler.skipped_ticks))
    registry.register(SelfCollector())
    return registry


# Text format 0.0.4, as node_exporter serves: understood by every Prometheus release.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# prometheus_client's type names as the 0.0.4 text format spells them.
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram",
               "unknown": "untyped"}  # fmt: skip
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")
_go_float: Callable[[float], str] = floatToGoString  # Go's formatting, as Prometheus parses


@lru_cache(maxsize=4096)
def _metric_name(name: str) -> str:
    return escape_metric_name(name)


@lru_cache(maxsize=4096)
def _header(name: str, kind: str, documentation: str) -> str:
    escaped = _metric_name(name)
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {escaped} {doc}\n# TYPE {escaped} {kind}\n"


@lru_cache(maxsize=16384)
def _labels(items: tuple[tuple[str, str], ...]) -> str:
    if not items:
        return ""
    pairs = ",".join(
        '{}="{}"'.format(
            escape_label_name(key),
            value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\""),
        )
        for key, value in items
    )
    return "{" + pairs + "}"


_NOT_STABLE = object()


def render(registry: Collector) -> bytes:
    """The registry in the Prometheus text format 0.0.4, byte for byte what
    prometheus_client's `generate_latest` writes, at a fraction of its cost.

    `generate_latest` validates and escapes every metric and label name and every label
    set on every scrape, although a host's names and label sets (CPUs, devices, modes)
    hardly ever change. Here each is escaped once and remembered (bounded caches): a
    scrape formats only the values, and a family marked `stable` not even those.
    """
    out: list[str] = []
    for metric in registry.collect():
        text = getattr(metric, STABLE_TEXT, _NOT_STABLE)
        if text is _NOT_STABLE:
            out.extend(_family_lines(metric))
            continue
        if text is None:
            text = "".join(_family_lines(metric))
            setattr(metric, STABLE_TEXT, text)
        out.append(text)  # type: ignore[arg-type]
    return "".join(out).encode()


def _family_lines(metric: Metric) -> list[str]:
    out: list[str] = []
    name = metric.name
    kind = metric.type
    if kind == "counter":
        name += "_total"
    elif kind == "info":
        name += "_info"
    out.append(_header(name, _TEXT_TYPES.get(kind, kind), metric.documentation))
    # OpenMetrics-only samples go, as gauges, after the family's own.
    special = {metric.name + suffix: suffix for suffix in _OPENMETRICS_ONLY}
    deferred: dict[str, list[str]] = {}
    for sample in metric.samples:
        line = _sample_line(sample.name, sample.labels, sample.value, sample.timestamp)
        suffix = special.get(sample.name)
        if suffix is None:
            out.append(line)
        else:
            deferred.setdefault(suffix, []).append(line)
    for suffix, lines in sorted(deferred.items()):
        out.append(_header(metric.name + suffix, "gauge", metric.documentation))
        out.extend(lines)
    return out


def _sample_line(name: str, labels: dict[str, str], value: float, timestamp: object | None) -> str:
    label_text = _labels(tuple(sorted(labels.items()))) if labels else ""
    stamp = "" if timestamp is None else f" {int(float(timestamp) * 1000):d}"  # type: ignore[arg-type]
    return f"{_metric_name(name)}{label_text} {_go_float(value)}{stamp}\n"
