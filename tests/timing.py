"""Time bounds that hold on a busy machine: a test that bounds a time to prove a behaviour
(the loop is not starved, a cached check skips bcrypt) compares it with a quiet baseline
measured in the same test, on the same machine under the same load, and never with a
fixed figure alone. The figures themselves are the benchmarks' (bench/)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import httpx


def quiet(measure: Callable[[], float], count: int = 15) -> float:
    """The median of `count` runs of `measure`, with nothing else going on."""
    samples = []
    for _ in range(count):
        samples.append(measure())
        time.sleep(0.02)
    return statistics.median(samples)


def request_seconds(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    client.get(url).raise_for_status()
    return time.perf_counter() - started


def bound(baseline: float, ratio: float, floor: float) -> float:
    """`ratio` times the baseline, and never below `floor` (a quiet machine's baseline is
    so small that scheduling noise alone would cross a pure ratio)."""
    return max(floor, ratio * baseline)
