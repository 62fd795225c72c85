"""Network: bytes, packets, errors and drops per interface, from /proc/net/dev."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import JSON, Clock, LastReading, rates, read_text, sum_rates
from exporter.collectors.families import labeled_counter
from exporter.collectors.sections import InterfaceEntry, NetworkData

# Column order of /proc/net/dev after the interface name.
RECEIVE = ("bytes", "packets", "errors", "drops", "fifo", "frame", "compressed", "multicast")
TRANSMIT = ("bytes", "packets", "errors", "drops", "fifo", "collisions", "carrier", "compressed")
# What the snapshot and /metrics carry, per direction.
EXPORTED = ("bytes", "packets", "errors", "drops")
COUNTERS = tuple(f"{d}_{c}" for d in ("receive", "transmit") for c in EXPORTED)

# Loopback never leaves the machine: kept per interface, left out of the total.
DEFAULT_TOTAL_EXCLUDE = r"^lo$"
_PAST = {"receive": "received", "transmit": "transmitted"}


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """Per interface: `receive_bytes`, `transmit_packets`, ... as in `COUNTERS`."""
    result: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        values = [int(v) for v in rest.split()]
        if len(values) < len(RECEIVE) + len(TRANSMIT):
            continue
        row = {f"receive_{c}": v for c, v in zip(RECEIVE, values, strict=False)}
        row.update(
            {f"transmit_{c}": v for c, v in zip(TRANSMIT, values[len(RECEIVE) :], strict=False)}
        )
        result[name.strip()] = {key: row[key] for key in COUNTERS}
    return result


def total_of(interfaces: dict[str, dict[str, int]], exclude: re.Pattern[str]) -> dict[str, int]:
    total = dict.fromkeys(COUNTERS, 0)
    for name, row in interfaces.items():
        if not exclude.search(name):
            for key in COUNTERS:
                total[key] += row[key]
    return total


@dataclass(frozen=True, slots=True)
class NetworkSample:
    interfaces: dict[str, dict[str, int]]
    previous: dict[str, dict[str, int]] | None
    elapsed: float | None
    total_exclude: re.Pattern[str]
    kinds: dict[str, str | None]

    def to_dict(self) -> NetworkData:
        before = self.previous
        per_second = {
            name: rates(row, before.get(name) if before else None, self.elapsed)
            for name, row in self.interfaces.items()
        }
        # The total rate adds the interfaces seen twice: one that just appeared has no
        # rate yet, and its lifetime bytes must not show up as a burst.
        counted = [n for n in self.interfaces if not self.total_exclude.search(n)]
        total_rates = (
            sum_rates((per_second[n] for n in counted if n in before), COUNTERS)
            if before is not None
            else dict.fromkeys(COUNTERS)
        )
        return {
            "total": _combine(total_of(self.interfaces, self.total_exclude), total_rates),
            "interfaces": {
                name: _combine(
                    row,
                    per_second[name],
                    self.kinds.get(name),
                    not self.total_exclude.search(name),
                )
                for name, row in self.interfaces.items()
            },
        }

    def metrics(self) -> Iterator[Metric]:
        for key in COUNTERS:
            direction, what = key.split("_", 1)
            yield labeled_counter(
                f"perfpulse_network_{key}_total",
                f"{what.capitalize()} {_PAST[direction]} per interface (from /proc/net/dev).",
                ("device",),
                (((name,), row[key]) for name, row in self.interfaces.items()),
            )


def _combine(
    row: dict[str, int],
    per_second: dict[str, float | None],
    kind: str | None = None,
    in_total: bool | None = None,
) -> InterfaceEntry:
    out: JSON = {f"{key}_total": value for key, value in row.items()}
    out.update({f"{key}_per_second": value for key, value in per_second.items()})
    if in_total is not None:
        out["kind"] = kind
        out["in_total"] = in_total
    return cast(InterfaceEntry, out)  # keys from COUNTERS; tests/test_sections.py checks


class NetworkCollector:
    """Reads /proc/net/dev once per tick; keeps the previous reading for rates."""

    name = "network"
    blocking = False  # procfs only

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        clock: Clock = time.monotonic,
        total_exclude: str = DEFAULT_TOTAL_EXCLUDE,
        sys_root: Path = Path("/sys"),
    ) -> None:
        self.proc_root = proc_root
        self.clock = clock
        self.total_exclude = re.compile(total_exclude)
        self._last: LastReading[dict[str, dict[str, int]]] = LastReading()
        self._net_dev_path = str(proc_root / "net/dev")
        self.sys_root = sys_root
        self._kinds: dict[str, str | None] = {}

    def collect(self) -> NetworkSample:
        now = self.clock()
        interfaces = parse_net_dev(read_text(self._net_dev_path))
        previous, elapsed = self._last.swap(now, interfaces)
        if interfaces.keys() != self._kinds.keys():
            self._kinds = {name: self._kind(name) for name in interfaces}
        return NetworkSample(interfaces, previous, elapsed, self.total_exclude, self._kinds)

    def _kind(self, name: str) -> str | None:
        """loopback, virtual (a bridge, veth, tunnel, ifb: its sysfs node is under
        devices/virtual) or physical; None where sysfs does not say. Read once per
        interface name."""
        if name == "lo":
            return "loopback"
        try:
            target = os.readlink(self.sys_root / "class/net" / name)
        except OSError:
            return None
        return "virtual" if "/devices/virtual/" in target else "physical"
