"""The live stream against a real uvicorn server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest
import websockets
from jose import jwt
from websockets.exceptions import ConnectionClosed

from exporter.api.app import create_app
from exporter.auth.passwords import hash_password
from exporter.auth.tokens import issue_token
from exporter.storage import users
from tests.conftest import TEST_SECRET
from tests.servers import serve_in_thread

SECRET = TEST_SECRET.encode()


class Stream:
    def __init__(self, url: str, database_url: str) -> None:
        self.http = url
        self.ws = "ws" + url.removeprefix("http") + "/api/ws/metrics"
        self.database_url = database_url

    def token(self, username: str = "alice", **kwargs: object) -> str:
        return issue_token(SECRET, username, timedelta(minutes=5), **kwargs).token  # type: ignore[arg-type]


async def add_user(
    database_url: str,
    username: str = "alice",
    password: str = "password1",
    *,
    role: str = "viewer",
    hosts: list[str] | None = None,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await users.create(conn, username, await hash_password(password), role=role, hosts=hosts)
    finally:
        await conn.close()


@pytest.fixture
def stream(make_settings, clean_database_url) -> Iterator[Stream]:
    asyncio.run(add_user(clean_database_url))
    settings = make_settings(
        sampling_interval_seconds=0.1,
        ws_send_timeout_seconds=1.0,
        allowed_origins="https://dashboard.example",
        ws_ping_interval_seconds=1.0,
    )
    with serve_in_thread(create_app(settings), settings) as url:
        yield Stream(url, clean_database_url)


async def close_code(stream: Stream, url: str, **kwargs: object) -> tuple[int, str]:
    async with websockets.connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_valid_token_in_query_receives_snapshots(stream):
    async with websockets.connect(f"{stream.ws}?token={stream.token()}") as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        second = json.loads(await asyncio.wait_for(ws.recv(), 5))
    for key in ("cpu", "memory", "timestamp", "seq", "host", "network", "disk"):
        assert key in first
    assert first["cpu"]["available"] is True
    assert second["seq"] == first["seq"] + 1


async def test_token_in_subprotocol_is_accepted_and_echoed_as_bearer(stream):
    async with websockets.connect(stream.ws, subprotocols=["bearer", stream.token()]) as ws:
        assert ws.subprotocol == "bearer"
        assert "memory" in json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_invalid_token_is_refused_with_1008(stream):
    assert await close_code(stream, f"{stream.ws}?token=garbage") == (1008, "invalid token")
    assert await close_code(stream, stream.ws) == (1008, "missing token")


def _forged(kind: str) -> str:
    now = datetime.now(UTC)
    claims = {"sub": "alice", "iat": now, "exp": now + timedelta(minutes=5)}
    if kind == "expired":
        return issue_token(SECRET, "alice", timedelta(minutes=1), now - timedelta(hours=1)).token
    if kind == "tampered":
        header, _, signature = jwt.encode(claims, SECRET, algorithm="HS256").split(".")
        payload = {"sub": "admin", "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 300}
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        return f"{header}.{body}.{signature}"
    if kind == "alg-none":
        head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        payload = {"sub": "alice", "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 300}
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        return f"{head}.{body}."
    if kind == "other-key":
        return jwt.encode(claims, "another-key-" + "y" * 32, algorithm="HS256")
    if kind == "missing-exp":
        del claims["exp"]
        return jwt.encode(claims, SECRET, algorithm="HS256")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("expired", "token expired"),
        ("tampered", "invalid token"),
        ("alg-none", "invalid token"),
        ("other-key", "invalid token"),
        ("missing-exp", "invalid token"),
    ],
)
async def test_forged_tokens_are_refused_with_1008(stream, kind, reason):
    assert await close_code(stream, f"{stream.ws}?token={_forged(kind)}") == (1008, reason)


async def test_token_of_deleted_user_is_refused(stream):
    token = stream.token()
    conn = await asyncpg.connect(stream.database_url)
    try:
        assert await users.delete(conn, "alice")
    finally:
        await conn.close()
    assert await close_code(stream, f"{stream.ws}?token={token}") == (1008, "user no longer exists")


async def test_token_issued_before_password_change_is_refused(stream):
    token = stream.token(now=datetime.now(UTC) - timedelta(seconds=5))
    conn = await asyncpg.connect(stream.database_url)
    try:
        assert await users.set_password(conn, "alice", await hash_password("another-password"))
    finally:
        await conn.close()
    code, reason = await close_code(stream, f"{stream.ws}?token={token}")
    assert (code, reason) == (1008, "token issued before the password was changed")


async def test_cross_site_origin_is_refused(stream):
    url = f"{stream.ws}?token={stream.token()}"
    code = await close_code(stream, url, origin="https://evil.example")
    assert code == (1008, "origin not allowed")
    host = stream.http.removeprefix("http://")
    for origin in (f"http://{host}", "https://dashboard.example"):
        async with websockets.connect(url, origin=origin) as ws:
            assert "cpu" in json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_resume_from_replays_missed_snapshots_in_order(stream):
    url = f"{stream.ws}?token={stream.token()}"
    async with websockets.connect(url) as ws:
        last = json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"]
    await asyncio.sleep(0.6)  # about six snapshots missed
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"resume_from": last}).decode())
        seqs = [json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] for _ in range(8)]
    assert seqs[0] == last + 1
    assert seqs == list(range(last + 1, last + 9))


async def test_malformed_message_closes_with_1007(stream):
    async with websockets.connect(f"{stream.ws}?token={stream.token()}") as ws:
        await ws.send("not json")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


async def test_message_flood_is_cut_off(stream):
    async with websockets.connect(f"{stream.ws}?token={stream.token()}") as ws:
        for _ in range(20):
            await ws.send('{"resume_from": 0}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429


async def test_oversized_message_is_refused(stream):
    async with websockets.connect(f"{stream.ws}?token={stream.token()}") as ws:
        await ws.send("x" * 10_000)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def _stalled_client(ws_url: str, token: str) -> socket.socket:
    """A client that completes the handshake and then never reads (a fault injection:
    no real client library can be told to stop reading its socket)."""
    host, port = ws_url.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(b"0123456789abcdef").decode()
    sock.sendall(
        (
            f"GET /api/ws/metrics?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def _ws_metrics(http_url: str) -> dict[str, float]:
    text = httpx.get(http_url + "/metrics").text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("perfpulse_ws_")
    }


async def test_stalled_client_is_dropped_and_never_delays_the_others(stream):
    token = stream.token()
    stalled = await asyncio.to_thread(_stalled_client, stream.ws, token)
    try:
        received: list[tuple[int, float]] = []
        async with websockets.connect(f"{stream.ws}?token={token}") as ws:
            assert _ws_metrics(stream.http)["perfpulse_ws_clients"] == 2.0
            deadline = time.monotonic() + 4.0  # keepalive: 1 s ping + 1 s to answer
            while time.monotonic() < deadline:
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
                lag = time.time() - datetime.fromisoformat(snapshot["timestamp"]).timestamp()
                received.append((snapshot["seq"], lag))
            metrics = _ws_metrics(stream.http)
        assert metrics["perfpulse_ws_clients"] == 1.0  # the stalled one is gone, the reader stays
        seqs = [seq for seq, _ in received]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # not one snapshot missed
        assert len(seqs) >= 30
        assert max(lag for _, lag in received) < 1.0  # nobody waited on the stalled one
    finally:
        stalled.close()


class NeverCompletingSocket:
    """Stand-in for a connection whose send never completes (fault injection: a real
    socket only blocks once megabytes of kernel buffers have filled)."""

    def __init__(self) -> None:
        self.sent = 0

    async def send_text(self, text: str) -> None:
        self.sent += 1
        await asyncio.Event().wait()


async def test_send_that_stalls_past_the_timeout_evicts_the_client():
    from exporter.sinks.stream import Broadcaster, Evicted, Frame, send_queued

    broadcaster = Broadcaster(queue_size=2)
    client = broadcaster.connect()
    client.offer(Frame(1, "{}"))
    socket_ = NeverCompletingSocket()
    with pytest.raises(Evicted):
        await send_queued(socket_, client, send_timeout=0.2)  # type: ignore[arg-type]
    assert socket_.sent == 1


class StandInWriter:
    """Stand-in for a connection's direct writer: accepts frames, or refuses (paused)."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> bool:
        if self.accept:
            self.frames.append(frame)
        return self.accept


def test_direct_writes_while_the_client_keeps_up_queue_otherwise():
    from exporter.sinks.stream import Broadcaster, Frame

    broadcaster = Broadcaster(queue_size=4)
    client = broadcaster.connect()
    writer = StandInWriter(accept=True)
    client.direct = writer  # type: ignore[assignment]
    client.deliver(Frame(1, "{}", b"\x81\x02{}"))
    assert writer.frames == [b"\x81\x02{}"]
    assert broadcaster.sent_direct_total == 1
    writer.accept = False  # paused: the frame waits in the queue
    client.deliver(Frame(2, "{}", b"\x81\x02{}"))
    writer.accept = True
    client.deliver(Frame(3, "{}", b"\x81\x02{}"))  # must not overtake frame 2
    assert [f.seq for f in client._queue] == [2, 3]
    assert len(writer.frames) == 1


def test_direct_writer_only_for_uvicorns_sansio_protocol():
    from exporter.sinks.wire import DirectWriter, text_frame

    async def plain_send(message: object) -> None:
        pass

    assert DirectWriter.for_send(plain_send) is None
    assert DirectWriter.for_send(None) is None
    frame = text_frame(b'{"a":1}')
    assert frame == b"\x81\x07" + b'{"a":1}'
    big = text_frame(b"x" * 300)
    assert big[:4] == b"\x81\x7e\x01\x2c" and len(big) == 304


async def test_clients_that_keep_up_get_the_prebuilt_frame(stream):
    async with websockets.connect(f"{stream.ws}?token={stream.token()}") as ws:
        for _ in range(3):
            json.loads(await asyncio.wait_for(ws.recv(), 5))
    text = httpx.get(stream.http + "/metrics").text
    direct = next(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith('perfpulse_ws_messages_sent_total{path="direct"}')
    )
    assert direct >= 3


async def test_frames_published_during_a_replay_follow_it_in_order():
    """A resume replays kept frames through the sender while new ones are published:
    nothing is written directly past the replay, and the client sees every seq once, in
    order (the replay waits its turn for a slot meanwhile)."""
    from exporter.sinks.stream import Broadcaster, Frame, send_queued

    slots = asyncio.Semaphore(1)
    client = Broadcaster(queue_size=64, replay_slots=slots).connect()
    writer = StandInWriter(accept=True)
    sent: list[int] = []

    class Recorder:
        async def send_text(self, text: str) -> None:
            sent.append(int(text))

        async def close(self, code: int = 1000, reason: str | None = None) -> None:
            pass

    # Sends go through the ASGI path (recorded in order); a delivery may take the direct
    # path only while nothing waits before it.
    await slots.acquire()  # another replay holds the only slot
    client.resume([Frame(seq, str(seq)) for seq in range(1, 41)])
    sender = asyncio.create_task(send_queued(Recorder(), client, send_timeout=5))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    for seq in range(41, 45):  # published while the replay waits for its slot
        client.direct = writer  # type: ignore[assignment]
        client.deliver(Frame(seq, str(seq), b"wire"))
        client.direct = None
    slots.release()
    for _ in range(200):
        await asyncio.sleep(0)
        if len(sent) == 44:
            break
    sender.cancel()
    assert writer.frames == []  # nothing overtook the replay
    assert sent == list(range(1, 45))
