"""`perfpulse grafana push` against a stand-in Grafana: a local HTTP server implementing
the three endpoints the command calls and recording every request (Grafana itself cannot
be installed here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exporter.grafana.dashboards import all_dashboards


class StandInGrafana(ThreadingHTTPServer):
    def __init__(self, refuse: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.refuse = refuse
        self.folders: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, str], object]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: StandInGrafana

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((method, self.path, dict(self.headers), body))
        if self.server.refuse == 401:
            return self._reply(401, {"message": "Unauthorized"})
        if self.server.refuse == 403:
            return self._reply(403, {"message": "Access denied"})
        if method == "GET" and self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.server.folders:
                return self._reply(200, {"uid": uid, "title": self.server.folders[uid]})
            return self._reply(404, {"message": "folder not found"})
        if method == "POST" and self.path == "/api/folders":
            self.server.folders[body["uid"]] = body["title"]
            return self._reply(200, {"uid": body["uid"], "title": body["title"]})
        if method == "POST" and self.path == "/api/dashboards/db":
            return self._reply(200, {"status": "success", "uid": body["dashboard"]["uid"]})
        return self._reply(404, {"message": "not implemented by the stand-in"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def stand_in(refuse: int | None = None) -> Iterator[StandInGrafana]:
    server = StandInGrafana(refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def grafana() -> Iterator[StandInGrafana]:
    yield from stand_in()


def push(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "grafana", "push", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )


def test_push_creates_the_folder_once_and_overwrites_dashboards(grafana):
    first = push("--url", grafana.url, "--token", "glsa_example")
    second = push("--url", grafana.url, "--token", "glsa_example")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    creations = [r for r in grafana.requests if r[:2] == ("POST", "/api/folders")]
    assert len(creations) == 1
    assert creations[0][3] == {"title": "perfpulse", "uid": "perfpulse"}
    posts = [r for r in grafana.requests if r[:2] == ("POST", "/api/dashboards/db")]
    assert len(posts) == 2 * len(all_dashboards())
    for _, _, headers, body in posts:
        assert headers["Authorization"] == "Bearer glsa_example"
        assert body["overwrite"] is True
        assert body["folderUid"] == "perfpulse"
    assert [p[3]["dashboard"]["uid"] for p in posts[:3]] == [
        "perfpulse-host",
        "perfpulse-fleet",
        "perfpulse-history",
    ]
    assert "created folder 'perfpulse'" in first.stdout
    assert "created folder" not in second.stdout


def test_push_with_user_and_password_uses_basic_auth(grafana):
    result = push(
        "--url",
        grafana.url,
        "--user",
        "admin",
        "--password-stdin",
        "--folder",
        "Ops hosts",
        stdin="s3cret\n",
    )
    assert result.returncode == 0, result.stderr
    headers = grafana.requests[0][2]
    assert headers["Authorization"].startswith("Basic ")
    assert [r[3] for r in grafana.requests if r[1] == "/api/folders"] == [
        {"title": "Ops hosts", "uid": "ops-hosts"}
    ]


def test_dry_run_changes_nothing(grafana):
    result = push("--url", grafana.url, "--token", "t", "--dry-run")
    assert result.returncode == 0
    assert grafana.requests == []
    assert "would push perfpulse-host.json" in result.stdout


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "refused the credentials (401): check --token or --user"),
        (403, "denied access (403): the token or user needs the Editor role"),
    ],
)
def test_refusals_are_one_clear_line(status, message):
    for server in stand_in(refuse=status):
        result = push("--url", server.url, "--token", "bad")
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert message in result.stderr
        assert "bad" not in result.stderr.replace("--token or", "")


def test_unreachable_grafana_is_one_clear_line():
    server = StandInGrafana()
    url = server.url
    server.server_close()  # nothing listens there any more
    result = push("--url", url, "--token", "t")
    assert result.returncode == 1
    assert result.stderr.strip() == f"perfpulse: cannot reach Grafana at {url}: Connection refused"
