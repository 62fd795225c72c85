"""hardening — the second round of attacks, each measured on this checkout and, with
`--abuse-baseline DIR`, on another one (the code before the fixes), one after the other:

1. slow bodies: 3,000 requests announcing a 10,000-byte body that never comes, from eight
   loopback addresses, reopened as the server closes them, for 30 s; the longest any was
   held, /healthz latency meanwhile, the server's RSS before, at the peak and 20 s after;
2. costly history reads: a year of snapshots seeded hot for a host (one a minute), then 12 year-long
   reads at once whose clients leave after 2 s; how long their queries go on running in
   PostgreSQL after the clients left, snapshots buffered by the writer, another user's
   /api/auth/me and a new stream's first frame meanwhile;
3. a resume burst: 600 streams (20 users, 30 each) resuming from 0 at once at a 0.1 s
   interval with 600 snapshots kept; the slowest /healthz, ticks skipped, frames received;
   then 20 streams that reset right after resuming: lines logged;
4. ping floods: 4 logged-in connections, then 4 with a forged token, pinging as fast as
   they can for 10 s; /healthz p50 and max, ticks skipped;
5-9. logout, a token issued just before a password change, five wrong guesses from each
   of four addresses then the owner's right password from a fifth, a foreign Host
   header, invalid UTF-8 on the stream: what the server answers.

perfpulse runs on its embedded PostgreSQL in a temporary data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import websockets

from bench.common import machine, perfpulse
from exporter.server import raise_open_file_limit
from tests.attackers import ping_flood_argv, resume_burst_argv, slow_bodies_argv

PASSWORD = "bench-password"


def _database_url(data_dir: str) -> str:
    return f"postgresql://postgres@/perfpulse?host={data_dir}/pgdata"


async def _add_users(url: str, names: list[str]) -> None:
    from exporter.auth.passwords import hash_password

    digest = await hash_password(PASSWORD)
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO users (username, password_hash) VALUES ($1, $2) "
            "ON CONFLICT (username) DO NOTHING",
            [(name, digest) for name in names],
        )
    finally:
        await conn.close()


def _tokens(base: str, names: list[str]) -> list[str]:
    tokens = []
    for name in names:
        response = httpx.post(
            base + "/api/auth/login", json={"username": name, "password": PASSWORD}
        )
        if response.status_code != 200:
            raise RuntimeError(f"login as {name}: {response.status_code} {response.text}")
        tokens.append(response.json()["access_token"])
    return tokens


def _healthz(base: str) -> float:
    started = time.perf_counter()
    try:
        httpx.get(base + "/healthz", timeout=30)
    except httpx.HTTPError:
        return 30.0
    return time.perf_counter() - started


def _poll(base: str, running: Callable[[], bool]) -> list[float]:
    latencies = []
    while running():
        latencies.append(_healthz(base))
        time.sleep(0.05)
    return latencies or [0.0]


def _metric(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


@contextlib.contextmanager
def _server(tree: str | None, interval: float, env: dict[str, str], log: Path) -> Iterator[Any]:
    with perfpulse(interval, env, tree=tree, log=log) as server:
        yield server


# --- 1 ---------------------------------------------------------------------------------------


def slow_bodies(tree: str | None, log: Path) -> dict[str, Any]:
    with _server(tree, 1.0, {}, log) as server:
        proc = psutil.Process(server.pid)
        time.sleep(3)
        before = proc.memory_info().rss
        peak = [before]
        attacker = subprocess.Popen(slow_bodies_argv(server.base, 3000, 30), stdout=subprocess.PIPE)

        def running() -> bool:
            peak.append(proc.memory_info().rss)
            return attacker.poll() is None

        latencies = _poll(server.base, running)
        stats = json.loads(attacker.communicate()[0])
        time.sleep(20)
        after = proc.memory_info().rss
    return {
        "attacker": stats,
        "healthz_p50_ms": statistics.median(latencies) * 1e3,
        "healthz_max_ms": max(latencies) * 1e3,
        "rss_mib": [before / 2**20, max(peak) / 2**20, after / 2**20],
    }


# --- 2 ---------------------------------------------------------------------------------------


async def _seed_year(url: str) -> None:
    """A year of snapshots of host "seeded", one a minute, in daily hot partitions (as a
    database holds them before tiered storage, and after the upgrade until compacted):
    what a year-long read has to go through in either tree."""
    conn = await asyncpg.connect(url)
    try:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for d in range(365, 0, -1):
            day = today - timedelta(days=d)
            name = f"metrics_snapshots_p{day:%Y%m%d}"
            if not await conn.fetchval("SELECT 1 FROM pg_class WHERE relname = $1", name):
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF metrics_snapshots FOR VALUES "
                    f"FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
                )
        await conn.execute(
            """
            INSERT INTO metrics_snapshots ("timestamp", host, metric_type, metric_data)
            SELECT b, 'seeded', t, json_build_object(
                'usage_percent', 20.0, 'percent', 20.0, 'used_bytes', 1000, 'iowait_percent', 1)
            FROM unnest(ARRAY['cpu', 'memory', 'network', 'disk']) AS t,
                 generate_series($1::timestamptz - interval '365 days',
                                 $1::timestamptz - interval '1 minute', interval '1 minute') AS b
            """,
            today,
        )
        # Registered, as its agent would have registered it (history answers only for
        # this instance's own host and registered ones).
        await conn.execute(
            "INSERT INTO hosts (host, interval_seconds, version) VALUES ('seeded', 60, 'seeded') "
            "ON CONFLICT DO NOTHING"
        )
    finally:
        await conn.close()


async def _running_reads(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        value: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' AND pid <> "
            "pg_backend_pid() AND (query LIKE '%metrics_rollup_1m%' OR query LIKE "
            "'%metric_data::text%')"
        )
        return value
    finally:
        await conn.close()


def costly_history(tree: str | None, log: Path) -> dict[str, Any]:
    # The compactor stays off: the seeded year stays hot, as before its first passes.
    with _server(tree, 0.5, {"PERFPULSE_STORAGE_COMPACT": "false"}, log) as server:
        url = _database_url(server.data_dir)
        asyncio.run(_add_users(url, ["reader", "other"]))
        asyncio.run(_seed_year(url))
        reader, other = _tokens(server.base, ["reader", "other"])

        async def reads() -> list[str]:
            async def one(metric: str) -> str:
                async with httpx.AsyncClient(base_url=server.base, timeout=2.0) as client:
                    try:
                        response = await client.get(
                            "/api/metrics/history",
                            params={"metric_type": metric, "host": "seeded", "start": "now-365d"},
                            headers={"Authorization": f"Bearer {reader}"},
                        )
                    except httpx.TimeoutException:
                        return "left"
                    return str(response.status_code)

            kinds = ["cpu", "memory", "network", "disk"]
            return await asyncio.gather(*(one(kinds[i % 4]) for i in range(12)))

        results: list[str] = []
        thread = threading.Thread(target=lambda: results.extend(asyncio.run(reads())))
        buffered = [0.0]
        thread.start()
        time.sleep(0.5)
        started = time.perf_counter()
        me = httpx.get(
            server.base + "/api/auth/me", headers={"Authorization": f"Bearer {other}"}, timeout=60
        )
        me_ms = (time.perf_counter() - started) * 1e3

        async def first_frame() -> float:
            begun = time.perf_counter()
            async with websockets.connect(
                server.stream_url, subprotocols=["bearer", other], open_timeout=60
            ) as ws:
                await asyncio.wait_for(ws.recv(), 60)
            return (time.perf_counter() - begun) * 1e3

        try:
            stream_ms: float | str = asyncio.run(first_frame())
        except Exception as exc:
            stream_ms = type(exc).__name__
        while thread.is_alive():
            buffered.append(_metric(server.base, "perfpulse_writer_buffered_snapshots"))
            time.sleep(0.2)
        left = time.monotonic()
        while asyncio.run(_running_reads(url)) and time.monotonic() - left < 120:
            buffered.append(_metric(server.base, "perfpulse_writer_buffered_snapshots"))
            time.sleep(0.2)
        still_running_s = time.monotonic() - left
    return {
        "answers": {k: results.count(k) for k in sorted(set(results))},
        "queries_running_after_clients_left_s": still_running_s,
        "writer_buffered_max": max(buffered),
        "other_user_me_ms": me_ms if me.status_code == 200 else f"{me.status_code}",
        "new_stream_first_frame_ms": stream_ms,
    }


# --- 3 ---------------------------------------------------------------------------------------


def resume_burst(tree: str | None, log: Path) -> dict[str, Any]:
    env = {"PERFPULSE_WS_RESUME_BUFFER": "600"}
    with _server(tree, 0.1, env, log) as server:
        names = [f"user{i}" for i in range(20)]
        asyncio.run(_add_users(_database_url(server.data_dir), names))
        tokens = _tokens(server.base, names)
        time.sleep(61)  # 600 snapshots kept
        quiet = statistics.median(_healthz(server.base) for _ in range(20))
        skipped = _metric(server.base, "perfpulse_sampler_skipped_ticks_total")
        burst = subprocess.Popen(
            resume_burst_argv(server.base, tokens, 600, 30), stdout=subprocess.PIPE
        )
        latencies = _poll(server.base, lambda: burst.poll() is None)
        stats = json.loads(burst.communicate()[0])
        skipped = _metric(server.base, "perfpulse_sampler_skipped_ticks_total") - skipped
        lines = len(log.read_text().splitlines())
        subprocess.run(
            resume_burst_argv(server.base, tokens[:1], 20, 5, reset=True), capture_output=True
        )
        time.sleep(3)
        reset_lines = log.read_text().splitlines()[lines:]
    return {
        "burst": stats,
        "healthz_quiet_ms": quiet * 1e3,
        "healthz_max_ms": max(latencies) * 1e3,
        "ticks_skipped": skipped,
        "reset_lines": len(reset_lines),
        "reset_send_warnings": sum("socket.send() raised" in line for line in reset_lines),
    }


# --- 4 ---------------------------------------------------------------------------------------


def ping_floods(tree: str | None, log: Path) -> dict[str, Any]:
    with _server(tree, 0.5, {}, log) as server:
        result = {}
        for kind, token in (("token", server.token), ("forged", server.token + "x")):
            skipped = _metric(server.base, "perfpulse_sampler_skipped_ticks_total")
            flood = subprocess.Popen(
                ping_flood_argv(server.base, token, 4, 10), stdout=subprocess.PIPE
            )
            latencies = _poll(server.base, lambda f=flood: f.poll() is None)  # type: ignore[misc]
            stats = json.loads(flood.communicate()[0])
            result[kind] = {
                "attacker": stats,
                "healthz_p50_ms": statistics.median(latencies) * 1e3,
                "healthz_max_ms": max(latencies) * 1e3,
                "ticks_skipped": _metric(server.base, "perfpulse_sampler_skipped_ticks_total")
                - skipped,
            }
    return result


# --- 5 to 9 ----------------------------------------------------------------------------------


def _cli(tree: str | None, data_dir: str, *argv: str, stdin: str = "") -> int:
    env = {"PERFPULSE_DATA_DIR": data_dir, **({"PYTHONPATH": tree} if tree else {})}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *argv],
        input=stdin,
        text=True,
        capture_output=True,
        env={**__import__("os").environ, **env},
        cwd=tree,
    ).returncode


def sessions_and_inputs(tree: str | None, log: Path) -> dict[str, Any]:
    with _server(tree, 1.0, {"PERFPULSE_LOG_LEVEL": "info"}, log) as server:
        base = server.base
        url = _database_url(server.data_dir)
        asyncio.run(_add_users(url, ["erin", "dave"]))
        token = _tokens(base, ["erin"])[0]
        auth = {"Authorization": f"Bearer {token}"}
        logout = httpx.post(base + "/api/auth/logout", headers=auth).status_code
        after_logout = httpx.get(base + "/api/auth/me", headers=auth).status_code
        survived = 0
        for round_ in range(5):
            fresh = _tokens(base, ["erin"])[0] if round_ == 0 else _login(base, "erin", round_)
            _cli(tree, server.data_dir, "users", "set-password", "erin", "--password-stdin",
                 stdin=f"{PASSWORD}-{round_ + 1}\n")  # fmt: skip
            me = httpx.get(base + "/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})
            survived += me.status_code == 200
        for address in range(2, 6):
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{address}")
            with httpx.Client(transport=transport) as client:
                for i in range(5):
                    client.post(
                        base + "/api/auth/login", json={"username": "dave", "password": f"x{i}"}
                    )
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.9")) as client:
            started = time.perf_counter()
            owner = client.post(
                base + "/api/auth/login", json={"username": "dave", "password": PASSWORD}
            )
            owner_ms = (time.perf_counter() - started) * 1e3
        foreign = httpx.get(base + "/healthz", headers={"Host": "attacker.example"}).status_code
        lines = len(log.read_text().splitlines())
        code = asyncio.run(_bad_utf8(server.stream_url, server.token))
        time.sleep(0.5)
        logged = log.read_text().splitlines()[lines:]
    return {
        "logout_status": logout,
        "token_after_logout": after_logout,
        "tokens_surviving_password_change": f"{survived} of 5",
        "owner_after_guesses": f"{owner.status_code} in {owner_ms:.0f} ms",
        "foreign_host": foreign,
        "invalid_utf8_close": code,
        "invalid_utf8_log_lines": len(
            [line for line in logged if "UTF-8" in line or "Trace" in line]
        )
        + sum(line.startswith("  ") for line in logged),
    }


def _login(base: str, name: str, round_: int) -> str:
    token: str = httpx.post(
        base + "/api/auth/login", json={"username": name, "password": f"{PASSWORD}-{round_}"}
    ).json()["access_token"]
    return token


async def _bad_utf8(url: str, token: str) -> int | None:
    async with websockets.connect(url, subprotocols=["bearer", token]) as ws:
        await ws.recv()
        ws.protocol.send_frame(websockets.frames.Frame(websockets.frames.Opcode.TEXT, b"\xff{"))
        ws.send_data()
        try:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            return None


SCENARIOS = {
    "slow_bodies": slow_bodies,
    "costly_history": costly_history,
    "resume_burst": resume_burst,
    "ping_floods": ping_floods,
    "sessions_and_inputs": sessions_and_inputs,
}


def run(baseline: str | None) -> dict[str, Any]:
    raise_open_file_limit()
    result: dict[str, Any] = {"machine": machine(), "trees": {}}
    trees = {"after": None, **({"before": baseline} if baseline else {})}
    with __import__("tempfile").TemporaryDirectory() as logs:
        for label, tree in trees.items():
            measured: dict[str, Any] = {}
            for name, scenario in SCENARIOS.items():
                measured[name] = scenario(tree, Path(logs, f"{label}-{name}.log"))
            result["trees"][label] = measured
    return result


def report(result: dict[str, Any]) -> str:
    trees = result["trees"]
    labels = [label for label in ("before", "after") if label in trees]

    def row(what: str, get: Callable[[dict[str, Any]], object]) -> str:
        cells = []
        for label in labels:
            try:
                value = get(trees[label])
            except (KeyError, TypeError, ValueError):
                value = "n/a"
            cells.append(f"{value:.1f}" if isinstance(value, float) else str(value))
        return f"| {what} | " + " | ".join(cells) + " |"

    lines = [f"Machine: {result['machine']}", "", "| measure | " + " | ".join(labels) + " |"]
    lines.append("|---|" + "---|" * len(labels))
    lines += [
        row("slow bodies: longest held (s)", lambda t: t["slow_bodies"]["attacker"]["longest_held"]),
        row("slow bodies: answers", lambda t: t["slow_bodies"]["attacker"]["answers"]),
        row("slow bodies: /healthz p50 / max (ms)", lambda t: "{:.1f} / {:.1f}".format(
            t["slow_bodies"]["healthz_p50_ms"], t["slow_bodies"]["healthz_max_ms"])),
        row("slow bodies: RSS before / peak / 20 s after (MiB)",
            lambda t: " / ".join(f"{v:.0f}" for v in t["slow_bodies"]["rss_mib"])),
        row("history: answers to 12 year-long reads", lambda t: t["costly_history"]["answers"]),
        row("history: queries running after clients left (s)",
            lambda t: t["costly_history"]["queries_running_after_clients_left_s"]),
        row("history: writer's most snapshots buffered",
            lambda t: t["costly_history"]["writer_buffered_max"]),
        row("history: another user's /me (ms)", lambda t: t["costly_history"]["other_user_me_ms"]),
        row("history: a new stream's first frame (ms)",
            lambda t: t["costly_history"]["new_stream_first_frame_ms"]),
        row("resume burst: streams opened / frames received",
            lambda t: f"{t['resume_burst']['burst']['opened']} / {t['resume_burst']['burst']['frames']}"),
        row("resume burst: /healthz quiet / max (ms)", lambda t: "{:.1f} / {:.1f}".format(
            t["resume_burst"]["healthz_quiet_ms"], t["resume_burst"]["healthz_max_ms"])),
        row("resume burst: ticks skipped", lambda t: t["resume_burst"]["ticks_skipped"]),
        row("20 resets after resuming: log lines / send warnings", lambda t: "{} / {}".format(
            t["resume_burst"]["reset_lines"], t["resume_burst"]["reset_send_warnings"])),
    ]  # fmt: skip
    for kind in ("token", "forged"):
        lines += [
            row(f"ping flood ({kind}): pings sent / connections dropped", lambda t, k=kind:
                f"{t['ping_floods'][k]['attacker']['pings']} / {t['ping_floods'][k]['attacker']['dropped']}"),
            row(f"ping flood ({kind}): /healthz p50 / max (ms)", lambda t, k=kind: "{:.1f} / {:.1f}".format(
                t["ping_floods"][k]["healthz_p50_ms"], t["ping_floods"][k]["healthz_max_ms"])),
            row(f"ping flood ({kind}): ticks skipped", lambda t, k=kind: t["ping_floods"][k]["ticks_skipped"]),
        ]  # fmt: skip
    s = "sessions_and_inputs"
    lines += [
        row("POST /api/auth/logout; the token after it", lambda t: "{} ; {}".format(
            t[s]["logout_status"], t[s]["token_after_logout"])),
        row("tokens issued just before a password change, working after it",
            lambda t: t[s]["tokens_surviving_password_change"]),
        row("owner's right password after 20 guesses from 4 addresses",
            lambda t: t[s]["owner_after_guesses"]),
        row("Host: attacker.example", lambda t: t[s]["foreign_host"]),
        row("invalid UTF-8: close code; lines logged",
            lambda t: f"{t[s]['invalid_utf8_close']} ; {t[s]['invalid_utf8_log_lines']}"),
    ]  # fmt: skip
    return "\n".join(lines)
