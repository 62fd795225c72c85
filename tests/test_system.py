"""The host's identity (exporter/system.py), read once and carried by every snapshot."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import orjson
import psutil

from exporter.sampler import Sampler
from exporter.system import identity
from tests.aio import run


def test_identity_of_this_machine():
    info = identity(1.0)
    assert info["kernel"] == os.uname().release
    assert info["cores"] == os.cpu_count()
    assert info["memory_total_bytes"] == psutil.virtual_memory().total
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert info["virtual_machine"] == (" hypervisor" in cpuinfo)
    assert info["cpu_model"] and info["cpu_model"] in " ".join(cpuinfo.split())
    booted = datetime.fromisoformat(info["boot_time"]).timestamp()
    assert abs(booted - psutil.boot_time()) < 1
    assert info["interval_seconds"] == 1.0


def test_identity_from_other_files(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Example  CPU   9000\nflags\t\t: fpu sse2\n"
    )
    (tmp_path / "os-release").write_text('NAME="X"\nPRETTY_NAME="Example Linux 3"\n')
    info = identity(5.0, proc=tmp_path, etc=tmp_path)
    assert (info["cpu_model"], info["virtual_machine"], info["os"]) == (
        "Example CPU 9000",
        False,
        "Example Linux 3",
    )
    empty = identity(5.0, proc=tmp_path / "none", etc=tmp_path / "none")
    assert (empty["cpu_model"], empty["virtual_machine"], empty["os"]) == (None, False, None)


def test_every_snapshot_carries_it_in_both_forms():
    system = identity(0.5)
    sampler = Sampler([], interval=0.5, deadline=0.4, host="h", system=system)
    snapshot = run(sampler.sample_once())
    assert snapshot.to_dict()["system"] == system
    assert orjson.loads(snapshot.to_json())["system"] == system
    bare = run(Sampler([], interval=0.5, deadline=0.4, host="h").sample_once())
    assert "system" not in bare.to_dict()
