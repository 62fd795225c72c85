"""The numeric fields of each snapshot section that charts plot, and their JSON paths.

Every number of a section is stored (exporter/storage/paths.py names them); these are the
ones the history API returns when no `field` is asked for, and the ones metrics_rollup_1m
keeps for SQL readers such as Grafana. The order of each list is the position in
metrics_rollup_1m's arrays: append new fields at the end, never reorder or remove
(tests/test_history.py guards this). A field that must go is replaced in place by a
migration that clears its stored values (0003 did so for task-clock).
"""

from __future__ import annotations

import functools
from typing import Any

from exporter.storage.chunks import getter
from exporter.storage.paths import render

FIELDS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "cpu": (
        ("usage_percent", ("usage_percent",)),
        ("iowait_percent", ("modes_percent", "iowait")),
        ("steal_percent", ("modes_percent", "steal")),
        ("load1", ("load_average", "1m")),
        ("context_switches_per_second", ("context_switches_per_second",)),
        ("pressure_some_percent", ("pressure", "some", "avg10")),
    ),
    "memory": (
        ("percent", ("percent",)),
        ("used_bytes", ("used_bytes",)),
        ("available_bytes", ("available_bytes",)),
        ("cached_bytes", ("cached_bytes",)),
        ("swap_percent", ("swap_percent",)),
        ("swap_used_bytes", ("swap_used_bytes",)),
        ("pressure_some_percent", ("pressure", "some", "avg10")),
    ),
    "network": (
        ("receive_bytes_per_second", ("total", "receive_bytes_per_second")),
        ("transmit_bytes_per_second", ("total", "transmit_bytes_per_second")),
        ("receive_packets_per_second", ("total", "receive_packets_per_second")),
        ("transmit_packets_per_second", ("total", "transmit_packets_per_second")),
        ("receive_errors_per_second", ("total", "receive_errors_per_second")),
        ("transmit_errors_per_second", ("total", "transmit_errors_per_second")),
    ),
    "disk": (
        ("read_bytes_per_second", ("total", "read_bytes_per_second")),
        ("written_bytes_per_second", ("total", "written_bytes_per_second")),
        ("busy_percent", ("total", "busy_percent")),
        ("reads_completed_per_second", ("total", "reads_completed_per_second")),
        ("writes_completed_per_second", ("total", "writes_completed_per_second")),
        ("pressure_some_percent", ("pressure", "some", "avg10")),
    ),
    "perf_events": (
        ("ipc", ("ipc",)),
        ("cache_miss_ratio", ("cache_miss_ratio",)),
        ("branch_miss_ratio", ("branch_miss_ratio",)),
        # Position 4 held task-clock ("CPUs busy"), which perf stat -a makes equal to the
        # number of CPUs; migration 0003 cleared its stored values.
        ("cpu_migrations_per_second", ("rates", "cpu-migrations")),
        ("context_switches_per_second", ("rates", "context-switches")),
        ("page_faults_per_second", ("rates", "page-faults")),
        ("frontend_stall_ratio", ("frontend_stall_ratio",)),
        ("backend_stall_ratio", ("backend_stall_ratio",)),
    ),
    "memory_bandwidth": (
        ("read_bytes_per_second", ("read_bytes_per_second",)),
        ("write_bytes_per_second", ("write_bytes_per_second",)),
        ("pgpgin_bytes_per_second", ("vmstat", "pgpgin_bytes_per_second")),
        ("pgpgout_bytes_per_second", ("vmstat", "pgpgout_bytes_per_second")),
        ("page_faults_per_second", ("vmstat", "page_faults_per_second")),
        ("total_bytes_per_second", ("total_bytes_per_second",)),
    ),
}

METRIC_TYPES = tuple(FIELDS)


def keys(metric_type: str) -> list[str]:
    """The plotted fields' stored keys (paths), in rollup order."""
    return [render(path) for _, path in FIELDS[metric_type]]


@functools.cache
def positions(metric_type: str) -> dict[str, int]:
    """Stored key -> its index in the section's `plotted` array (the rollup order)."""
    return {key: i for i, key in enumerate(keys(metric_type))}


@functools.cache
def _getters(metric_type: str) -> tuple[Any, ...]:
    return tuple(getter(path) for _, path in FIELDS[metric_type])


def plotted(metric_type: str, document: object) -> list[int | float | None] | None:
    """The section's plotted numbers in rollup order (None where a field is absent or not
    a number), or None for a section that has no plotted fields: what the hot tier's
    `plotted` column holds beside the JSON (migration 0011)."""
    if metric_type not in FIELDS:
        return None
    return [get(document) for get in _getters(metric_type)]


def sql_path(path: tuple[str, ...]) -> str:
    """A constant jsonb path literal ('{total,receive_bytes_per_second}'); paths are ours."""
    return "'{" + ",".join(path) + "}'"
