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
# This host's firing alerts and the worst severity among them (alerts/), where it
# evaluates alerts.
ALERTS_FIRING = "alerts_firing"
ALERTS_WORST = "alerts_worst"


def summarize(sections: dict[str, JSON]) -> Summary:
    """The figures the fleet list shows, from one snapshot's sections (None if unknown)."""
    summary: Summary = {}
    for name, section, path, scale in SUMMARY_FIELDS:
        node: Any = sections.get(section)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        ok = isinstance(node, int | float) and not isinstance(node, bool)
        summary[name] = float(node) * scale if ok else None
    top = (sections.get("processes") or {}).get("top") or []
    busiest = max(top, key=lambda p: p.get("cpu_percent") or 0.0) if top else None
    summary[TOP_PROCESS] = busiest["name"] if busiest else None
    summary[TOP_PROCESS_CPU] = busiest.get("cpu_percent") if busiest else None
    return summary


def checked(summary: dict[str, object]) -> Summary:
    """A summary from a notice (anyone with database access can NOTIFY): the known keys,
    numbers as numbers, the process name as a short printable string."""
    clean: Summary = {name: _number(summary.get(name)) for name, *_ in SUMMARY_FIELDS}
    name = summary.get(TOP_PROCESS)
    if isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable():
        clean[TOP_PROCESS] = name
        clean[TOP_PROCESS_CPU] = _number(summary.get(TOP_PROCESS_CPU))
    else:
        clean[TOP_PROCESS] = clean[TOP_PROCESS_CPU] = None
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
