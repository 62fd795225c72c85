from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from exporter.api.app import create_app
from tests.servers import serve_in_thread


@pytest.fixture
def client(make_settings, tmp_path) -> Iterator[httpx.Client]:
    settings = make_settings(sampling_interval_seconds=0.2, dashboard_dir=tmp_path / "none")
    with (
        serve_in_thread(create_app(settings), settings) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


@pytest.fixture
def with_dashboard(make_settings, tmp_path) -> Iterator[httpx.Client]:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>app</title>")
    (dist / "assets" / "index-abc.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("outside the dashboard")
    settings = make_settings(sampling_interval_seconds=0.2, dashboard_dir=dist)
    with (
        serve_in_thread(create_app(settings), settings) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


def wait_for_snapshots(client: httpx.Client, count: int = 1) -> dict[str, object]:
    """Wait until `count` snapshots have been taken; returns /healthz then."""
    first = None
    for _ in range(200):
        body = client.get("/healthz").json()
        seq = body.get("seq")
        if seq is not None:
            first = seq if first is None else first
            if seq - first >= count - 1:
                return body
        time.sleep(0.05)
    raise AssertionError("no snapshot")


def test_metrics_route_serves_text_format_without_redirect(client):
    wait_for_snapshots(client)
    response = client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'perfpulse_collector_success{collector="cpu"} 1.0' in response.text
    assert "process_cpu_seconds_total" in response.text
    assert "perfpulse_ws_clients 0.0" in response.text


def test_healthz_reports_the_latest_snapshot(client):
    body = wait_for_snapshots(client, count=2)
    assert body["status"] == "ok"
    collectors = body["collectors"]
    assert list(collectors) == [
        "cpu",
        "memory",
        "network",
        "disk",
        "perf_events",
        "memory_bandwidth",
        "processes",
        "cgroups",
    ]
    assert all(
        collectors[name]
        for name in ("cpu", "memory", "network", "disk", "memory_bandwidth", "processes", "cgroups")
    )


def test_landing_page_links_to_metrics_without_a_built_dashboard(client):
    response = client.get("/")
    assert response.status_code == 200
    assert 'href="metrics"' in response.text


def test_built_dashboard_is_served_with_a_spa_fallback(with_dashboard):
    assert with_dashboard.get("/").text == "<!doctype html><title>app</title>"
    history = with_dashboard.get("/history")
    assert history.status_code == 200
    assert history.text == "<!doctype html><title>app</title>"
    assert history.headers["cache-control"] == "no-cache"
    assert with_dashboard.get("/assets/index-abc.js").text == "console.log(1)"
    # The API keeps its own answers.
    assert with_dashboard.get("/api/nothing-here").status_code == 404
    assert with_dashboard.get("/metrics").headers["content-type"].startswith("text/plain")
    # No escape from the dashboard directory.
    escaped = with_dashboard.get("/%2e%2e/secret.txt")
    assert "outside the dashboard" not in escaped.text
