"""Prometheus exposition: a custom Collector over the sampler's latest snapshot.

Nothing is sampled at scrape time: a scrape renders what the last tick read, so scrapes
are cheap and never disturb the sampling schedule.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
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


def build_registry(sampler: Sampler) -> CollectorRegistry:
    """A fresh registry: perfpulse's snapshot metrics and the process_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.latest, lambda: sampler.skipped_ticks))
    ProcessCollector(registry=registry)
    return registry
