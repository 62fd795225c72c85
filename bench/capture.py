"""Capture: this machine's real snapshots at a steady interval, as the writer stores them.

`python -m bench capture --capture-seconds 3600 --capture-out FILE.jsonl.gz` runs the
machine's collectors (nothing else: no database, no server) and writes one JSON line per
snapshot in the spool's form (`timestamp`, `host`, `rows`: one (metric_type, JSON) pair
per stored section, the per-minute sections once a minute). The storage benchmark and the
storage tests replay such files at shifted times (`tests/fixtures/snapshots-1s.jsonl.gz`
is one).
"""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from exporter.config import load_settings
from exporter.runtime import Runtime
from exporter.sinks.writer import to_stored
from exporter.storage.ingest import StoredSnapshot
from exporter.storage.minutes import PER_MINUTE_TYPES

Rows = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Capture:
    """A captured run: each snapshot's offset from the first (seconds) and its rows."""

    first: datetime
    snapshots: tuple[tuple[float, Rows], ...]
    length: float  # seconds from the first snapshot to one interval past the last

    @classmethod
    def load(cls, path: Path | str) -> Capture:
        with gzip.open(path) as file:
            lines = [orjson.loads(line) for line in file.read().splitlines()]
        first = datetime.fromisoformat(lines[0]["timestamp"])
        snapshots = tuple(
            (
                (datetime.fromisoformat(line["timestamp"]) - first).total_seconds(),
                tuple((t, d) for t, d in line["rows"]),
            )
            for line in lines
        )
        spacing = snapshots[-1][0] / max(1, len(snapshots) - 1)
        return cls(first, snapshots, snapshots[-1][0] + spacing)

    def replay(
        self, count: int, start: datetime, host: str, *, every: int = 1, skip: int = 0
    ) -> list[StoredSnapshot]:
        """`count` snapshots from `start` as they were taken (their own spacing), starting
        over at the end of the capture; with `every`, one in `every` (a slower interval).
        `skip` starts that many (kept) snapshots in, so that a long replay can be written
        a slice at a time. A minute's account (processes, cgroups) names its minute: that
        moves with the snapshot."""
        out = []
        total = len(self.snapshots)
        for i in range(skip, skip + count):
            position = i * every
            offset, rows = self.snapshots[position % total]
            shift = (start - self.first) + timedelta(seconds=(position // total) * self.length)
            at = self.first + shift + timedelta(seconds=offset)
            out.append(StoredSnapshot(at, host, tuple(_moved(t, d, shift) for t, d in rows)))
        return out


def _moved(metric_type: str, text: str, shift: timedelta) -> tuple[str, str]:
    if metric_type not in PER_MINUTE_TYPES:
        return metric_type, text
    account = orjson.loads(text)
    account["start"] = (datetime.fromisoformat(account["start"]) + shift).isoformat()
    return metric_type, orjson.dumps(account).decode()


async def _capture(seconds: float, interval: float, out: Path) -> int:
    runtime = Runtime(load_settings(sampling_interval_seconds=interval, hostname="capture"))
    taken = 0
    async with runtime.sampling_only() as sampler:
        await runtime.perf_reported(within=3.0)
        await sampler.sample_once()  # rates need a previous reading
        loop = asyncio.get_running_loop()
        start = loop.time()
        with gzip.open(out, "wb") as file:
            while loop.time() - start < seconds:
                taken += 1
                await asyncio.sleep(max(0.0, start + taken * interval - loop.time()))
                stored = to_stored(await sampler.sample_once())
                line = {"timestamp": stored.timestamp.isoformat(), "rows": stored.rows}
                file.write(orjson.dumps(line) + b"\n")
                if taken % 300 == 0:
                    print(f"capture: {taken} snapshots", flush=True)
    return taken


def run(seconds: float, interval: float, out: str) -> dict[str, object]:
    started = time.time()
    taken = asyncio.run(_capture(seconds, interval, Path(out)))
    return {"snapshots": taken, "seconds": time.time() - started, "file": out}


def report(result: dict[str, object]) -> str:
    return f"{result['snapshots']} snapshots in {result['seconds']:.0f} s to {result['file']}"
