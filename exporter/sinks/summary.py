"""The few figures of a snapshot that travel with its relay notice and that the fleet list
shows: what "how busy is this host" means in one row."""

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


def summarize(sections: dict[str, JSON]) -> dict[str, float | None]:
    """The figures the fleet list shows, from one snapshot's sections (None if unknown)."""
    summary: dict[str, float | None] = {}
    for name, section, path, scale in SUMMARY_FIELDS:
        node: Any = sections.get(section)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        ok = isinstance(node, int | float) and not isinstance(node, bool)
        summary[name] = float(node) * scale if ok else None
    return summary
