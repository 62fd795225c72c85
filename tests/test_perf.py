"""perf_events and memory_bandwidth: parsers on recorded output, the real perf here, and
fault injection with stand-in perf executables."""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collectors.base import Unavailable
from exporter.collectors.memory_bandwidth import MemoryBandwidthCollector, resctrl_total_bytes
from exporter.collectors.perf_events import PerfEventsCollector
from exporter.collectors.perfstat import PerfStat, diagnose, imc_events, parse_perf_line, scaled
from exporter.sampler import Sampler
from exporter.sinks.prometheus import SnapshotCollector

FIXTURES = Path(__file__).parent / "fixtures"


def feed(perf: PerfStat, fixture: str) -> None:
    for line in (FIXTURES / fixture).read_text().splitlines():
        parsed = parse_perf_line(line)
        if parsed is not None:
            perf._take(parsed)
    perf._commit()


def test_parse_counted_not_supported_not_counted_and_junk():
    line = parse_perf_line(
        "     1.001058049,2003.45,msec,task-clock,2003445962,100.00,2.003,CPUs utilized"
    )
    assert line is not None
    assert (line.time, line.event, line.value, line.unit, line.running_ratio, line.status) == (
        1.001058049,
        "task-clock",
        2003.45,
        "msec",
        1.0,
        "counted",
    )
    unsupported = parse_perf_line("     1.001058049,<not supported>,,cycles,0,100.00,,")
    assert unsupported is not None and (unsupported.value, unsupported.status) == (
        None,
        "not supported",
    )
    not_counted = parse_perf_line("     1.0,<not counted>,,branch-misses,0,0.00,,")
    assert not_counted is not None and not_counted.status == "not counted"
    for junk in ("", "# started on Thu", "3.000000000,99,,cyc", "Usage: perf stat", "x,y,z,a,b,c"):
        assert parse_perf_line(junk) is None


def test_multiplexed_counts_are_scaled_by_the_running_fraction():
    line = parse_perf_line("     1.0,4000000000,,cycles,1000000000,50.00,,")
    assert line is not None and line.running_ratio == 0.5
    assert scaled(line) == 8e9


def test_vm_fixture_hardware_unavailable_software_counted():
    perf = PerfStat(events=["cycles", "instructions", "task-clock", "context-switches"])
    feed(perf, "perf-vm.txt")
    sample = PerfEventsCollector(perf).collect()
    data = sample.to_dict()
    assert data["events"]["cycles"] == {
        "available": False,
        "reason": "<not supported>",
        "per_second": None,
        "total": None,
        "running_ratio": None,
    }
    assert data["ipc"] is None  # never computed from events that were not counted
    assert data["events"]["context-switches"]["total"] == 6174 + 6059
    assert data["events"]["task-clock"]["total"] == pytest.approx((2003.45 + 2005.78) / 1000)
    assert data["rates"]["context-switches"] == pytest.approx(6059 / (2.003510187 - 1.001058049))


async def test_a_snapshot_keeps_its_perf_interval_after_perf_reports_the_next():
    perf = PerfStat(events=["cycles", "instructions", "task-clock", "context-switches"])
    feed(perf, "perf-vm.txt")
    sampler = Sampler([PerfEventsCollector(perf)], interval=1.0, deadline=0.5, host="h")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot, lambda: 0))
    snapshot = await sampler.sample_once()  # taken now, serialized only below
    # perf reports a third interval after the snapshot was taken.
    for line in (
        "     3.003510187,9999,,context-switches,1000000000,100.00,,",
        "     3.003510187,1000.00,msec,task-clock,1000000000,100.00,,",
    ):
        parsed = parse_perf_line(line)
        assert parsed is not None
        perf._take(parsed)
    perf._commit()
    assert perf.state.events["context-switches"].total == 6174 + 6059 + 9999
    section = snapshot.to_dict()["perf_events"]
    assert section["events"]["context-switches"]["total"] == 6174 + 6059
    assert section["rates"]["context-switches"] == pytest.approx(6059 / (2.003510187 - 1.001058049))
    scraped = generate_latest(registry).decode()
    assert "perfpulse_perf_context_switches_total 12233.0" in scraped


def test_multiplexed_fixture_ratios_totals_and_uncore_bandwidth(tmp_path):
    events = [
        "cycles",
        "instructions",
        "cache-references",
        "cache-misses",
        "branch-misses",
        "uncore_imc_0/cas_count_read/",
        "uncore_imc_0/cas_count_write/",
    ]
    perf = PerfStat(events=events)
    feed(perf, "perf-multiplexed.txt")
    data = PerfEventsCollector(perf).collect().to_dict()
    # Last interval: cycles 2e9 at 25 % -> 8e9; instructions 1e9 at 25 % -> 4e9.
    assert data["ipc"] == pytest.approx(0.5)
    assert data["cache_miss_ratio"] == pytest.approx(0.25)
    assert data["branch_miss_ratio"] is None  # no branch-instructions counted
    assert data["events"]["cycles"]["total"] == pytest.approx(8e9 + 8e9)
    assert data["events"]["cycles"]["running_ratio"] == 0.25
    assert "uncore_imc_0/cas_count_read/" not in data["events"]

    (tmp_path / "vmstat").write_text("pgpgin 100\npgpgout 200\n")
    bandwidth = MemoryBandwidthCollector(tmp_path, tmp_path, perf=perf).collect()
    out = bandwidth.to_dict()
    assert out["source"] == "uncore_imc"
    assert out["read_bytes_per_second"] == pytest.approx(1000.0 * 2**20)
    assert out["write_bytes_per_second"] == pytest.approx(200.0 * 2**20)
    assert bandwidth.read_bytes == pytest.approx((1200.50 + 1000.0) * 2**20)


def test_vmstat_source_with_exact_rates(tmp_path, clock):
    (tmp_path / "vmstat").write_text(
        "pgpgin 1000\npgpgout 2000\npswpin 5\npswpout 7\npgfault 100\npgmajfault 1\n"
    )
    collector = MemoryBandwidthCollector(tmp_path, tmp_path, clock=clock)
    first = collector.collect().to_dict()
    assert first["source"] == "vmstat"
    assert first["read_bytes_per_second"] is None
    assert first["vmstat"]["pgpgin_bytes_per_second"] is None
    (tmp_path / "vmstat").write_text(
        "pgpgin 1500\npgpgout 2100\npswpin 9\npswpout 7\npgfault 600\npgmajfault 3\n"
    )
    clock.advance(2.0)
    second = collector.collect().to_dict()
    assert second["vmstat"] == {
        "source": "vmstat",
        "pgpgin_bytes_per_second": 500 * 1024 / 2,
        "pgpgout_bytes_per_second": 100 * 1024 / 2,
        "pswpin_pages_per_second": 2.0,
        "pswpout_pages_per_second": 0.0,
        "page_faults_per_second": 250.0,
        "major_page_faults_per_second": 1.0,
    }


def test_resctrl_source(tmp_path, clock):
    (tmp_path / "vmstat").write_text("pgpgin 1\n")
    for domain, value in (("00", 1000), ("01", 3000)):
        path = tmp_path / f"fs/resctrl/mon_data/mon_L3_{domain}/mbm_total_bytes"
        path.parent.mkdir(parents=True)
        path.write_text(f"{value}\n")
    assert resctrl_total_bytes(tmp_path / "fs/resctrl") == 4000
    collector = MemoryBandwidthCollector(tmp_path, tmp_path, clock=clock)
    assert collector.collect().to_dict()["source"] == "resctrl"
    (tmp_path / "fs/resctrl/mon_data/mon_L3_00/mbm_total_bytes").write_text("9000\n")
    clock.advance(4.0)
    assert collector.collect().to_dict()["total_bytes_per_second"] == 2000.0


def test_uncore_events_are_discovered_under_sysfs(tmp_path):
    for pmu in ("uncore_imc_0", "uncore_imc_1"):
        events = tmp_path / "bus/event_source/devices" / pmu / "events"
        events.mkdir(parents=True)
        (events / "cas_count_read").write_text("event=0x04,umask=0x03\n")
        (events / "cas_count_write").write_text("event=0x04,umask=0x0c\n")
    assert imc_events(tmp_path) == [
        "uncore_imc_0/cas_count_read/",
        "uncore_imc_0/cas_count_write/",
        "uncore_imc_1/cas_count_read/",
        "uncore_imc_1/cas_count_write/",
    ]
    assert imc_events(Path("/sys")) == []  # none on this virtual machine


def test_diagnosis_names_the_missing_pmu_and_binary():
    notes = diagnose("no-such-perf", Path("/sys"), Path("/proc"))
    assert any("no-such-perf" in note and "not found" in note for note in notes)
    assert any("perf_event_paranoid" in note for note in notes)
    assert any("no 'cpu' PMU" in note for note in notes)  # this VM exposes none


def children_ok() -> None:
    """No child left behind: neither a running perf nor a zombie. (multiprocessing's
    resource tracker is not one: once any test of this process has used a spawned
    process, such as the compactor's packer, it stays for the life of the process.)"""
    left = [
        child
        for child in psutil.Process().children(recursive=True)
        if "multiprocessing.resource_tracker" not in " ".join(_cmdline(child))
    ]
    assert left == []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # a zombie has none
        return []


async def run_for(perf: PerfStat, seconds: float) -> None:
    task = asyncio.create_task(perf.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_real_perf_counts_software_events_and_reports_hardware_unsupported():
    perf = PerfStat(interval=0.2)
    await asyncio.wait_for(run_for(perf, 1.2), 15)
    children_ok()
    data = PerfEventsCollector(perf).collect().to_dict()
    for event in ("context-switches", "cpu-migrations", "page-faults"):
        assert data["events"][event]["available"] is True
    assert data["events"]["context-switches"]["total"] > 0
    assert "task-clock" not in data["events"]  # "CPUs busy" would equal the CPU count
    for event in ("cycles", "instructions", "cache-misses", "branch-misses"):
        assert data["events"][event]["available"] is False
        assert data["events"][event]["reason"] == "<not supported>"
    assert data["ipc"] is None


def stand_in_perf(tmp_path: Path, body: str) -> str:
    """A stand-in perf executable (fault injection: real perf cannot be told to fail)."""
    path = tmp_path / "stand-in-perf"
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_stand_in_perf_that_exits_is_restarted_and_reported(tmp_path):
    binary = stand_in_perf(
        tmp_path,
        "sys.stderr.write('     1.0,5,,context-switches,1000,100.00,,\\n'); sys.stderr.flush()\n"
        "sys.stderr.write('perf: something broke\\n'); sys.exit(3)",
    )
    perf = PerfStat(binary=binary, events=["context-switches"], interval=0.2)
    await asyncio.wait_for(run_for(perf, 1.5), 15)
    children_ok()
    assert perf.state.restarts >= 1
    assert perf.state.error == "perf exited with code 3: perf: something broke"
    with pytest.raises(Unavailable, match="exited with code 3"):
        PerfEventsCollector(perf).collect()


async def test_stand_in_perf_that_hangs_is_killed_and_reaped(tmp_path):
    binary = stand_in_perf(tmp_path, "time.sleep(3600)")
    perf = PerfStat(binary=binary, events=["task-clock"], interval=0.1, stall_intervals=1)
    await asyncio.wait_for(run_for(perf, 2.6), 20)
    children_ok()
    assert perf.state.restarts >= 1
    assert perf.state.error == "no usable output for 2s"


async def test_stand_in_perf_that_prints_garbage_is_restarted(tmp_path):
    binary = stand_in_perf(
        tmp_path,
        "while True:\n    sys.stderr.write('garbage, not perf output\\n'); sys.stderr.flush(); time.sleep(0.05)",
    )
    perf = PerfStat(binary=binary, events=["task-clock"], interval=0.1, stall_intervals=1)
    await asyncio.wait_for(run_for(perf, 2.6), 20)
    children_ok()
    assert perf.state.error == "no usable output for 2s (it printed: garbage, not perf output)"


async def test_missing_perf_binary_is_reported_not_raised(tmp_path):
    perf = PerfStat(binary=str(tmp_path / "nowhere" / "perf"), events=["task-clock"])
    await asyncio.wait_for(run_for(perf, 0.3), 10)
    assert perf.state.error is not None and perf.state.error.startswith("cannot start")
    with pytest.raises(Unavailable, match="cannot start"):
        PerfEventsCollector(perf).collect()


async def test_perf_warming_up_is_available_without_values_and_its_first_interval_is_no_recovery(
    caplog,
):
    perf = PerfStat(interval=0.2)
    sampler = Sampler([PerfEventsCollector(perf)], interval=1.0, deadline=0.5, host="h")
    caplog.set_level(logging.DEBUG, logger="exporter.collectors.base")
    first = (await sampler.sample_once()).results["perf_events"]
    assert first.ok  # perf has not reported yet: warming up, not unavailable
    assert first.sample is not None
    warming = first.sample.to_dict()
    assert warming["warming_up"] is True
    assert warming["events"] == {} and warming["ipc"] is None
    task = asyncio.create_task(perf.run())
    try:
        for _ in range(100):
            if perf.state.intervals:
                break
            await asyncio.sleep(0.05)
        later = (await sampler.sample_once()).results["perf_events"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert later.ok and later.sample is not None
    data = later.sample.to_dict()
    assert data["warming_up"] is False
    assert data["rates"]["context-switches"] is not None
    assert not [r for r in caplog.records if "recovered" in r.getMessage()]
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


async def test_a_real_failure_is_logged_and_so_is_its_recovery(caplog):
    class Flaky:
        name = "flaky"
        blocking = False
        fail = True

        def collect(self):
            if self.fail:
                raise OSError("device went away")
            return PerfEventsCollector(PerfStat(events=["context-switches"])).collect()

    flaky = Flaky()
    sampler = Sampler([flaky], interval=1.0, deadline=0.5, host="h")
    caplog.set_level(logging.INFO, logger="exporter.collectors.base")
    await sampler.sample_once()
    flaky.fail = False
    await sampler.sample_once()
    messages = [r.getMessage() for r in caplog.records]
    assert "collector flaky unavailable: OSError: device went away" in messages
    assert "collector flaky recovered" in messages
