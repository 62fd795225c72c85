from __future__ import annotations

import pytest

from exporter.collectors.base import TickReads
from exporter.collectors.memory import MemoryCollector, parse_meminfo, parse_vmstat
from exporter.collectors.memory_bandwidth import MemoryBandwidthCollector
from exporter.sampler import Sampler

MEMINFO = """\
MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    6000000 kB
Buffers:          200000 kB
Cached:          3000000 kB
SwapCached:            0 kB
Shmem:             50000 kB
SReclaimable:     100000 kB
SwapTotal:       2000000 kB
SwapFree:        1500000 kB
HugePages_Total:       0
"""
VMSTAT_1 = "nr_free_pages 250000\npswpin 100\npswpout 200\npgfault 9999\n"
VMSTAT_2 = "nr_free_pages 250000\npswpin 150\npswpout 600\npgfault 10999\n"


def test_parse_meminfo_converts_kib_to_bytes_and_keeps_plain_counts():
    values = parse_meminfo(MEMINFO)
    assert values["MemTotal"] == 8000000 * 1024
    assert values["HugePages_Total"] == 0


def test_parse_vmstat():
    assert parse_vmstat(VMSTAT_1) == {
        "nr_free_pages": 250000,
        "pswpin": 100,
        "pswpout": 200,
        "pgfault": 9999,
    }


def test_memory_sample_values_and_swap_rates(proc, clock):
    proc.write("meminfo", MEMINFO)
    proc.write("vmstat", VMSTAT_1)
    collector = MemoryCollector(proc.root, clock=clock, page_size=4096)
    first = collector.collect().to_dict()
    assert first["swap_in_bytes_per_second"] is None
    assert first["swap_out_bytes_per_second"] is None
    assert first["total_bytes"] == 8000000 * 1024
    assert first["used_bytes"] == 2000000 * 1024
    assert first["percent"] == pytest.approx(25.0)
    assert first["swap_used_bytes"] == 500000 * 1024
    assert first["swap_percent"] == pytest.approx(25.0)
    assert first["cached_bytes"] == 3000000 * 1024
    assert first["swap_in_bytes_total"] == 100 * 4096

    proc.write("vmstat", VMSTAT_2)
    clock.advance(5.0)
    second = collector.collect().to_dict()
    assert second["swap_in_bytes_per_second"] == pytest.approx(50 * 4096 / 5)
    assert second["swap_out_bytes_per_second"] == pytest.approx(400 * 4096 / 5)


def test_no_swap_configured_is_zero_percent(proc, clock):
    proc.write("meminfo", MEMINFO.replace("2000000", "0").replace("1500000", "0"))
    proc.write("vmstat", VMSTAT_1)
    data = MemoryCollector(proc.root, clock=clock, page_size=4096).collect().to_dict()
    assert data["swap_total_bytes"] == 0
    assert data["swap_percent"] == 0.0


def test_kernel_without_memavailable_estimates_it(proc, clock):
    proc.write("meminfo", MEMINFO.replace("MemAvailable:    6000000 kB\n", ""))
    proc.write("vmstat", VMSTAT_1)
    data = MemoryCollector(proc.root, clock=clock, page_size=4096).collect().to_dict()
    assert data["available_bytes"] == (1000000 + 200000 + 3000000) * 1024


async def test_vmstat_is_read_once_per_tick_for_both_memory_collectors(proc, sys_tree, clock):
    proc.write("meminfo", MEMINFO)
    proc.write("vmstat", VMSTAT_1)
    reads = TickReads()
    collectors = [
        MemoryCollector(proc.root, clock=clock, page_size=4096, tick_reads=reads),
        MemoryBandwidthCollector(proc.root, sys_tree.root, clock=clock, tick_reads=reads),
    ]
    sampler = Sampler(collectors, interval=1.0, deadline=0.5, host="h", tick_reads=reads)
    await sampler.sample_once()
    assert reads.reads == 1
    proc.write("vmstat", VMSTAT_2)
    clock.advance(1.0)
    data = (await sampler.sample_once()).to_dict()
    assert reads.reads == 2  # a new tick reads the file anew: both see the new counters
    assert data["memory"]["swap_in_bytes_per_second"] == pytest.approx(50 * 4096)
    assert data["memory_bandwidth"]["vmstat"]["page_faults_per_second"] == pytest.approx(1000)
