from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from exporter.api.app import create_app
from exporter.config import load_settings
from tests.servers import serve_in_thread


@contextmanager
def _client(**overrides: object) -> Iterator[httpx.Client]:
    app = create_app(load_settings(sampling_interval_seconds=0.2, **overrides))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        yield client


def _wait_for_snapshot(client: httpx.Client, seq: int = 1) -> dict[str, object]:
    for _ in range(100):
        body = client.get("/healthz").json()
        if body.get("seq", 0) >= seq:
            return body
        time.sleep(0.05)
    raise AssertionError("no snapshot")


def test_metrics_route_serves_text_format_without_redirect():
    with _client() as client:
        _wait_for_snapshot(client)
        response = client.get("/metrics", follow_redirects=False)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert 'perfpulse_collector_success{collector="cpu"} 1.0' in response.text
        assert "process_cpu_seconds_total" in response.text


def test_healthz_reports_the_latest_snapshot():
    with _client() as client:
        body = _wait_for_snapshot(client, seq=2)
        assert body["status"] == "ok"
        assert body["collectors"] == {
            "cpu": True,
            "memory": True,
            "network": True,
            "disk": True,
            "perf_events": False,
            "memory_bandwidth": False,
        }


def test_landing_page_links_to_metrics():
    with _client() as client:
        response = client.get("/")
        assert response.status_code == 200
        assert 'href="metrics"' in response.text
