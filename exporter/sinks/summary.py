"""The few figures of a snapshot that travel with its relay notice and that the fleet list
shows: what "how busy is this host" means in one row, and who is busiest on it."""

from __future__ import annotations

from typing import Any

from exporter.collectors.base import JSON

SUMMARY_FIELDS = (
    ("cpu_busy_ratio", "cpu", ("usage_percent",), 0.01),
    ("memory_used_ratio", "memory", ("percent",), 0.01),
    ("network_receive_bytes_per_second", "network", ("total", "receive_bytes_per_second"), 1.0),
    ("network_transmit_bytes_per_second", "network", ("total", "transmit_bytes_per_second"), 1.0),
    ("disk_read_bytes_per_second", "disk", ("total", "read_bytes_per_second"), 1.0),
    ("disk_write_bytes_per_second", "disk", ("total", "written_bytes_per_second"), 1.0),
)


Summary = dict[str, float | str | None]
# The busiest process: its name, and its CPU share (100 is one core).
TOP_PROCESS = "top_process"
TOP_PROCESS_CPU = "top_process_cpu_percent"
MAX_NAME = 64
# The busiest service, container or pod (cgroups; slices hold others and are left out):
# its name, and its CPU share.
TOP_GROUP = "top_group"
TOP_GROUP_CPU = "top_group_cpu_percent"
GROUP_KINDS = ("service", "container", "pod")
# This host's firing alerts and the worst severity among them (alerts/), where it
# evaluates alerts.
ALERTS_FIRING = "alerts_firing"
ALERTS_WORST = "alerts_worst"


# Every key of a summary, in the order the fleet list and /api/hosts give them.
SUMMARY_KEYS = (
    *(name for name, *_ in SUMMARY_FIELDS),
    TOP_PROCESS,
    TOP_PROCESS_CPU,
    TOP_GROUP,
    TOP_GROUP_CPU,
    ALERTS_FIRING,
    ALERTS_WORST,
)


def summarize(sections: dict[str, JSON]) -> Summary:
    """The figures the fleet list shows, from one snapshot's sections (None if unknown)."""
    summary: Summary = {}
    for name, section, path, scale in SUMMARY_FIELDS:
        node: Any = sections.get(section)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        ok = isinstance(node, int | float) and not isinstance(node, bool)
        summary[name] = float(node) * scale if ok else None
    processes = (sections.get("processes") or {}).get("top") or []
    summary[TOP_PROCESS], summary[TOP_PROCESS_CPU] = _busiest(processes)
    groups = (sections.get("cgroups") or {}).get("groups") or []
    summary[TOP_GROUP], summary[TOP_GROUP_CPU] = _busiest(
        [g for g in groups if g.get("kind") in GROUP_KINDS]
    )
    return summary


def _busiest(entries: list[JSON]) -> tuple[str | None, float | None]:
    """The name and CPU share of the entry with the most CPU, or (None, None)."""
    if not entries:
        return None, None
    busiest = max(entries, key=lambda e: e.get("cpu_percent") or 0.0)
    return busiest["name"], busiest.get("cpu_percent")


def checked(summary: dict[str, object]) -> Summary:
    """A summary from a live row (anyone with database access can write one): the known
    keys, numbers as numbers, the process and group names as short printable strings."""
    clean: Summary = {name: _number(summary.get(name)) for name, *_ in SUMMARY_FIELDS}
    for key, share in ((TOP_PROCESS, TOP_PROCESS_CPU), (TOP_GROUP, TOP_GROUP_CPU)):
        name = summary.get(key)
        if isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable():
            clean[key] = name
            clean[share] = _number(summary.get(share))
        else:
            clean[key] = clean[share] = None
    clean[ALERTS_FIRING] = _number(summary.get(ALERTS_FIRING))
    severity = summary.get(ALERTS_WORST)
    if isinstance(severity, str) and 0 < len(severity) <= MAX_NAME and severity.isprintable():
        clean[ALERTS_WORST] = severity
    else:
        clean[ALERTS_WORST] = None
    return clean


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
