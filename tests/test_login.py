"""Login, /me, throttling, the first-start admin, the users CLI, and logs without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from exporter.api.app import create_app
from exporter.auth.throttle import LoginThrottle
from tests.conftest import FakeClock
from tests.db import fetchval
from tests.servers import serve, serve_in_thread
from tests.test_ws import add_user


@pytest.fixture
def api(make_settings, clean_database_url) -> Iterator[httpx.Client]:
    asyncio.run(add_user(clean_database_url, "alice", "password1"))
    settings = make_settings(login_max_failures=3, login_failure_window_seconds=60)
    with (
        serve_in_thread(create_app(settings), settings) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


def login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post("/api/auth/login", json={"username": username, "password": password})


def test_login_returns_a_bearer_token_that_me_accepts(api):
    response = login(api, "alice", "password1")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    me = api.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == "alice"


def test_unknown_user_and_wrong_password_get_the_same_401(api):
    unknown = login(api, "mallory", "password1")
    wrong = login(api, "alice", "password2")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == {"detail": "incorrect username or password"}


def test_me_without_or_with_a_bad_token_is_401(api):
    assert api.get("/api/auth/me").status_code == 401
    bad = api.get("/api/auth/me", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401
    assert bad.json() == {"detail": "invalid token"}


def test_repeated_failures_are_throttled_then_even_the_right_password_waits(api):
    # Each failure says how many this address has left before it must wait.
    left = [login(api, "alice", "nope-nope") for _ in range(3)]
    assert [r.status_code for r in left] == [401, 401, 401]
    assert [int(r.headers["X-Login-Attempts-Left"]) for r in left] == [2, 1, 0]
    throttled = login(api, "alice", "password1")
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 60


def test_login_body_is_bounded_and_validated(api):
    too_long = login(api, "alice", "x" * 2000)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "password"]
    assert api.post("/api/auth/login", json={"username": "alice"}).status_code == 422


def test_throttle_window_slides():
    clock = FakeClock()
    throttle = LoginThrottle(2, 10.0, clock=clock)
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 10.0
    assert throttle.retry_after("b") == 0.0
    clock.advance(10.5)
    assert throttle.retry_after("a") == 0.0


def test_throttle_memory_is_bounded():
    throttle = LoginThrottle(1, 10.0, max_clients=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) == 100


def test_first_start_creates_admin_once_and_its_password_works(make_settings, tmp_path):
    settings = make_settings()
    with serve_in_thread(create_app(settings), settings) as url:
        path = tmp_path / "data" / "initial-admin-password"
        password = path.read_text().strip()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert len(password) >= 20
        with httpx.Client(base_url=url) as client:
            assert login(client, "admin", password).status_code == 200
    path.unlink()
    with serve_in_thread(create_app(settings), settings):
        assert not path.exists()  # users exist now: nothing created, nothing written


def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_users_cli_create_list_set_password_delete(server_env):
    created = run_cli(
        server_env, "users", "create", "bob", "--password-stdin", stdin="hunter2hunter2\n"
    )
    assert created.returncode == 0, created.stderr
    duplicate = run_cli(
        server_env, "users", "create", "bob", "--password-stdin", stdin="whatever1\n"
    )
    assert (duplicate.returncode, duplicate.stderr.strip()) == (
        1,
        "perfpulse: user 'bob' already exists",
    )
    short = run_cli(server_env, "users", "create", "carol", "--password-stdin", stdin="short\n")
    assert short.returncode == 1
    assert "8 to 1024 characters" in short.stderr
    listed = run_cli(server_env, "users", "list")
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["USER", "ROLE", "HOSTS", "CREATED"]
    assert [row.split("\t")[:3] for row in rows] == [["bob", "viewer", "*"]]

    def stored_hash() -> str:
        sql = "SELECT password_hash FROM users WHERE username = 'bob'"
        value: str = asyncio.run(fetchval(server_env["PERFPULSE_DATABASE_URL"], sql))
        return value

    before = stored_hash()
    assert before.startswith("$argon2id$")
    changed = run_cli(
        server_env, "users", "set-password", "bob", "--password-stdin", stdin="another-pass\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert stored_hash() != before
    assert run_cli(server_env, "users", "delete", "bob").returncode == 0
    missing = run_cli(server_env, "users", "delete", "bob")
    assert (missing.returncode, missing.stderr.strip()) == (1, "perfpulse: no user 'bob'")


def test_unreachable_database_is_one_clear_line():
    env = {"PERFPULSE_DATABASE_URL": "postgresql://nobody:pw@127.0.0.1:1/none"}
    result = run_cli(env, "users", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("perfpulse: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pw@" not in result.stderr


@pytest.mark.e2e
def test_tokens_and_passwords_never_reach_the_log(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    with serve(tmp_path, "--interval", "0.2", "--log-level", "debug", env=server_env) as server:
        with httpx.Client(base_url=server.url) as client:
            token = login(client, "alice", "password1").json()["access_token"]
            client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            client.get(f"/api/auth/me?token={token}")
            login(client, "alice", "wrong-password")
        ws_url = server.url.replace("http", "ws") + "/api/ws/metrics"

        async def connect() -> None:
            async with websockets.connect(f"{ws_url}?token={token}") as ws:
                await ws.recv()
            async with websockets.connect(ws_url, subprotocols=["bearer", token]) as ws:
                await ws.recv()
            async with websockets.connect(f"{ws_url}?token={token}x") as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()

        asyncio.run(connect())
        server.stop()
        log = server.log()
    assert "[REDACTED]" in log  # uvicorn did log the WebSocket path, without its token
    signature = token.rsplit(".", 1)[1]
    assert token not in log
    assert signature not in log
    assert "password1" not in log
    assert "wrong-password" not in log


@pytest.mark.e2e
def test_watch_logs_in_and_prints_one_line_per_snapshot(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    with serve(tmp_path, "--interval", "0.2", env=server_env) as server:
        args = ("watch", "--url", server.url, "--user", "alice", "--password-stdin")
        watched = run_cli({}, *args, "--count", "3", stdin="password1\n")
        raw = run_cli({}, *args, "--count", "1", "--json", stdin="password1\n")
        refused = run_cli({}, *args, "--count", "1", stdin="nope-nope\n")
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert len(lines) == 3
    assert all(" cpu " in line and " mem " in line and "net rx" in line for line in lines)
    seqs = [int(line.split()[1].lstrip("#")) for line in lines]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    assert "cpu" in json.loads(raw.stdout)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "perfpulse: login failed (401): incorrect username or password"
