from __future__ import annotations

import asyncio
import os
import threading
import time
from types import SimpleNamespace

import pytest

from exporter.collectors.disk import DiskCollector, parse_diskstats
from exporter.collectors.filesystem import (
    FilesystemCollector,
    parse_mounts,
    parse_nodev_filesystems,
    real_filesystems,
)
from exporter.sampler import Sampler

DISKSTATS_1 = """\
   7       0 loop0 10 0 80 1 0 0 0 0 0 2 1 0 0 0 0
 254       0 vda 1000 10 20000 500 2000 20 40000 1500 0 3000 2000 0 0 0 0 0 0
 254       1 vda1 900 10 18000 450 1900 20 38000 1400 0 2900 1850 0 0 0 0
 253       0 dm-0 100 0 2000 50 100 0 2000 100 1 400 150 0 0 0 0
 259       0 nvme0n1 10 0 100 5 10 0 100 5 0 10 10
"""
DISKSTATS_2 = """\
   7       0 loop0 10 0 80 1 0 0 0 0 0 2 1 0 0 0 0
 254       0 vda 1100 10 22000 600 2400 20 48000 1900 2 3500 2500 0 0 0 0 0 0
 254       1 vda1 1000 10 20000 550 2300 20 46000 1800 2 3400 2350 0 0 0 0
 253       0 dm-0 150 0 3000 80 100 0 2000 100 0 600 180 0 0 0 0
 259       0 nvme0n1 10 0 100 5 10 0 100 5 0 10 10
"""
MOUNTS = """\
proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
/dev/vda1 / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw 0 0
/dev/vda1 /srv/bind ext4 rw,relatime 0 0
/dev/mapper/data /mnt/my\\040data xfs rw 0 0
tank/home /home zfs rw 0 0
server:/export /nfs nfs4 rw 0 0
"""
FILESYSTEMS = """\
nodev\tsysfs
nodev\ttmpfs
nodev\tproc
\text4
\txfs
nodev\tnfs4
nodev\tzfs
"""


def test_parse_diskstats_units():
    vda = parse_diskstats(DISKSTATS_1)["vda"]
    assert vda == {
        "reads_completed": 1000,
        "writes_completed": 2000,
        "read_bytes": 20000 * 512,
        "written_bytes": 40000 * 512,
        "read_time_seconds": 0.5,
        "write_time_seconds": 1.5,
        "io_time_seconds": 3.0,
        "io_in_progress": 0,
    }


def test_parse_mounts_unescapes_octal():
    mounts = parse_mounts(MOUNTS)
    assert mounts[5].mountpoint == "/mnt/my data"


def test_real_filesystems_skip_pseudo_and_bind_mounts():
    mounts = real_filesystems(parse_mounts(MOUNTS), parse_nodev_filesystems(FILESYSTEMS))
    assert [(m.mountpoint, m.fstype) for m in mounts] == [
        ("/", "ext4"),
        ("/mnt/my data", "xfs"),
        ("/home", "zfs"),
    ]


def fake_statvfs(path: str) -> SimpleNamespace:
    """statvfs figures for the fixture mounts: 1 GiB filesystems in 4 KiB blocks."""
    if path.endswith("home"):
        raise PermissionError(path)
    return SimpleNamespace(
        f_frsize=4096,
        f_blocks=262144,
        f_bfree=131072,
        f_bavail=104858,
        f_files=65536,
        f_ffree=60000,
    )


@pytest.fixture
def collector(proc, sys_tree, clock, tmp_path):
    proc.write("diskstats", DISKSTATS_1)
    proc.write("self/mounts", MOUNTS)
    proc.write("filesystems", FILESYSTEMS)
    (sys_tree.root / "block/dm-0/slaves").mkdir(parents=True)
    (sys_tree.root / "block/dm-0/slaves/vda1").touch()
    (sys_tree.root / "block/vda/slaves").mkdir(parents=True)
    return DiskCollector(proc.root, sys_tree.root, clock=clock)


@pytest.fixture
def filesystems(proc, clock, tmp_path):
    proc.write("self/mounts", MOUNTS)
    proc.write("filesystems", FILESYSTEMS)
    return FilesystemCollector(proc.root, rootfs=tmp_path, clock=clock, statvfs=fake_statvfs)


def test_devices_exclude_partitions_and_loops(collector):
    data = collector.collect().to_dict()
    assert sorted(data["devices"]) == ["dm-0", "nvme0n1", "vda"]


def test_first_sample_has_no_rates(collector):
    data = collector.collect().to_dict()
    assert data["total"]["read_bytes_per_second"] is None
    assert data["total"]["busy_percent"] is None
    assert data["devices"]["vda"]["busy_percent"] is None
    # Stacked dm-0 is not added to the total: its I/O is already counted on vda.
    assert data["total"]["read_bytes_total"] == (20000 + 100) * 512


def test_rates_and_busy_percent(collector, proc, clock):
    collector.collect()
    proc.write("diskstats", DISKSTATS_2)
    clock.advance(1.0)
    data = collector.collect().to_dict()
    vda = data["devices"]["vda"]
    assert vda["reads_completed_per_second"] == pytest.approx(100.0)
    assert vda["read_bytes_per_second"] == pytest.approx(2000 * 512)
    assert vda["written_bytes_per_second"] == pytest.approx(8000 * 512)
    assert vda["busy_percent"] == pytest.approx(50.0)
    assert vda["io_in_progress"] == 2
    assert data["devices"]["dm-0"]["busy_percent"] == pytest.approx(20.0)
    assert data["total"]["read_bytes_per_second"] == pytest.approx(2000 * 512)
    assert data["total"]["busy_percent"] == pytest.approx(50.0)


def test_filesystem_usage_like_df(filesystems):
    filesystems = filesystems.collect().to_dict()["filesystems"]
    # /home's statvfs is refused: that mount is left out, the others stay.
    assert [fs["mountpoint"] for fs in filesystems] == ["/", "/mnt/my data"]
    root = filesystems[0]
    assert root["total_bytes"] == 262144 * 4096
    assert root["used_bytes"] == 131072 * 4096
    assert root["available_bytes"] == 104858 * 4096
    assert root["percent"] == pytest.approx(100 * 131072 / (131072 + 104858))


def test_real_statvfs_of_this_machine_root(proc, clock):
    proc.write("self/mounts", "/dev/root / ext4 rw 0 0\n")
    proc.write("filesystems", FILESYSTEMS)
    data = FilesystemCollector(proc.root, clock=clock).collect().to_dict()
    st = os.statvfs("/")
    assert data["filesystems"][0]["total_bytes"] == st.f_blocks * st.f_frsize


class HangingStatvfs:
    """Stand-in for a statvfs stuck on a dead NFS or FUSE server (fault injection: a real
    one cannot be made to hang on demand here). Blocks until the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, path: str) -> SimpleNamespace:
        self.calls += 1
        self.release.wait(timeout=30)
        return fake_statvfs(path)


async def test_a_hanging_statvfs_never_blocks_the_sampling_loop(proc, sys_tree, clock, tmp_path):
    proc.write("diskstats", DISKSTATS_1)
    proc.write("self/mounts", MOUNTS)
    proc.write("filesystems", FILESYSTEMS)
    statvfs = HangingStatvfs()
    collectors = [
        DiskCollector(proc.root, sys_tree.root, clock=clock),
        FilesystemCollector(proc.root, rootfs=tmp_path, clock=clock, statvfs=statvfs),
    ]
    # A deadline long enough that waiting for it, on the loop or again in the next tick,
    # stands out from any scheduling delay on a busy machine.
    sampler = Sampler(collectors, interval=2.0, deadline=1.0, host="h")
    # A heartbeat on the same loop: any blocking call inside a tick shows as a gap.
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        first = (await sampler.sample_once()).to_dict()
        started = time.monotonic()
        second = (await sampler.sample_once()).to_dict()
        second_took = time.monotonic() - started
    finally:
        beat.cancel()
        statvfs.release.set()
    assert statvfs.calls == 1  # the stuck call is not retried on a new thread every tick
    assert max(gaps) < 0.5, max(gaps)  # blocking would be the 1 s deadline, or the 30 s hang
    # Disk I/O is reported as usual; filesystem usage says why it is missing.
    assert first["disk"]["available"] is True
    assert sorted(first["disk"]["devices"]) == ["dm-0", "nvme0n1", "vda"]
    assert first["disk"]["filesystems"] == []
    assert first["disk"]["filesystem_error"] == "timed out after 1s"
    assert second["disk"]["filesystem_error"].startswith("previous collection still running")
    assert second_took < 0.5  # the second tick does not wait the deadline again


def test_latency_per_completed_read_and_write(collector, proc, clock):
    """Seconds spent over requests completed in the interval, as node-mixin's disk latency;
    none where no request of that kind completed."""
    first = collector.collect().to_dict()
    assert first["devices"]["vda"]["read_latency_seconds"] is None
    assert first["total"]["read_latency_seconds"] is None
    proc.write("diskstats", DISKSTATS_2)
    clock.advance(1.0)
    data = collector.collect().to_dict()
    vda = data["devices"]["vda"]
    assert vda["read_latency_seconds"] == pytest.approx(0.100 / 100)  # 100 ms over 100 reads
    assert vda["write_latency_seconds"] == pytest.approx(0.400 / 400)
    assert data["devices"]["dm-0"]["read_latency_seconds"] == pytest.approx(0.030 / 50)
    assert data["devices"]["dm-0"]["write_latency_seconds"] is None  # no write completed
    # The total weighs the counted devices by their requests (dm-0 is stacked: left out).
    assert data["total"]["read_latency_seconds"] == pytest.approx(0.001)
    assert data["total"]["write_latency_seconds"] == pytest.approx(0.001)
