"""perfpulse as a real process: scraped over HTTP, checked by the real promtool."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import serve

pytestmark = pytest.mark.e2e

FOUR = ("cpu", "memory", "network", "disk")


def counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def wait_for_seq(url: str, count: int) -> None:
    """Wait until `count` snapshots were taken since the first one seen."""
    first = None
    for _ in range(200):
        seq = httpx.get(url + "/healthz").json().get("seq")
        if seq is not None:
            first = seq if first is None else first
            if seq - first >= count - 1:
                return
        time.sleep(0.05)
    raise AssertionError(f"{count} snapshots never came")


def test_scrapes_are_consistent_and_counters_never_decrease(tmp_path, server_env):
    with serve(tmp_path, "--interval", "0.3", env=server_env) as server:
        wait_for_seq(server.url, 2)
        first = httpx.get(server.url + "/metrics").text
        wait_for_seq(server.url, 4)
        second = httpx.get(server.url + "/metrics").text
    before, after = counters(first), counters(second)
    assert len(before) > 20
    common = before.keys() & after.keys()
    assert len(common) >= len(before) - 2  # devices may come and go, not the bulk
    decreased = {key: (before[key], after[key]) for key in common if after[key] < before[key]}
    assert decreased == {}
    assert any(after[key] > before[key] for key in common)
    families = {f.name: f for f in text_string_to_metric_families(second)}
    success = {
        s.labels["collector"]: s.value for s in families["perfpulse_collector_success"].samples
    }
    assert {name: success[name] for name in FOUR} == dict.fromkeys(FOUR, 1.0)


def test_promtool_finds_nothing_to_complain_about(tmp_path, server_env):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    with serve(tmp_path, "--interval", "0.3", env=server_env) as server:
        wait_for_seq(server.url, 2)
        scrape = httpx.get(server.url + "/metrics").content
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(tmp_path, server_env, sig):
    with serve(tmp_path, "--interval", "0.2", env=server_env) as server:
        wait_for_seq(server.url, 2)
        code = server.stop(sig)
        log = server.log()
    assert code == 0, log
    assert "sampler stopped after" in log
    assert "Traceback" not in log


def test_snapshot_command_prints_real_rates():
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "snapshot", "--interval", "0.3"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data)[:4] == ["seq", "timestamp", "host", "system"]
    assert list(data)[4:] == [*FOUR, "perf_events", "memory_bandwidth", "processes", "cgroups"]
    assert data["system"]["cores"] == os.cpu_count()
    # The process table was read twice, the interval apart: every rate is measured.
    assert data["processes"]["count"] > 0 and data["processes"]["top"]
    assert all(p["cpu_percent"] is not None for p in data["processes"]["top"])
    assert data["cgroups"]["available"] is True
    assert 0.0 <= data["cpu"]["usage_percent"] <= 100.0
    assert data["cpu"]["context_switches_per_second"] > 0
    assert data["network"]["total"]["receive_bytes_per_second"] is not None
    assert data["memory"]["total_bytes"] > 0


def test_version():
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, timeout=30
    )
    from exporter import __version__

    assert result.stdout.strip() == f"perfpulse {__version__}"
