"""Per-minute accounts read back (who was on top, which groups used what), merged into
wider buckets when a range holds more minutes than the points asked for.

The processes and cgroups sections are stored once a minute, as that minute's account
(exporter/sinks/writer.py); a bucket of several minutes adds up CPU seconds and bytes, and
keeps the peak memory, per process (pid and name) or per group (path), then keeps the top
`top` of each measure as the minute did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

JSON = dict[str, Any]
PER_MINUTE_TYPES = ("processes", "cgroups")


def bucket_start(moment: datetime, origin: datetime, width: timedelta) -> datetime:
    return origin + (moment - origin) // width * width


def merge_processes(minutes: Iterable[JSON], top: int) -> list[JSON]:
    """The top processes over several minutes' accounts."""
    merged: dict[tuple[int, str], JSON] = {}
    for minute in minutes:
        for entry in minute.get("top", []):
            key = (entry["pid"], entry["name"])
            into = merged.get(key)
            if into is None:
                merged[key] = dict(entry)
                continue
            into["cpu_seconds"] = round(into["cpu_seconds"] + entry["cpu_seconds"], 3)
            into["rss_bytes"] = max(into["rss_bytes"], entry["rss_bytes"])
            into["read_bytes"] += entry["read_bytes"]
            into["write_bytes"] += entry["write_bytes"]
    return _union(
        list(merged.values()),
        [
            lambda e: e["cpu_seconds"],
            lambda e: e["rss_bytes"],
            lambda e: e["read_bytes"] + e["write_bytes"],
        ],
        top,
    )


def merge_cgroups(minutes: Iterable[JSON], top: int) -> list[JSON]:
    """Every group's CPU seconds and peak memory over several minutes, busiest first."""
    merged: dict[str, JSON] = {}
    for minute in minutes:
        for entry in minute.get("groups", []):
            into = merged.get(entry["path"])
            if into is None:
                merged[entry["path"]] = dict(entry)
                continue
            into["cpu_seconds"] = round(into["cpu_seconds"] + entry["cpu_seconds"], 3)
            peaks = [m for m in (into["memory_bytes"], entry["memory_bytes"]) if m is not None]
            into["memory_bytes"] = max(peaks) if peaks else None
    groups = sorted(
        merged.values(), key=lambda e: (e["cpu_seconds"], e["memory_bytes"] or 0), reverse=True
    )
    return groups[:top]


def _union(entries: list[JSON], measures: Sequence[Callable[[JSON], float]], n: int) -> list[JSON]:
    chosen: dict[int, JSON] = {}
    for measure in measures:
        for entry in sorted(entries, key=measure, reverse=True)[:n]:
            if measure(entry) > 0:
                chosen[id(entry)] = entry
    return sorted(chosen.values(), key=measures[0], reverse=True)


def buckets(
    rows: Sequence[tuple[datetime, JSON]],
    metric_type: str,
    width: timedelta,
    origin: datetime,
    top: int,
) -> list[JSON]:
    """Rows of (stored at, minute account) into buckets of `width`, each merged."""
    grouped: dict[datetime, list[JSON]] = {}
    for _, minute in rows:
        start = datetime.fromisoformat(minute["start"])
        grouped.setdefault(bucket_start(start, origin, width), []).append(minute)
    result = []
    for start in sorted(grouped):
        minutes = grouped[start]
        if metric_type == "processes":
            result.append(
                {"start": start, "minutes": len(minutes), "top": merge_processes(minutes, top)}
            )
        else:
            result.append(
                {"start": start, "minutes": len(minutes), "groups": merge_cgroups(minutes, top)}
            )
    return result
