"""The host's identity, read once at start: what the dashboard shows beside the host's name
(kernel, OS, CPU model, cores, memory, boot time, whether it is a virtual machine) and the
sampling interval a client needs to tell a late snapshot from a stopped stream."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import psutil

from exporter import __version__
from exporter.collectors.base import JSON


def _cpuinfo(proc: Path) -> tuple[str | None, bool]:
    """The first CPU's model name and whether the CPU flags say a hypervisor runs us."""
    model: str | None = None
    hypervisor = False
    try:
        text = (proc / "cpuinfo").read_text(errors="replace")
    except OSError:
        return None, False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = " ".join(value.split()) or None
        elif key == "flags":
            hypervisor = "hypervisor" in value.split()
            break
    return model, hypervisor


def _os_name(etc: Path) -> str | None:
    try:
        lines = (etc / "os-release").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"') or None
    return None


def identity(interval_seconds: float, proc: Path = Path("/proc"), etc: Path = Path("/etc")) -> JSON:
    """Read once: none of it changes while perfpulse runs (a resized VM restarts it)."""
    model, hypervisor = _cpuinfo(proc)
    try:
        booted: str | None = datetime.fromtimestamp(psutil.boot_time(), UTC).isoformat()
    except (OSError, RuntimeError):
        booted = None
    return {
        "kernel": os.uname().release,
        "os": _os_name(etc),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "boot_time": booted,
        "virtual_machine": hypervisor,
        "perfpulse_version": __version__,
        "interval_seconds": interval_seconds,
    }
