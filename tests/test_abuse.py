"""Attacks that need no login, each against a real `perfpulse serve` process: held and
half-sent connections, concurrent password guessing, huge bodies, malformed input,
ping floods and replays, and what the browser is told (security headers)."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import threading
import time

import httpx
import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from exporter.auth.throttle import LoginGate
from tests import timing
from tests.attackers import hold_argv, login_burst
from tests.conftest import FakeClock, token_for
from tests.servers import serve
from tests.test_ws import add_user

pytestmark = pytest.mark.e2e

HOLD_SECONDS = 60.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


class StreamFollower(threading.Thread):
    """A logged-in stream client on its own thread, recording every seq it receives."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.ws_url = url.replace("http", "ws") + "/api/ws/metrics"
        self.token = token
        self.seqs: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        async def follow() -> None:
            async with websockets.connect(self.ws_url, subprotocols=["bearer", self.token]) as ws:
                while not self.stop.is_set():
                    try:
                        message = await asyncio.wait_for(ws.recv(), 1.0)
                    except TimeoutError:
                        continue
                    self.seqs.append(json.loads(message)["seq"])

        try:
            asyncio.run(follow())
        except BaseException as exc:
            self.error = exc


# --- 1. held connections ---------------------------------------------------------------


def test_held_and_half_sent_connections_do_not_starve_the_server(tmp_path, server_env):
    """2,000 idle and 1,000 half-sent WebSocket handshakes held for 60 s (reopened as the
    server closes them): /healthz stays fast and a logged-in stream misses nothing."""
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    with serve(tmp_path, "--interval", "1", env=server_env) as server:
        follower = StreamFollower(server.url, token_for())
        follower.start()
        healthz = server.url + "/healthz"
        # The probe is another client (127.0.0.2): the attacker's address gets its share
        # of the connections and no more. A new connection each time, as probes make.
        probe = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=probe, timeout=5, headers={"Connection": "close"}) as client:
            baseline = timing.quiet(lambda: timing.request_seconds(client, healthz))
            attacker = subprocess.Popen(
                hold_argv(server.url, 2000, 1000, HOLD_SECONDS),
                stdout=subprocess.PIPE,
            )
            time.sleep(3)  # the connections pile up
            latencies = []
            while attacker.poll() is None:
                latencies.append(timing.request_seconds(client, healthz))
                time.sleep(0.05)
        stats = json.loads(attacker.communicate()[0])
        follower.stop.set()
        follower.join(5)
        log = server.log()
    assert follower.error is None, follower.error
    assert stats["opened"] >= 3000
    assert stats["closed_by_server"] >= 3000  # idle and half-sent ones are not kept
    # Not starved: within 25 times the quiet latency (a starved loop took seconds).
    limit = timing.bound(baseline, 25, floor=0.5)
    assert p99(latencies) < limit, (p99(latencies), statistics.median(latencies), baseline)
    seqs = follower.seqs
    assert len(seqs) >= HOLD_SECONDS * 0.9
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no snapshot missed
    assert "out of system resource" not in log


def test_accept_errors_are_logged_once_a_minute(tmp_path, server_env):
    """With too few descriptors (a hard limit of 300, a connection bound set above it),
    asyncio's accept error is logged once, not once per attempt."""
    env = {**server_env, "PERFPULSE_MAX_CONNECTIONS": "2000"}
    with serve(tmp_path, env=env, prefix=["prlimit", "--nofile=300:300", "--"]) as server:
        subprocess.run(
            hold_argv(server.url, 400, 0, 8),
            capture_output=True,
            check=True,
        )
        server.stop()
        lines = [line for line in server.log().splitlines() if "out of system resource" in line]
    assert len(lines) == 1, lines


def test_connections_past_the_bound_get_a_503_at_once(tmp_path, server_env):
    env = {**server_env, "PERFPULSE_MAX_CONNECTIONS": "20"}
    with serve(tmp_path, env=env) as server:
        host, port = server.url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port))) for _ in range(20)]
        try:
            time.sleep(0.3)
            with socket.create_connection((host, int(port))) as extra:
                extra.settimeout(5)
                answer = extra.recv(4096)
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(server.url + "/healthz").status_code == 200  # and back to normal
    assert answer.startswith(b"HTTP/1.1 503")
    assert b"retry-after: 5" in answer


def test_a_connection_that_sends_no_request_is_closed(tmp_path, server_env):
    env = {**server_env, "PERFPULSE_REQUEST_HEADER_TIMEOUT_SECONDS": "1"}
    with serve(tmp_path, env=env) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            sock.settimeout(30)
            started = time.monotonic()
            assert sock.recv(4096) == b""  # closed by the server
            waited = time.monotonic() - started
    assert 0.5 < waited < 10  # the 1 s deadline (held for ever, it would time out at 30)


# --- 2. password guessing ----------------------------------------------------------------


def test_concurrent_guesses_get_five_checks_and_a_real_user_still_logs_in(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"], "bob", "password2"))
    with serve(tmp_path, env=server_env) as server:
        legit: dict[str, float] = {}

        def quiet_login() -> float:
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3")) as c:
                started = time.perf_counter()
                c.post(
                    server.url + "/api/auth/login",
                    json={"username": "bob", "password": "password2"},
                ).raise_for_status()
                return time.perf_counter() - started

        baseline = timing.quiet(quiet_login, count=3)

        def real_user() -> None:
            time.sleep(0.3)  # in the middle of the burst
            other_address = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(transport=other_address, timeout=10) as client:
                started = time.perf_counter()
                response = client.post(
                    server.url + "/api/auth/login",
                    json={"username": "bob", "password": "password2"},
                )
                legit["seconds"] = time.perf_counter() - started
                legit["status"] = response.status_code

        thread = threading.Thread(target=real_user)
        thread.start()
        statuses: list[int] = []
        for _ in range(4):  # 200 guesses in bursts of 50, one address
            statuses += asyncio.run(login_burst(server.url, "alice", 50))
        thread.join()
        checks = metric(server.url, "perfpulse_login_password_checks_total")
    assert statuses.count(401) <= 5
    assert statuses.count(200) == 0
    assert set(statuses) <= {401, 429, 503}
    assert checks <= 5 + 1 + 3  # the guesses, the real user's one, the quiet logins
    assert legit["status"] == 200
    # The real user did not wait behind the guesses' checks (each a slow hash).
    assert legit["seconds"] < timing.bound(baseline, 5, floor=1.0), (legit, baseline)


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    with serve(tmp_path, env=server_env) as server, httpx.Client(base_url=server.url) as client:
        statuses = [
            client.post(
                "/api/auth/login",
                json={"username": "alice", "password": "wrong-one"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(12)
        ]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}


def test_a_success_clears_only_its_own_address_and_account():
    clock = FakeClock()
    gate = LoginGate(
        max_failures=3, account_max_failures=5, window_seconds=60, queue_size=8, clock=clock
    )
    for account in ("victim", "victim", "mine"):
        with gate.checking("10.0.0.1", account):
            pass  # a failure: never succeeded
    with gate.checking("10.0.0.1", "mine") as attempt:
        attempt.succeeded()  # the guesser logs into their own account
    refusal = gate.refusal("10.0.0.1", "victim")
    assert refusal is None  # 2 failures for victim are left, under 3
    with gate.checking("10.0.0.1", "victim"):
        pass
    refusal = gate.refusal("10.0.0.1", "victim")
    assert refusal is not None and refusal.status == 429


def test_an_account_past_its_limit_is_delayed_not_locked():
    """Four failures from four addresses reach the account's limit: a clean address is
    still checked, after a delay that grows with the failures; an address that failed 3
    times for the account itself waits; other accounts are untouched."""
    gate = LoginGate(
        max_failures=5, account_max_failures=4, window_seconds=60, queue_size=8, clock=FakeClock()
    )
    for i in range(4):
        with gate.checking(f"10.0.0.{i}", "admin"):
            pass
    assert gate.refusal("10.0.0.99", "admin") is None
    assert gate.account_delay("admin") == 0.5
    for address in ["10.0.1.1"] * 3 + [f"10.0.2.{i}" for i in range(5)]:
        with gate.checking(address, "admin"):  # 8 more failures double the delay
            pass
    assert gate.account_delay("admin") == 1.0
    refusal = gate.refusal("10.0.1.1", "admin")  # it failed 3 times for admin itself
    assert refusal is not None and refusal.status == 429 and "this account" in refusal.detail
    assert gate.refusal("10.0.0.99", "someone-else") is None
    assert gate.account_delay("someone-else") == 0


async def test_checks_for_an_account_past_its_limit_take_turns():
    gate = LoginGate(
        max_failures=5, account_max_failures=1, window_seconds=60, queue_size=8, clock=FakeClock()
    )
    with gate.checking("10.0.0.1", "admin"):
        pass
    order: list[str] = []

    async def login(address: str) -> None:
        with gate.checking(address, "admin") as attempt:
            await attempt.turn()
            order.append(f"{address} in")
            await asyncio.sleep(0.01)
            order.append(f"{address} out")

    await asyncio.gather(login("10.0.0.2"), login("10.0.0.3"))
    assert order == ["10.0.0.2 in", "10.0.0.2 out", "10.0.0.3 in", "10.0.0.3 out"]
    with gate.checking("10.0.0.4", "admin"), gate.checking("10.0.0.5", "admin"):
        third = gate.refusal("10.0.0.6", "admin")  # two wait already
    assert third is not None and third.status == 429 and "one at a time" in third.detail


def test_one_login_per_address_at_a_time_and_a_bounded_queue():
    gate = LoginGate(
        max_failures=5, account_max_failures=50, window_seconds=60, queue_size=2, clock=FakeClock()
    )
    with gate.checking("10.0.0.1", "a"):
        same = gate.refusal("10.0.0.1", "b")
        assert same is not None and same.status == 429
        with gate.checking("10.0.0.2", "a"):
            full = gate.refusal("10.0.0.3", "c")
            assert full is not None and full.status == 503 and full.retry_after > 0


# --- 3. bodies --------------------------------------------------------------------------


def _post_body(url: str, total: int, chunked: bool) -> bytes:
    """Send a huge login body over a raw socket; return what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    head = "POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    chunk = b"a" * 65536
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode())
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"10000\r\n" + chunk + b"\r\n" if chunked else chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: the rest is never read
        sock.settimeout(5)
        try:
            return sock.recv(4096)
        except OSError:
            return b""


def test_huge_bodies_are_refused_before_they_are_read(tmp_path, server_env):
    with serve(tmp_path, env=server_env) as server:
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss
        declared = _post_body(server.url, 256 << 20, chunked=False)
        streamed = _post_body(server.url, 256 << 20, chunked=True)
        with __import__("concurrent.futures").futures.ThreadPoolExecutor(4) as pool:
            four = list(pool.map(lambda _: _post_body(server.url, 128 << 20, True), range(4)))
        after = process.memory_info().rss
        assert httpx.get(server.url + "/healthz").status_code == 200
    assert declared.startswith(b"HTTP/1.1 413")
    assert b"request body larger than 16384 bytes" in declared
    assert streamed.startswith(b"HTTP/1.1 413")
    assert all(answer.startswith(b"HTTP/1.1 413") or answer == b"" for answer in four)
    assert after - before < 32 << 20, (before >> 20, after >> 20)


# --- 8. malformed input -------------------------------------------------------------------


def test_malformed_input_is_a_422_that_echoes_nothing(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    auth = {"Authorization": f"Bearer {token_for()}"}
    with serve(tmp_path, env=server_env) as server, httpx.Client(base_url=server.url) as client:
        nul_user = client.post(
            "/api/auth/login", json={"username": "al\x00ice", "password": "pw-secret-1"}
        )
        surrogate = client.post(
            "/api/auth/login",
            content=b'{"username": "alice", "password": "pw-secret-2\\ud800"}',
            headers={"content-type": "application/json"},
        )
        too_long = client.post(
            "/api/auth/login", json={"username": "alice", "password": "pw-secret-3" * 200}
        )
        host_nul = client.get("/api/metrics/latest", params={"host": "a\x00b"}, headers=auth)
        history = [
            client.get(
                "/api/metrics/history", params={"metric_type": "cpu", **params}, headers=auth
            )
            for params in (
                {"start": "now-9999999999d"},
                {"start": "now-800000d"},
                {"end": "9999-12-31T23:59:59-14:00"},
            )
        ]
        nul_path = client.get("/%00")
        server.stop()
        log = server.log()
    for response in (nul_user, surrogate, too_long, host_nul, *history):
        assert response.status_code == 422, response.text
        assert "pw-secret" not in response.text
    assert nul_path.status_code in (400, 404)
    assert "Traceback" not in log
    assert "pw-secret" not in log


# --- 9. pings and replays -----------------------------------------------------------------


def test_a_second_resume_closes_the_connection(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    with serve(tmp_path, "--interval", "0.2", env=server_env) as server:
        ws_url = server.url.replace("http", "ws") + "/api/ws/metrics"

        async def replay_twice() -> tuple[int, int | None, str | None]:
            async with websockets.connect(ws_url, subprotocols=["bearer", token_for()]) as ws:
                await ws.send(json.dumps({"resume_from": 0}))
                replayed = 0
                await ws.send(json.dumps({"resume_from": 0}))
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                        replayed += 1
                except ConnectionClosed as exc:
                    return (
                        replayed,
                        exc.rcvd.code if exc.rcvd else None,
                        exc.rcvd.reason if exc.rcvd else None,
                    )

        time.sleep(2)
        _, code, reason = asyncio.run(replay_twice())
    assert code == 4429
    assert reason == "one resume_from per connection"


def _ping_flood(url: str, path: str, seconds: float) -> tuple[int, bool]:
    """Handshake by hand, then send pings and never read. Returns (pings sent, whether
    the server dropped the connection)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125  # masked, 125-byte payload
    sent, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(ping * 64)
            sent += 64
    except OSError:
        return sent, True
    finally:
        sock.close()
    return sent, False


def test_ping_floods_that_never_read_are_dropped(tmp_path, server_env):
    asyncio.run(add_user(server_env["PERFPULSE_DATABASE_URL"]))
    with serve(tmp_path, "--interval", "0.5", env=server_env) as server:
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss
        _, dropped_anonymous = _ping_flood(server.url, "/api/ws/metrics", 10)
        _, dropped_logged_in = _ping_flood(server.url, f"/api/ws/metrics?token={token_for()}", 15)
        after = process.memory_info().rss
    assert dropped_anonymous and dropped_logged_in
    assert after - before < 16 << 20, (before >> 20, after >> 20)


# --- 11. what the browser is told -------------------------------------------------------------


def test_security_headers_everywhere_and_no_docs_by_default(tmp_path, server_env):
    with serve(tmp_path, env=server_env) as server, httpx.Client(base_url=server.url) as client:
        responses = [client.get(path) for path in ("/", "/healthz", "/assets/none.js", "/docs")]
    assert responses[3].status_code == 404  # no Swagger UI from a CDN unless asked for
    for response in responses:
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
