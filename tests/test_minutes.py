"""Per-minute accounts merged into wider buckets (exporter/storage/minutes.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from exporter.storage.minutes import buckets, merge_cgroups, merge_processes

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def _process(pid: int, name: str, cpu: float, rss: int, read: int = 0, write: int = 0) -> dict:
    return {
        "pid": pid, "name": name, "command": name, "user": "root", "cgroup": "",
        "cpu_seconds": cpu, "rss_bytes": rss, "read_bytes": read, "write_bytes": write,
    }  # fmt: skip


def test_processes_add_up_cpu_and_bytes_and_keep_the_peak_memory():
    first = {"start": "2026-12-04T10:00:00+00:00", "top": [_process(1, "a", 10, 100, 5, 5)]}
    second = {
        "start": "2026-12-04T10:01:00+00:00",
        "top": [_process(1, "a", 20, 50, 1, 1), _process(2, "b", 40, 10)],
    }
    merged = merge_processes([first, second], top=10)
    assert [(p["name"], p["cpu_seconds"], p["rss_bytes"]) for p in merged] == [
        ("b", 40, 10),
        ("a", 30, 100),
    ]
    assert merged[1]["read_bytes"] == 6 and merged[1]["write_bytes"] == 6


def test_the_top_of_each_measure_survives_a_merge():
    minute = {
        "start": "2026-12-04T10:00:00+00:00",
        "top": [
            _process(1, "cpu", 50, 1),
            _process(2, "memory", 0.1, 10_000),
            _process(3, "io", 0.1, 1, write=1 << 30),
            _process(4, "nothing", 0.2, 2),
        ],
    }
    assert [p["name"] for p in merge_processes([minute], top=1)] == ["cpu", "memory", "io"]


def test_a_reused_pid_under_another_name_is_another_process():
    minute = {
        "start": "2026-12-04T10:00:00+00:00",
        "top": [_process(7, "old", 1, 1), _process(7, "new", 2, 1)],
    }
    assert {p["name"] for p in merge_processes([minute], top=10)} == {"old", "new"}


def test_cgroups_merge_by_path():
    group = {"path": "a.service", "kind": "service", "name": "a.service"}
    minutes = [
        {"start": "x", "groups": [{**group, "cpu_seconds": 1.5, "memory_bytes": 10}]},
        {"start": "y", "groups": [{**group, "cpu_seconds": 2.0, "memory_bytes": None}]},
    ]
    (merged,) = merge_cgroups(minutes, top=10)
    assert (merged["cpu_seconds"], merged["memory_bytes"]) == (3.5, 10)


def test_minutes_land_in_aligned_buckets():
    rows = []
    for minute in range(5):
        start = datetime(2026, 12, 4, 10, minute, tzinfo=UTC)
        rows.append((start, {"start": start.isoformat(), "top": [_process(1, "a", 1, 1)]}))
    result = buckets(rows, "processes", timedelta(minutes=2), ORIGIN, top=10)
    assert [(b["start"].minute, b["minutes"]) for b in result] == [(0, 2), (2, 2), (4, 1)]
    assert result[0]["top"][0]["cpu_seconds"] == 2
