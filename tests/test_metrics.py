from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric

from exporter.collectors import build_collectors
from exporter.collectors.memory import MemoryCollector
from exporter.config import load_settings
from exporter.sampler import Sampler
from exporter.sinks.prometheus import SnapshotCollector, build_registry, render
from tests.test_memory import MEMINFO, VMSTAT_1


async def test_memory_exposition_matches_expected_text(proc, clock):
    proc.write("meminfo", MEMINFO)
    proc.write("vmstat", VMSTAT_1)
    collector = MemoryCollector(proc.root, clock=clock, page_size=4096)
    sampler = Sampler([collector], interval=1.0, deadline=0.5, host="h")
    await sampler.sample_once()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.latest, lambda: 0))
    text = render(registry).decode()
    # Leave out the series whose values depend on the run (version, time, duration).
    volatile = ("perfpulse_build_info", "perfpulse_last_snapshot", "perfpulse_collector_duration")
    body = "\n".join(
        line for line in text.splitlines() if not any(name in line for name in volatile)
    )
    assert body == EXPECTED_MEMORY.strip()


EXPECTED_MEMORY = """
# HELP perfpulse_sampler_skipped_ticks_total Ticks skipped because a tick overran the sampling interval.
# TYPE perfpulse_sampler_skipped_ticks_total counter
perfpulse_sampler_skipped_ticks_total 0.0
# HELP perfpulse_memory_total_bytes /proc/meminfo MemTotal.
# TYPE perfpulse_memory_total_bytes gauge
perfpulse_memory_total_bytes 8.192e+09
# HELP perfpulse_memory_free_bytes /proc/meminfo MemFree.
# TYPE perfpulse_memory_free_bytes gauge
perfpulse_memory_free_bytes 1.024e+09
# HELP perfpulse_memory_available_bytes /proc/meminfo MemAvailable.
# TYPE perfpulse_memory_available_bytes gauge
perfpulse_memory_available_bytes 6.144e+09
# HELP perfpulse_memory_buffers_bytes /proc/meminfo Buffers.
# TYPE perfpulse_memory_buffers_bytes gauge
perfpulse_memory_buffers_bytes 2.048e+08
# HELP perfpulse_memory_cached_bytes /proc/meminfo Cached.
# TYPE perfpulse_memory_cached_bytes gauge
perfpulse_memory_cached_bytes 3.072e+09
# HELP perfpulse_memory_slab_reclaimable_bytes /proc/meminfo SReclaimable.
# TYPE perfpulse_memory_slab_reclaimable_bytes gauge
perfpulse_memory_slab_reclaimable_bytes 1.024e+08
# HELP perfpulse_memory_shared_bytes /proc/meminfo Shmem.
# TYPE perfpulse_memory_shared_bytes gauge
perfpulse_memory_shared_bytes 5.12e+07
# HELP perfpulse_memory_swap_total_bytes /proc/meminfo SwapTotal.
# TYPE perfpulse_memory_swap_total_bytes gauge
perfpulse_memory_swap_total_bytes 2.048e+09
# HELP perfpulse_memory_swap_free_bytes /proc/meminfo SwapFree.
# TYPE perfpulse_memory_swap_free_bytes gauge
perfpulse_memory_swap_free_bytes 1.536e+09
# HELP perfpulse_memory_swap_in_bytes_total Bytes swapped in from disk (pswpin x page size).
# TYPE perfpulse_memory_swap_in_bytes_total counter
perfpulse_memory_swap_in_bytes_total 409600.0
# HELP perfpulse_memory_swap_out_bytes_total Bytes swapped out to disk (pswpout x page size).
# TYPE perfpulse_memory_swap_out_bytes_total counter
perfpulse_memory_swap_out_bytes_total 819200.0
# HELP perfpulse_collector_success 1 if the collector produced data in the latest snapshot, else 0.
# TYPE perfpulse_collector_success gauge
perfpulse_collector_success{collector="memory"} 1.0
"""


async def _registry_of_this_machine() -> CollectorRegistry:
    settings = load_settings()
    sampler = Sampler(build_collectors(settings), interval=1.0, deadline=0.5, host="h")
    await sampler.sample_once()
    await sampler.sample_once()
    return build_registry(sampler)


async def test_every_counter_ends_in_total_and_no_name_ends_in_percent():
    registry = await _registry_of_this_machine()
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
        assert not family.name.endswith("_percent"), family.name
        assert family.documentation, f"{family.name} has no help text"
    own = {n for n in names if not n.startswith("process_")}
    assert own and all(n.startswith("perfpulse_") for n in own), sorted(own)
    assert "perfpulse_cpu_seconds_total" in names


async def test_counters_are_raw_totals_not_rates():
    registry = await _registry_of_this_machine()
    value = registry.get_sample_value("perfpulse_context_switches_total")
    with open("/proc/stat") as stat:
        ctxt = next(int(line.split()[1]) for line in stat if line.startswith("ctxt"))
    assert value is not None and 0 < value <= ctxt


async def test_collector_health_series_for_all_six():
    registry = await _registry_of_this_machine()
    success = {
        name: registry.get_sample_value("perfpulse_collector_success", {"collector": name})
        for name in ("cpu", "memory", "network", "disk", "perf_events", "memory_bandwidth")
    }
    assert success == {
        "cpu": 1.0,
        "memory": 1.0,
        "network": 1.0,
        "disk": 1.0,
        "perf_events": 0.0,  # built without the perf child here: disabled
        "memory_bandwidth": 1.0,
    }
    assert (
        registry.get_sample_value("perfpulse_collector_duration_seconds", {"collector": "cpu"}) >= 0
    )


class _Frozen:
    """Families collected once, handed out again on every collect (for comparing two
    renderers on the same data)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def test_render_writes_what_generate_latest_writes_for_this_machines_snapshot():
    settings = load_settings()
    sampler = Sampler(build_collectors(settings), interval=1.0, deadline=0.5, host="h")
    await sampler.sample_once()
    await sampler.sample_once()
    families = list(SnapshotCollector(lambda: sampler.latest, lambda: 3).collect())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Frozen(families))
    assert len(families) > 20
    assert render(registry) == generate_latest(registry)
    # The second render comes from the remembered names and label sets: still the same.
    assert render(registry) == generate_latest(registry)


def test_render_escapes_and_orders_like_generate_latest():
    tricky = GaugeMetricFamily(
        "perfpulse_test_gauge", 'help with \\ and\nnewline "q"', labels=("z", "a")
    )
    tricky.add_metric(["back\\slash", 'quote " and\nnewline'], 1.5)
    tricky.add_metric(["é ünïcode", ""], math.inf)
    tricky.add_metric(["nan", "neg"], math.nan)
    tricky.add_metric(["big", "small"], 1234567890123.0, timestamp=1700000000.25)
    tricky.add_metric(["minus", "inf"], -math.inf)
    created = CounterMetricFamily("perfpulse_test_requests", "with created", labels=("code",))
    created.add_metric(["200"], 7, created=1700000000.0)
    created.add_metric(["500"], 0, created=1700000001.0)
    info = InfoMetricFamily("perfpulse_test", "an info family", value={"version": "1.2"})
    histogram = HistogramMetricFamily(
        "perfpulse_test_seconds", "a histogram", buckets=[("0.1", 1), ("+Inf", 3)], sum_value=0.4
    )
    odd_name = GaugeMetricFamily("perfpulse.test-odd", "a name outside the legacy set", value=2)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Frozen([tricky, created, info, histogram, odd_name]))
    expected = generate_latest(registry)
    assert render(registry) == expected
    assert b'z="back\\\\slash"' in expected  # the case is really exercised


def test_a_stable_family_is_formatted_once_and_a_new_one_again():
    from prometheus_client.core import GaugeMetricFamily

    from exporter.collectors.families import stable
    from exporter.sinks.prometheus import render

    family = stable(GaugeMetricFamily("perfpulse_test_groups", "Groups.", labels=("g",)))
    family.add_metric(["a"], 1.0)

    class Static:
        def __init__(self) -> None:
            self.families = [family]

        def collect(self):  # type: ignore[no-untyped-def]
            return iter(self.families)

    source = Static()
    registry = CollectorRegistry()
    registry.register(source)  # type: ignore[arg-type]
    first = render(registry)
    family.samples[0] = family.samples[0]._replace(value=2.0)  # what a stable one must not do
    assert render(registry) == first  # formatted once: the change is not seen
    fresh = stable(GaugeMetricFamily("perfpulse_test_groups", "Groups.", labels=("g",)))
    fresh.add_metric(["a"], 3.0)
    source.families = [fresh]  # the next scan's family
    assert b'perfpulse_test_groups{g="a"} 3.0' in render(registry)
    assert render(registry) == generate_latest(registry)


def test_own_process_metrics_match_prometheus_clients_process_collector():
    """The process_* families are prometheus_client's (names, types, help texts) with the
    same values, read from this process's /proc."""
    from prometheus_client import ProcessCollector

    from exporter.sinks.prometheus import SelfCollector

    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    ProcessCollector(registry=theirs_registry)
    ours_registry.register(SelfCollector())
    theirs = {f.name: f for f in theirs_registry.collect()}
    ours = {f.name: f for f in ours_registry.collect()}
    assert sorted(ours) == sorted(theirs)
    for name, family in theirs.items():
        assert (ours[name].type, ours[name].documentation) == (family.type, family.documentation)
        mine, value = ours[name].samples[0].value, family.samples[0].value
        if name in ("process_start_time_seconds", "process_max_fds"):
            assert mine == pytest.approx(value, abs=0.01), name
        elif name == "process_open_fds":
            assert abs(mine - value) <= 2, name  # each reader holds a descriptor of its own
        elif name == "process_cpu_seconds_total":
            assert 0 <= mine - value <= 0.5, name  # read a moment later
        else:  # memory: within a few pages of the other reading
            assert mine == pytest.approx(value, rel=0.05), name
    assert generate_latest(ours_registry).count(b"\nprocess_") >= 6
