"""Pressure stall information: the parser on kernel files, the sections and /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.collectors.cpu import CpuCollector
from exporter.collectors.disk import DiskCollector
from exporter.collectors.memory import MemoryCollector
from exporter.collectors.pressure import Pressure, parse_pressure
from tests.conftest import ProcTree
from tests.test_memory import MEMINFO, VMSTAT_1

FIXTURES = Path(__file__).parent / "fixtures" / "pressure"


def test_a_file_with_some_and_full():
    data = parse_pressure((FIXTURES / "io.txt").read_text())
    assert data["some"] == {
        "avg10": 12.5,
        "avg60": 4.02,
        "avg300": 1.1,
        "total_seconds": pytest.approx(8.734448),
    }
    assert data["full"] is not None
    assert data["full"]["avg10"] == 10.05
    assert data["full"]["total_seconds"] == pytest.approx(7.669153)


def test_cpu_before_linux_5_13_has_no_full_line():
    data = parse_pressure((FIXTURES / "cpu-4.20.txt").read_text())
    assert data["full"] is None
    assert data["some"]["avg10"] == 0.31


def test_a_missing_file_says_why_once_and_is_not_read_again(proc: ProcTree):
    pressure = Pressure("cpu", proc.root)
    first = pressure.read()
    assert first.data is None
    assert first.error is not None and "does not exist" in first.error
    proc.write("pressure/cpu", (FIXTURES / "cpu-5.13.txt").read_text())
    assert pressure.read().error == first.error  # PSI does not appear at run time
    assert list(first.metrics()) == []


def test_a_garbled_file_is_an_error_not_a_crash(proc: ProcTree):
    proc.write("pressure/memory", "some avg10=x\n")
    reading = Pressure("memory", proc.root).read()
    assert reading.data is None
    assert reading.error is not None and "unreadable" in reading.error


def test_each_section_carries_its_resource(proc: ProcTree, clock):
    proc.write("stat", "cpu  1 0 1 10 0 0 0 0 0 0\ncpu0 1 0 1 10 0 0 0 0 0 0\n")
    proc.write("meminfo", MEMINFO)
    proc.write("vmstat", VMSTAT_1)
    proc.write("diskstats", "")
    proc.write("pressure/cpu", (FIXTURES / "cpu-5.13.txt").read_text())
    proc.write("pressure/io", (FIXTURES / "io.txt").read_text())
    cpu = CpuCollector(proc.root, proc.root, clock=clock).collect()
    memory = MemoryCollector(proc.root, clock=clock, page_size=4096).collect()
    disk = DiskCollector(proc.root, proc.root, clock=clock).collect()
    cpu_data = cpu.to_dict()
    assert cpu_data["pressure"] is not None
    assert cpu_data["pressure"]["some"]["avg10"] == 1.53
    assert cpu_data["pressure_error"] is None
    memory_data = memory.to_dict()
    assert memory_data["pressure"] is None  # no /proc/pressure/memory in this tree
    assert memory_data["pressure_error"] is not None
    assert disk.to_dict()["pressure"]["full"]["avg10"] == 10.05  # type: ignore[index]
    names = {m.name: m for m in [*cpu.metrics(), *disk.metrics()]}
    assert names["perfpulse_pressure_cpu_waiting_seconds"].samples[0].value == pytest.approx(
        30.858388
    )
    assert names["perfpulse_pressure_cpu_stalled_seconds"].samples[0].value == 0
    assert names["perfpulse_pressure_io_stalled_seconds"].samples[0].value == pytest.approx(
        7.669153
    )
    assert not any("memory" in name for name in names if name.startswith("perfpulse_pressure"))


def test_this_machine_has_psi_and_every_section_reads_it():
    """The machines perfpulse is tested on run Linux with PSI on: a real read of all three."""
    for resource in ("cpu", "memory", "io"):
        reading = Pressure(resource).read()
        assert reading.error is None, reading.error
        assert reading.data is not None and reading.data["some"]["total_seconds"] >= 0
