"""Small builders for Prometheus metric families (prometheus_client's core types)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

Rows = Iterable[tuple[Sequence[str], float]]

# A family built once and yielded unchanged scrape after scrape carries its rendered text
# here (the /metrics renderer fills it at the first scrape: exporter/sinks/prometheus.py).
STABLE_TEXT = "_perfpulse_text"


def stable(metric: Metric) -> Metric:
    """Mark a family that will not change once built: /metrics formats it once."""
    setattr(metric, STABLE_TEXT, None)
    return metric


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def labeled_gauge(name: str, doc: str, labels: Sequence[str], rows: Rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def labeled_counter(name: str, doc: str, labels: Sequence[str], rows: Rows) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(list(values), value)
    return family
