"""The processes collector: its parsers on fixture strings, the collector on a fixture /proc
with exact arithmetic, and then on this machine's real kernel."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collectors.processes import (
    ProcessesCollector,
    hidepid,
    parse_busy_ticks,
    parse_cgroup,
    parse_cmdline,
    parse_io,
    parse_io_bytes,
    parse_mem_available,
    parse_paged_bytes,
    parse_stat,
    union_top,
)
from tests.conftest import FakeClock, ProcTree

# A real /proc/PID/stat line, with a name that holds a space and parentheses.
STAT = (
    "4711 (my (odd) name) S 1 4711 4711 0 -1 4194560 1203 0 0 0 "
    "250 50 0 0 20 0 3 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 "
    "0 0 0 17 1 0 0 0 0 0"
)
IO = (
    "rchar: 8000\nwchar: 4000\nsyscr: 10\nsyscw: 5\nread_bytes: 4096\n"
    "write_bytes: 8192\ncancelled_write_bytes: 0\n"
)


def test_parse_stat_counts_fields_from_the_last_parenthesis():
    stat = parse_stat(STAT)
    assert (stat.pid, stat.name, stat.state, stat.ppid) == (4711, "my (odd) name", "S", 1)
    assert stat.cpu_ticks == 300  # utime 250 + stime 50
    assert (stat.threads, stat.start_ticks, stat.rss_pages) == (3, 12345, 2560)


def test_parse_io_reads_what_reached_the_block_layer():
    assert parse_io(IO) == (4096, 8192)
    assert parse_io_bytes(IO.encode()) == (4096, 8192)
    # Another layout (say a future kernel adds a line first) still parses by name.
    assert parse_io_bytes(b"extra: 1\n" + IO.encode()) == (4096, 8192)


def test_union_top_leaves_out_zeros_and_what_is_under_a_measures_floor():
    cpu = {"a": 50.0, "b": 0.05, "c": 0.0, "d": 3.0}
    memory = {"a": 1.0, "b": 0.0, "c": 5.0, "d": 0.0}
    measures = [cpu.__getitem__, memory.__getitem__]
    # b is third by CPU, but under the 0.1 floor and nowhere by memory.
    assert union_top(list(cpu), measures, 3, (0.1, 0.0)) == ["a", "d", "c"]
    assert union_top(list(cpu), measures, 3) == ["a", "d", "b", "c"]


def test_parse_cmdline():
    assert parse_cmdline(b"postgres: checkpointer \0\0", "postgres") == "postgres: checkpointer"
    assert parse_cmdline(b"/usr/bin/python3\0-m\0http.server\0", "python3") == (
        "/usr/bin/python3 -m http.server"
    )
    assert parse_cmdline(b"", "kworker/0:1") == "[kworker/0:1]"
    long = parse_cmdline(b"x" * 500, "x", limit=20)
    assert len(long) == 20 and long.endswith("\u2026")


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("0::/system.slice/nginx.service\n", "system.slice/nginx.service"),
        # Hybrid: the unified line names the group, whatever the v1 lines say.
        (
            "12:memory:/system.slice/nginx.service\n1:name=systemd:/system.slice/nginx.service\n"
            "0::/system.slice/nginx.service\n",
            "system.slice/nginx.service",
        ),
        # v1 only: the systemd hierarchy.
        ("4:memory:/docker/abc\n1:name=systemd:/docker/abc\n", "docker/abc"),
        ("0::/\n", ""),
    ],
)
def test_parse_cgroup(text, group):
    assert parse_cgroup(text) == group


def test_parse_busy_ticks_is_user_nice_system():
    assert parse_busy_ticks("cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 1 2 3\n") == 150


def test_memory_available_and_paged_bytes_from_their_tables():
    meminfo = "MemTotal:       24684092 kB\nMemFree:  1 kB\nMemAvailable:   24067956 kB\n"
    assert parse_mem_available(meminfo) == (24684092 * 1024, 24067956 * 1024)
    vmstat = "nr_free_pages 1\nnr_dirtied 300\nnr_written 200\npgpgin 7\npgpgout 9"
    assert parse_paged_bytes(vmstat, 4096) == 7 * 1024 + 300 * 4096  # the last line too
    assert parse_paged_bytes("pgpgin 1\nnr_dirtied 2\n", 4096) == 1024 + 2 * 4096
    with pytest.raises(ValueError, match="nr_dirtied"):
        parse_paged_bytes("pgpgin 1\nnr_dirtied_threshold 5\n", 4096)
    with pytest.raises(ValueError, match="MemAvailable"):
        parse_mem_available("MemTotal: 1 kB\n")


def test_hidepid_from_the_mount_table():
    assert hidepid("proc /proc proc rw,nosuid,relatime,hidepid=invisible 0 0\n") == "invisible"
    assert hidepid("proc /proc proc rw,nosuid,relatime 0 0\n") is None
    assert hidepid("proc /proc proc rw,hidepid=0 0 0\n") is None


def _stat(pid: int, name: str, cpu: int, rss: int, state: str = "S", start: int = 100) -> str:
    return (
        f"{pid} ({name}) {state} 1 {pid} {pid} 0 -1 0 0 0 0 0 {cpu} 0 0 0 20 0 1 0 {start} "
        f"0 {rss} 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
    )


def _io(read: int, write: int) -> str:
    return (
        f"rchar: 0\nwchar: 0\nsyscr: 0\nsyscw: 0\nread_bytes: {read}\nwrite_bytes: {write}\n"
        "cancelled_write_bytes: 0\n"
    )


def _tree(proc: ProcTree, busy_ticks: int, uptime: float = 1000.0) -> None:
    proc.write("stat", f"cpu  {busy_ticks} 0 0 100000 0 0 0 0 0 0\n")
    proc.write("uptime", f"{uptime} 0\n")
    proc.write("self/mounts", "proc /proc proc rw 0 0\n")


def _collector(proc: ProcTree, clock: FakeClock, minute: list[datetime]) -> ProcessesCollector:
    return ProcessesCollector(
        proc.root,
        top=2,
        scan_seconds=10,
        clock=clock,
        wall_clock=lambda: minute[0],
        ticks_per_second=100,
        page_size=4096,
    )


def test_rates_ranking_and_a_vanished_process_on_a_fixture_proc(proc, clock):
    """Two scans 10 s apart: CPU share, memory and I/O rates from the differences; the top
    two by each measure; a PID listed without its files (it exited) is counted, not an
    error; an idle process on top by memory is in the list but not read every tick."""
    minute = [datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC)]
    _tree(proc, busy_ticks=1000)
    processes = [(10, "burner", 0, 100), (11, "hog", 0, 50_000), (12, "idle", 0, 30_000)]
    for pid, name, cpu, rss in processes:
        proc.write(f"{pid}/stat", _stat(pid, name, cpu, rss))
        proc.write(f"{pid}/io", _io(0, 0))
        proc.write(f"{pid}/cmdline", f"{name}\0--flag\0")
        proc.write(f"{pid}/cgroup", f"0::/system.slice/{name}.service\n")
    proc.write("13/comm", "gone\n")  # listed, but its stat is gone: it exited mid-scan
    collector = _collector(proc, clock, minute)
    first = collector.collect().to_dict()
    assert first["count"] == 3
    clock.advance(10)
    _tree(proc, busy_ticks=1000 + 900)
    proc.write("10/stat", _stat(10, "burner", 900, 100, state="R"))  # 9 s of CPU in 10 s
    proc.write("10/io", _io(0, 1_000_000))
    proc.write("11/stat", _stat(11, "hog", 10, 60_000))
    sample = collector.collect()
    data = sample.to_dict()
    assert (data["count"], data["running"]) == (3, 1)
    top = {entry["name"]: entry for entry in data["top"]}
    assert list(top) == ["burner", "hog", "idle"]  # by CPU; idle is there by memory
    burner = top["burner"]
    assert burner["cpu_percent"] == 90.0
    assert burner["write_bytes_per_second"] == 100_000.0
    assert burner["command"] == "burner --flag"
    assert burner["cgroup"] == "system.slice/burner.service"
    assert burner["user"] == pwd.getpwuid(os.getuid()).pw_name  # the fixture's owner
    assert top["hog"]["rss_bytes"] == 60_000 * 4096 and top["hog"]["cpu_percent"] == 1.0
    assert collector.scans_triggered == 0
    assert [pid for pid, _ in collector._tracked] == [10]  # the busy one alone is read per tick
    assert sample.vanished == 1


def test_a_new_busy_process_triggers_a_scan_at_once(proc, clock):
    """Between scans, busy time that the tracked processes do not explain (a process that
    was not running at the last scan) triggers a full scan in the same tick, and the new
    process is on top with its average since it started."""
    minute = [datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC)]
    _tree(proc, busy_ticks=0, uptime=1000.0)
    proc.write("10/stat", _stat(10, "sleeper", 0, 100))
    proc.write("10/io", _io(0, 0))
    collector = _collector(proc, clock, minute)
    collector.collect()
    clock.advance(1.5)
    _tree(proc, busy_ticks=100, uptime=1001.5)  # a whole core for 1 s, nobody tracked
    proc.write("20/stat", _stat(20, "newcomer", 100, 100, state="R", start=100_050))
    proc.write("20/io", _io(0, 0))
    data = collector.collect().to_dict()
    assert collector.scans_triggered == 1
    assert data["top"][0]["name"] == "newcomer"
    assert data["top"][0]["cpu_percent"] == 100.0  # 1 s of CPU in the 1 s since it started


def _memory(proc: ProcTree, available_mib: int, pgpgin_kib: int = 0, dirtied: int = 0) -> None:
    proc.write("meminfo", f"MemTotal: {4096 << 10} kB\nMemFree: 1 kB\nMemAvailable: "
               f"{available_mib << 10} kB\n")  # fmt: skip
    proc.write("vmstat", f"nr_dirtied {dirtied}\npgpgin {pgpgin_kib}\npgpgout 0\n")


def test_memory_or_io_nobody_tracked_accounts_for_triggers_a_scan(proc, clock):
    """Between scans, memory available falling by more than 64 MiB (2 % of 4 GiB is 82)
    triggers a scan that puts the new hog on top; so do pages dirtied faster than 1 MiB/s
    beyond what the tracked processes wrote. Less of either does not."""
    minute = [datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC)]
    _tree(proc, busy_ticks=0)
    _memory(proc, available_mib=3000)
    proc.write("10/stat", _stat(10, "sleeper", 0, 100))
    proc.write("10/io", _io(0, 0))
    collector = _collector(proc, clock, minute)
    collector.collect()
    clock.advance(1)
    _memory(proc, available_mib=3000 - 60)  # under the 64 MiB threshold
    collector.collect()
    assert collector.scans_triggered == 0
    clock.advance(1)
    _memory(proc, available_mib=3000 - 300)
    proc.write("20/stat", _stat(20, "hog", 0, 300 * 256, start=100_000))
    proc.write("20/io", _io(0, 0))
    data = collector.collect().to_dict()
    assert collector.scan_reasons["memory"] == 1
    assert [e["name"] for e in data["top"]][:1] == ["hog"]  # the most resident
    clock.advance(1)  # 2 MiB read in 1 s, pages dirtied: 0
    _memory(proc, available_mib=3000 - 300, pgpgin_kib=512)
    collector.collect()
    assert collector.scans_triggered == 1  # 0.5 MiB/s: under the threshold
    clock.advance(1)
    _memory(proc, available_mib=3000 - 300, pgpgin_kib=512, dirtied=1024)  # 4 MiB in 1 s
    proc.write("30/stat", _stat(30, "writer", 0, 100, start=99_900))  # 1 s old
    proc.write("30/io", _io(0, 4 << 20))
    data = collector.collect().to_dict()
    assert collector.scan_reasons["io"] == 1
    writer = {e["name"]: e for e in data["top"]}["writer"]
    assert writer["write_bytes_per_second"] == float(4 << 20)  # since it started, 1 s ago


def test_the_finished_minute_names_its_top_consumers(proc, clock):
    minute = [datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC)]
    _tree(proc, busy_ticks=0)
    proc.write("10/stat", _stat(10, "burner", 0, 100))
    proc.write("10/io", _io(0, 0))
    collector = _collector(proc, clock, minute)
    assert collector.collect().to_dict()["minute"] is None
    for second in (15, 25, 35):  # scans every 10 s, each with 5 s of CPU
        clock.advance(10)
        minute[0] = minute[0].replace(second=second)
        ticks = 500 * (second // 10)
        _tree(proc, busy_ticks=ticks)
        proc.write("10/stat", _stat(10, "burner", ticks, 100))
        assert collector.collect().to_dict()["minute"] is None
    clock.advance(30)
    minute[0] = datetime(2026, 12, 4, 10, 1, 5, tzinfo=UTC)
    data = collector.collect().to_dict()
    finished = data["minute"]
    assert finished["start"] == "2026-12-04T10:00:00+00:00"
    assert [(e["name"], e["cpu_seconds"]) for e in finished["top"]] == [("burner", 15.0)]


def test_groups_by_name_keep_exited_processes_cpu(proc, clock):
    """perfpulse_process_group_cpu_seconds_total never goes down when a process exits:
    its last count stays in its name's total."""
    minute = [datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC)]
    _tree(proc, busy_ticks=0)
    for pid in (10, 11):
        proc.write(f"{pid}/stat", _stat(pid, "worker", 200, 100, start=pid))
        proc.write(f"{pid}/io", _io(0, 0))
    collector = _collector(proc, clock, minute)
    before = _group_cpu(collector.collect())
    for name in ("stat", "io"):
        (proc.root / "11" / name).unlink()
    (proc.root / "11").rmdir()
    clock.advance(10)
    after = _group_cpu(collector.collect())
    assert before == after == 4.0  # 2 x 200 ticks at 100 a second


def _group_cpu(sample: object) -> float:
    registry = CollectorRegistry()

    class One:
        def collect(self):  # type: ignore[no-untyped-def]
            return sample.metrics()  # type: ignore[attr-defined]

    registry.register(One())  # type: ignore[arg-type]
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith('perfpulse_process_group_cpu_seconds_total{groupname="worker"}'):
            return float(line.split()[-1])
    raise AssertionError("no worker group")


# --- this machine's real kernel ---------------------------------------------------------------


def test_unreadable_io_of_other_users_processes_is_normal():
    """Without CAP_SYS_PTRACE (root with every capability dropped), perfpulse cannot read
    another user's /proc/PID/io: the section stays available, says how many, and has that
    process's CPU and memory all the same."""
    other = subprocess.Popen(["sleep", "60"], user="nobody")
    script = (
        "import time, orjson\n"
        "from exporter.collectors.processes import ProcessesCollector\n"
        "c = ProcessesCollector(scan_seconds=0.2, top=1000)\n"
        "c.collect(); time.sleep(0.3)\n"
        "print(orjson.dumps(c.collect().to_dict()).decode())\n"
    )
    try:
        result = subprocess.run(
            ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parent.parent,
        )
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 0, result.stderr
    data = orjson.loads(result.stdout)
    assert data["io_unreadable"] >= 1
    sleeper = next(e for e in data["top"] if e["pid"] == other.pid)
    assert sleeper["user"] == "nobody" and sleeper["rss_bytes"] > 0
    assert sleeper["read_bytes_per_second"] is None  # unknown, not zero


def test_processes_that_exit_during_scans_never_fail_a_tick():
    """Hundreds of short-lived processes while the collector scans the real /proc every
    tick: every tick has data."""
    collector = ProcessesCollector(scan_seconds=0)
    churn = subprocess.Popen(
        [sys.executable, "-c", "import subprocess\nfor _ in range(400): subprocess.run(['true'])"]
    )
    try:
        samples = []
        deadline = time.monotonic() + 30
        while churn.poll() is None and time.monotonic() < deadline:
            samples.append(collector.collect().to_dict())
    finally:
        churn.kill()
        churn.wait()
    assert len(samples) >= 5
    assert all(sample["count"] > 0 for sample in samples)


def test_kernel_threads_are_grouped_without_their_cpu_or_queue():
    kworker = parse_stat(
        "77 (kworker/3:1-events) I 2 0 0 0 -1 69238880 0 0 0 0 5 9 0 0 20 0 1 0 30 0 0 "
        "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 3 0 0 0 0 0"
    )
    assert kworker.kernel_thread and kworker.group == "[kworker]"
    assert parse_stat(STAT).group == "my (odd) name"  # a process of its own keeps its name
