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
from pathlib import Path

import orjson

from exporter.config import load_settings
from exporter.runtime import Runtime
from exporter.sinks.writer import to_stored


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
