from __future__ import annotations

import pytest

from exporter.collectors.cpu import (
    CpuCollector,
    parse_cpuinfo_mhz,
    parse_loadavg,
    parse_proc_stat,
)

STAT_1 = """\
cpu  1000 50 300 8000 100 0 50 0 0 0
cpu0 600 50 200 3900 50 0 50 0 0 0
cpu1 400 0 100 4100 50 0 0 0 0 0
intr 123456 0 0 12 0
ctxt 500000
btime 1795690000
processes 4000
procs_running 3
procs_blocked 1
softirq 99 1 2
"""
# One second later at 100 ticks/s on two CPUs: 200 ticks passed in total.
STAT_2 = """\
cpu  1060 50 320 8100 110 0 60 0 0 0
cpu0 650 50 210 3930 50 0 60 0 0 0
cpu1 410 0 110 4170 60 0 0 0 0 0
intr 124456 0 0 12 0
ctxt 502500
btime 1795690000
processes 4010
procs_running 2
procs_blocked 0
"""
CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2300.000

processor\t: 1
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2400.500
"""


def test_parse_proc_stat_converts_ticks_to_seconds():
    stat = parse_proc_stat(STAT_1, ticks_per_second=100)
    assert stat.total == {
        "user": 10.0,
        "nice": 0.5,
        "system": 3.0,
        "idle": 80.0,
        "iowait": 1.0,
        "irq": 0.0,
        "softirq": 0.5,
        "steal": 0.0,
    }
    assert stat.per_cpu["1"]["idle"] == 41.0
    assert (stat.context_switches, stat.interrupts) == (500000, 123456)
    assert (stat.procs_running, stat.procs_blocked, stat.boot_time) == (3, 1, 1795690000)


def test_parse_proc_stat_without_aggregate_line_is_an_error():
    with pytest.raises(ValueError, match="cpu"):
        parse_proc_stat("intr 1\nctxt 2\n", 100)


def test_parse_loadavg_and_cpuinfo():
    assert parse_loadavg("0.79 0.45 0.18 1/136 6091\n") == (0.79, 0.45, 0.18)
    assert parse_cpuinfo_mhz(CPUINFO) == {"0": 2300.0, "1": 2400.5}


def _collector(proc, sys_tree, clock) -> CpuCollector:
    proc.write("stat", STAT_1)
    proc.write("loadavg", "0.79 0.45 0.18 1/136 6091\n")
    proc.write("cpuinfo", CPUINFO)
    return CpuCollector(proc.root, sys_tree.root, clock=clock, ticks_per_second=100)


def test_first_sample_has_totals_but_no_rates(proc, sys_tree, clock):
    data = _collector(proc, sys_tree, clock).collect().to_dict()
    assert data["usage_percent"] is None
    assert data["context_switches_per_second"] is None
    assert data["interrupts_per_second"] is None
    assert set(data["modes_percent"].values()) == {None}
    assert [c["usage_percent"] for c in data["per_cpu"]] == [None, None]
    assert data["context_switches_total"] == 500000
    assert data["times_seconds"]["user"] == 10.0
    assert data["load_average"] == {"1m": 0.79, "5m": 0.45, "15m": 0.18}
    assert data["count"] == 2


def test_second_sample_usage_from_deltas(proc, sys_tree, clock):
    collector = _collector(proc, sys_tree, clock)
    collector.collect()
    proc.write("stat", STAT_2)
    clock.advance(2.0)
    data = collector.collect().to_dict()
    # 200 ticks passed; idle 100 + iowait 10 of them -> 45% busy.
    assert data["usage_percent"] == pytest.approx(45.0)
    assert data["modes_percent"]["user"] == pytest.approx(30.0)
    assert data["modes_percent"]["system"] == pytest.approx(10.0)
    assert data["modes_percent"]["idle"] == pytest.approx(50.0)
    assert data["modes_percent"]["iowait"] == pytest.approx(5.0)
    # cpu0: 100 ticks, 30 idle -> 70%; cpu1: 100 ticks, 70 idle + 10 iowait -> 20%.
    assert [c["usage_percent"] for c in data["per_cpu"]] == [
        pytest.approx(70.0),
        pytest.approx(20.0),
    ]
    assert data["context_switches_per_second"] == pytest.approx(1250.0)
    assert data["interrupts_per_second"] == pytest.approx(500.0)


def test_counter_going_backwards_gives_no_rate_never_negative(proc, sys_tree, clock):
    collector = _collector(proc, sys_tree, clock)
    proc.write("stat", STAT_2)
    collector.collect()
    proc.write("stat", STAT_1)  # every counter smaller: a reset
    clock.advance(1.0)
    data = collector.collect().to_dict()
    assert data["context_switches_per_second"] is None
    assert data["interrupts_per_second"] is None
    assert data["usage_percent"] is None
    assert all(v is None or v >= 0 for v in data["modes_percent"].values())


def test_frequency_from_cpuinfo_without_cpufreq(proc, sys_tree, clock):
    collector = _collector(proc, sys_tree, clock)
    assert collector.collect().frequency_hz == {"0": 2.3e9, "1": 2.4005e9}


def test_frequency_prefers_cpufreq(proc, sys_tree, clock):
    sys_tree.write("devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1200000\n")
    sys_tree.write("devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "3400000\n")
    sample = _collector(proc, sys_tree, clock).collect()
    assert sample.frequency_hz == {"0": 1.2e9, "1": 3.4e9}
    assert sample.to_dict()["frequency_mhz"] == pytest.approx(2300.0)
