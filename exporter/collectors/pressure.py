"""Pressure stall information (PSI): /proc/pressure/{cpu,memory,io}, Linux 4.20 and later.

Each file says how much of the time some (or all) runnable tasks were stalled waiting for
the resource: running averages over 10, 60 and 300 s in percent, and the total stall time
in microseconds. The cpu, memory and disk collectors each read their resource's file and
carry it in their section; where the kernel has no PSI (too old, or booted with psi=0)
the section says why and nothing else changes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Unavailable, read_text
from exporter.collectors.families import counter
from exporter.collectors.sections import PressureData, PressureLine

# /proc/pressure file -> the name node_exporter's pressure collector uses in its metrics.
KINDS = {"some": "waiting", "full": "stalled"}


def parse_pressure(text: str) -> PressureData:
    """Parse one /proc/pressure file. `full` is absent for cpu before Linux 5.13."""
    lines: dict[str, PressureLine] = {}
    for raw in text.splitlines():
        kind, _, rest = raw.partition(" ")
        if kind not in KINDS:
            continue
        fields = dict(item.split("=", 1) for item in rest.split())
        lines[kind] = {
            "avg10": float(fields["avg10"]),
            "avg60": float(fields["avg60"]),
            "avg300": float(fields["avg300"]),
            "total_seconds": int(fields["total"]) / 1e6,
        }
    if "some" not in lines:
        raise ValueError("no 'some' line")
    return {"some": lines["some"], "full": lines.get("full")}


@dataclass(frozen=True, slots=True)
class PressureReading:
    """One resource's pressure in a tick, or why there is none."""

    resource: str  # cpu, memory or io, as the kernel names the file
    data: PressureData | None
    error: str | None

    def metrics(self) -> Iterator[Metric]:
        if self.data is None:
            return
        lines = {"some": self.data["some"], "full": self.data["full"]}
        for kind, line in lines.items():
            if line is None:
                continue
            yield counter(
                f"perfpulse_pressure_{self.resource}_{KINDS[kind]}_seconds_total",
                f"Seconds {'some' if kind == 'some' else 'all'} non-idle tasks were stalled "
                f"on {self.resource} (/proc/pressure/{self.resource} {kind} total).",
                line["total_seconds"],
            )


# For samples built without a pressure reading (tests, other sources).
NOT_READ = PressureReading("", None, "not read")


class Pressure:
    """Reads /proc/pressure/<resource> each tick; remembers once that the kernel has none."""

    def __init__(self, resource: str, proc_root: Path = Path("/proc")) -> None:
        self.resource = resource
        self.path = str(proc_root / "pressure" / resource)
        self._absent: str | None = None

    def read(self) -> PressureReading:
        if self._absent is not None:
            return PressureReading(self.resource, None, self._absent)
        try:
            data = parse_pressure(read_text(self.path))
        except Unavailable:
            self._absent = f"{self.path} does not exist (Linux before 4.20, or PSI off)"
            return PressureReading(self.resource, None, self._absent)
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:  # the file is there, PSI is off (psi=0)
                self._absent = f"PSI is disabled in this kernel ({os.strerror(exc.errno)})"
                return PressureReading(self.resource, None, self._absent)
            return PressureReading(self.resource, None, f"{self.path}: {exc.strerror}")
        except (ValueError, KeyError) as exc:
            return PressureReading(self.resource, None, f"{self.path}: unreadable ({exc})")
        return PressureReading(self.resource, data, None)
