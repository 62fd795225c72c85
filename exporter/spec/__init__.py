"""The panel spec (panels.json): one source for the Vue dashboard, the Grafana dashboards
and the perf event lists."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def _spec() -> dict[str, Any]:
    text = resources.files(__name__).joinpath("panels.json").read_text()
    spec: dict[str, Any] = json.loads(text)
    return spec


def load_panels() -> list[dict[str, Any]]:
    """The six panels, in dashboard order."""
    panels: list[dict[str, Any]] = _spec()["panels"]
    return panels


def load_tables() -> list[dict[str, Any]]:
    """The table panels (processes, services and containers), after the six."""
    tables: list[dict[str, Any]] = _spec()["tables"]
    return tables


HARDWARE_EVENTS: tuple[str, ...] = tuple(_spec()["perf_events"]["hardware"])
# The snapshot's sections, in order: one per collector (the filesystem collector is part of
# the disk section).
COLLECTOR_NAMES = (
    "cpu",
    "memory",
    "network",
    "disk",
    "perf_events",
    "memory_bandwidth",
    "processes",
    "cgroups",
)
SOFTWARE_EVENTS: tuple[str, ...] = tuple(_spec()["perf_events"]["software"])
