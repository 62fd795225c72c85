"""VictoriaMetrics as the long-term store: Debian's victoria-metrics scraping a real
perfpulse with the shipped scrape configuration, and every query of the shipped Grafana
dashboards run on its Prometheus-compatible API, as the Prometheus test does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import free_port, serve
from tests.test_prometheus import (
    EXPECTED_EMPTY,
    ROOT,
    busy_service,
    dashboard_queries,
    dashboard_query_results,
    tool,
    wait_until,
)

pytestmark = pytest.mark.e2e


@contextmanager
def victoria_metrics(tmp_path: Path, config: dict[str, Any]) -> Iterator[str]:
    """victoria-metrics scraping with `config` (Prometheus' format); yields its API."""
    (tmp_path / "scrape.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "victoria-metrics.log").open("wb") as log:
        process = subprocess.Popen(
            [
                tool("victoria-metrics"),
                f"-promscrape.config={tmp_path / 'scrape.yml'}",
                # prometheus.yml also names rule files and alerting: not VictoriaMetrics'.
                "-promscrape.config.strictParse=false",
                f"-storageDataPath={tmp_path / 'vmdata'}",
                f"-httpListenAddr=127.0.0.1:{port}",
                # By default instant queries leave out the last 30 s (data still arriving).
                "-search.latencyOffset=1s",
                # Series appear within a second of their first scrape, not after a minute.
                "-search.cacheTimestampOffset=1s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}/prometheus/api/v1"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, (tmp_path / "victoria-metrics.log").read_text()


def test_every_dashboard_query_returns_data_from_a_real_victoria_metrics(tmp_path, server_env):
    env = {**server_env, "PERFPULSE_PROCESSES_SCAN_SECONDS": "1"}
    with busy_service(), serve(tmp_path, "--interval", "0.5", env=env) as server:
        config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        job = config["scrape_configs"][0]
        job["scrape_interval"] = "1s"
        job["scrape_timeout"] = "1s"
        job["static_configs"] = [{"targets": [server.url.removeprefix("http://")]}]
        with victoria_metrics(tmp_path, config) as api:
            wait_until(
                api,
                'count_over_time(up{job="perfpulse"}[1m])',
                lambda result: result and float(result[0]["value"][1]) >= 8,
            )
            results = dashboard_query_results(api)
    assert len(results) == len(dashboard_queries())
    empty = {key for key, result in results.items() if not result}
    assert empty == EXPECTED_EMPTY
