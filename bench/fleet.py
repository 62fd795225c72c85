"""Fleet: many simulated agents on one PostgreSQL, through PgBouncer, watched live.

Each simulated agent is what `perfpulse serve` does for the database, on the real code
path: every tick it builds a real Snapshot (this machine's collector results, its own host
name, seq and time), relays it (`sinks.relay.publish_sql`, what an agent sends through PgBouncer), and
by the batch writer's rule writes its buffered snapshots (`ingest.write_batch`, as the batch
writer does). Each agent has its own connection through a real PgBouncer in transaction
mode. A real `perfpulse serve` with PERFPULSE_COLLECT=false listens on the direct URL, and
a separate process streams from it: the fleet list (`host=*`) and one host (`host=NAME`),
and asks for one host's 24 h history while it runs.

Agents stamp seq with the tick's wall-clock time in microseconds, so a client computes the
delay from the agent's tick to its own receipt from any message (the same machine's clock).

    python -m bench fleet --fleet-hosts 100 1000 --fleet-seconds 600
    python -m bench fleet --fleet-knee --fleet-interval 5

Needs the machine's PostgreSQL (PERFPULSE_BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres): a database of its own is created there
and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
import os
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import orjson
import psutil

from bench.common import machine, percentile, perfpulse, scratch_database
from exporter.config import load_settings
from exporter.runtime import Runtime
from exporter.sampler import Snapshot
from exporter.sinks.relay import publish_args, publish_sql
from exporter.sinks.writer import to_stored
from exporter.storage import blocks, ingest, partitions, paths
from exporter.storage.aggregates import MINUTE_US, aggregate
from exporter.storage.blocks import Block, column
from exporter.storage.chunks import micros
from exporter.storage.database import TransactionPooledConnection
from exporter.storage.fields import FIELDS
from exporter.storage.ingest import StoredSnapshot
from tests.pgbouncer import RELAY_SUFFIX, pgbouncer, relay_url, show

ADMIN_URL = os.environ.get(
    "PERFPULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BATCH = 10  # PERFPULSE_BATCH_SIZE's default
MAX_AGE = 5.0  # PERFPULSE_BATCH_MAX_AGE_SECONDS's default: at 1 s, flushes of ~5
DRAIN = 1000  # PERFPULSE_WRITER_DRAIN_BATCH's default
WATCHED = "sim-00001"
# What history takes on disk: every tier's partitions and the minute rollups, with their
# indexes and TOAST (not live_snapshots, one row per host, nor WAL).
HISTORY_BYTES = """
SELECT sum(pg_total_relation_size(oid)) FROM pg_class
WHERE relkind = 'r' AND (relname ~ '^metrics_(snapshots|chunks|minutes|hours)_p[0-9]+$'
                         OR relname = 'metrics_rollup_1m')
"""
DASHBOARD = Path(__file__).parent.parent / "exporter" / "dashboard"
# PgBouncer's connections to PostgreSQL, for every agent.
SERVER_POOL = int(os.environ.get("PERFPULSE_BENCH_SERVER_POOL", "40"))
# The relay's own PgBouncer pool (PERFPULSE_DATABASE_RELAY_URL); 0: the relay shares the
# writers' pool, as before that setting.
RELAY_POOL = int(os.environ.get("PERFPULSE_BENCH_RELAY_POOL", "8"))
# What this database's busy backends wait on, sampled every WAIT_SAMPLE_SECONDS through the
# measured window: `cpu` is running (no wait event). And who waits for the lock a NOTIFYing
# transaction holds on the whole instance from pre-commit to commit (an `object` lock on
# database 0 of pg_database: PreCommit_Notify in async.c).
WAIT_SAMPLE_SECONDS = 0.1
WAITS = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'cpu') AS wait, count(*) AS n
FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()
GROUP BY 1
"""
NOTIFY_LOCK_WAITERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'object' AND database = 0 AND classid = 'pg_database'::regclass
  AND NOT granted
"""


async def _template() -> Snapshot:
    runtime = Runtime(load_settings(sampling_interval_seconds=1.0, hostname="template"))
    async with runtime.sampling_only() as sampler:
        await sampler.sample_once()
        await asyncio.sleep(0.5)
        return await sampler.sample_once()


# As the batch writer writes through PgBouncer (a perfpulse from before one-query batches
# takes none: `--abuse-baseline`-style runs of an older checkout).
WRITE_OPTIONS = (
    {"simple": True} if "simple" in inspect.signature(ingest.write_batch).parameters else {}
)
# The simulated agents' statements are built once and only their seq and time change per
# tick (the same text the real relay would send, its values written in): the simulation
# must cost little beside what it measures.
SENTINEL_SEQ = 987654321987654
SENTINEL_TIME = datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


class Statements:
    """An agent's relay statement as text with its seq and time to fill in, and the
    stored rows of the template (the same every tick: only time and host are not in them)."""

    def __init__(self, template: Snapshot, host: str, interval: float) -> None:
        shaped = Snapshot(SENTINEL_SEQ, SENTINEL_TIME, host, template.results)
        self.sql = publish_sql(publish_args(shaped, interval))
        self.seq = str(SENTINEL_SEQ)
        self.time = SENTINEL_TIME.isoformat()
        assert self.sql.count(self.seq) >= 2 and self.sql.count(self.time) >= 2, self.sql[:300]
        self.rows = to_stored(shaped).rows

    def publish(self, seq: int, taken: datetime) -> str:
        return self.sql.replace(self.seq, str(seq)).replace(self.time, taken.isoformat())

    def stored(self, taken: datetime, host: str) -> StoredSnapshot:
        return StoredSnapshot(taken, host, self.rows)


@dataclass
class Agent:
    host: str
    conn: asyncpg.Connection  # the relay's
    writer: asyncpg.Connection  # the batch writer's: an agent's second connection
    offset: float
    pending: list[StoredSnapshot] = field(default_factory=list)
    flush: asyncio.Event = field(default_factory=asyncio.Event)
    writing: asyncio.Task[None] | None = None
    stopping: bool = False
    # Agents start at different times, so their flushes spread over the batch age: the
    # first one comes after a random part of it.
    first_age: float = field(default_factory=lambda: random.uniform(0, MAX_AGE))
    statements: Statements | None = None
    produced: int = 0
    published: int = 0
    skipped: int = 0
    write_seconds: list[float] = field(default_factory=list)


async def _agent(
    agent: Agent, template: Snapshot, interval: float, start: float, stop: float
) -> None:
    """Tick on schedule; relay the newest snapshot (skip it when behind, as the real
    publisher does); hand batches to the writer, which writes on its own connection, as
    the real batch writer does; never drop a snapshot."""
    statements = agent.statements or Statements(template, agent.host, interval)
    agent.statements = statements
    agent.stopping = False
    agent.writing = asyncio.create_task(_writer(agent))
    tick = 0
    try:
        while True:
            due = start + agent.offset + tick * interval
            if due >= stop:
                break
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            seq, taken = int(due * 1e6), datetime.fromtimestamp(due, UTC)
            agent.produced += 1
            agent.pending.append(statements.stored(taken, agent.host))
            # The batch writer's rule: a full batch, or an oldest snapshot MAX_AGE old.
            oldest = agent.pending[0].timestamp.timestamp()
            if len(agent.pending) >= BATCH or now - oldest >= (agent.first_age or MAX_AGE) - 1e-3:
                agent.first_age = 0.0
                agent.flush.set()
            if now - due < interval:
                # What an agent sends through PgBouncer (PERFPULSE_DATABASE_TRANSACTION_POOLING).
                await agent.conn.execute(statements.publish(seq, taken))
                agent.published += 1
            else:
                agent.skipped += 1
            tick += 1
            # Catch up on the schedule rather than replay every missed tick at once.
            tick = max(tick, int((time.time() - start - agent.offset) / interval))
    finally:
        agent.stopping = True
        agent.flush.set()
        await agent.writing  # its write in progress, if any; the rest is _final_flush's


async def _writer(agent: Agent) -> None:
    while True:
        await agent.flush.wait()
        agent.flush.clear()
        if agent.stopping:
            return
        chunk = agent.pending[:DRAIN]
        if not chunk:
            continue
        started = time.perf_counter()
        await ingest.write_batch(agent.writer, chunk, **WRITE_OPTIONS)
        agent.write_seconds.append(time.perf_counter() - started)
        del agent.pending[: len(chunk)]


async def _final_flush(agent: Agent) -> None:
    while agent.pending:
        chunk = agent.pending[:DRAIN]
        await ingest.write_batch(agent.writer, chunk, **WRITE_OPTIONS)
        del agent.pending[: len(chunk)]


async def _stored_snapshots(conn: asyncpg.Connection) -> int:
    """Snapshots stored, hot or compacted, each once (its cpu section, by host and time).
    The dashboard instance compacts during a long run, and a compacted window's rows stay
    in the hot partition until the whole partition goes: rows are not a count."""
    stored: set[tuple[str, int]] = set()
    for row in await conn.fetch(
        "SELECT host, \"timestamp\" FROM metrics_snapshots WHERE metric_type = 'cpu'"
    ):
        stored.add((row["host"], micros(row["timestamp"])))
    for row in await conn.fetch("SELECT host, data FROM metrics_chunks WHERE metric_type = 'cpu'"):
        host = row["host"]
        stored.update((host, ts) for ts in blocks.decode(row["data"], []).timestamps.tolist())
    return len(stored)


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _cpu_by_pid(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
    return seconds


def _postgres_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "username"])
        if p.info["name"] == "postgres" and p.info["username"] == "postgres"
    ]


# Installed before the dashboard's own scripts: every long task (over 50 ms) of the page.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: 'longtask', buffered: true });
"""


async def _fleet_page(base: str, token: str, start: float, seconds: float) -> dict[str, Any]:
    """The Fleet page in Debian's Chromium for up to 60 s of the window: long tasks (a
    PerformanceObserver), and how many rows the page holds against the hosts it lists."""
    import shutil

    from playwright.async_api import async_playwright

    from tests.test_browser import CHROMIUM_ARGS

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.add_init_script(
            f"sessionStorage.setItem('perfpulse.token', {orjson.dumps(token).decode()});"
            "sessionStorage.setItem('perfpulse.token.user', 'admin');" + LONG_TASKS
        )
        await asyncio.sleep(max(0.0, start - 1 - time.time()))
        await page.goto(base + "/fleet")
        await page.wait_for_selector(".row.host")
        watched = min(60.0, seconds - 5)
        await page.evaluate("window.__longTasks = []")
        await asyncio.sleep(watched)
        tasks = await page.evaluate("window.__longTasks")
        rows = await page.locator(".row.host").count()
        counts = await page.locator("[data-test=counts]").inner_text()
        await browser.close()
    return {"seconds": watched, "long_tasks_ms": tasks, "rows_in_page": rows, "counts": counts}


def _clients(
    base: str, token: str, start: float, seconds: float, browser: bool, results: Any
) -> None:
    """In its own process: a fleet stream, one host's stream, history queries, and with
    `browser` the Fleet page in Chromium."""
    import websockets

    async def main() -> dict[str, Any]:
        fleet: list[float] = []
        single: list[float] = []
        history: list[float] = []
        history_at: list[float] = []  # when each was asked, seconds into the window
        compacted: list[tuple[float, float]] = []  # (when, the compactor's total so far)
        healthz: list[float] = []
        me: list[float] = []
        ws_url = base.replace("http", "ws") + "/api/ws/metrics"
        deadline = start + seconds

        backfill: dict[str, Any] = {}

        async def probe_backfill() -> None:
            """Another host's stream opened two minutes into the run with `backfill=120`:
            how long its first message (the stored snapshots) takes, and what it holds."""
            await asyncio.sleep(max(0.0, start + min(125.0, seconds * 0.8) - time.time()))
            host = f"sim-{2:05d}"
            connected = time.perf_counter()
            async with websockets.connect(
                f"{ws_url}?token={token}&host={host}&backfill=120", max_size=None
            ) as ws:
                text = await ws.recv()
            first = orjson.loads(text)
            if first.get("type") != "backfill":
                return  # a perfpulse from before backfill
            backfill["ms"] = round((time.perf_counter() - connected) * 1000, 1)
            backfill["snapshots"] = len(first["snapshots"])
            backfill["bytes"] = len(text)

        async def read(query: str, into: list[float]) -> None:
            await asyncio.sleep(max(0.0, start - 1 - time.time()))  # the hosts registered
            async with websockets.connect(f"{ws_url}?token={token}&{query}", max_size=None) as ws:
                while time.time() < deadline:
                    try:
                        text = await asyncio.wait_for(ws.recv(), deadline - time.time())
                    except TimeoutError:
                        return
                    received = time.time()
                    message = orjson.loads(text)
                    seq = message.get("seq")
                    # Only the measured window; the fleet list on connect and a host
                    # stream's first snapshot (the latest kept, fetched on connect) are
                    # not relay delays.
                    if (
                        received < start
                        or message.get("type") == "hosts"
                        or not isinstance(seq, int)
                    ):
                        continue
                    into.append(received - seq / 1e6)

        async def ask_history() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                while time.time() < deadline:
                    host = f"sim-{random.randint(1, 100):05d}"
                    started = time.perf_counter()
                    response = await client.get(
                        "/api/metrics/history",
                        params={"metric_type": "cpu", "start": "now-24h", "host": host},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    elapsed = time.perf_counter() - started
                    if response.status_code == 200:
                        history.append(elapsed)
                        history_at.append(time.time() - start)
                    compacted.append((time.time() - start, await _compacted(client)))
                    # Beside it, what any request costs now: one that asks PostgreSQL
                    # nothing (healthz) and one that checks its token (auth/me).
                    for path, into in (("/healthz", healthz), ("/api/auth/me", me)):
                        began = time.perf_counter()
                        answer = await client.get(
                            path, headers={"Authorization": f"Bearer {token}"}
                        )
                        if answer.status_code == 200:
                            into.append(time.perf_counter() - began)
                    await asyncio.sleep(2.0)

        page = _fleet_page(base, token, start, seconds) if browser else asyncio.sleep(0)
        *_, shown, _ = await asyncio.gather(
            read("host=*", fleet),
            read(f"host={WATCHED}", single),
            ask_history(),
            page,
            probe_backfill(),
        )
        return {
            "fleet": fleet,
            "single": single,
            "history": history,
            "history_at": history_at,
            "compacted": compacted,
            "healthz": healthz,
            "me": me,
            "page": shown,
            "backfill": backfill,
        }

    results.put(asyncio.run(main()))


async def _prefill_history(url: str, hosts: int, started: datetime) -> float:
    """24 h of the cpu section's minute aggregates for every host (what a 24 h history
    query reads: one row an hour, as the compactor leaves them), ending where the run
    begins; returns the seconds it took."""
    began = time.perf_counter()
    first = started.replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)
    rng = random.Random(1)
    seconds = np.arange(3600, dtype=np.int64) * 1_000_000 + micros(first)
    hour = Block(
        seconds,
        {
            paths.render(tuple(path)): column([round(rng.uniform(0, 100), 2) for _ in range(3600)])
            for _, path in FIELDS["cpu"]
        },
    )
    minutes = aggregate(hour, MINUTE_US)
    blob, rows, numbers = blocks.encode(minutes), minutes.rows, minutes.numbers()
    records = [
        (
            f"sim-{h:05d}",
            "cpu",
            first + timedelta(hours=k),
            rows,
            numbers,
            blocks.shifted(blob, k * 3_600_000_000),
        )
        for k in range(24)
        for h in range(1, hosts + 1)
    ]
    conn = await asyncpg.connect(url)
    try:
        await partitions.ensure(conn, partitions.MINUTES, [first, started])
        await conn.copy_records_to_table(
            "metrics_minutes",
            columns=["host", "metric_type", "start", "rows", "numbers", "data"],
            records=records,
        )
        await conn.execute("VACUUM ANALYZE metrics_minutes")
        # The prefill's WAL would otherwise be checkpointed inside the measured window.
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.perf_counter() - began


async def _sample_waits(url: str, start: float, stop: float, pooled: str) -> dict[str, Any]:
    """Wait events of this database's active backends every WAIT_SAMPLE_SECONDS, waiters
    for the NOTIFY lock, and PgBouncer's waiting clients (SHOW POOLS) once a second."""
    waits: Counter[str] = Counter()
    notify_waiters: list[int] = []
    bouncer_waiting: list[int] = []
    bouncer_maxwait_ms: list[float] = []
    relay_waiting: list[int] = []
    relay_maxwait_ms: list[float] = []
    samples = 0
    conn = await asyncpg.connect(url)
    next_pool_sample = 0.0
    try:
        await asyncio.sleep(max(0.0, start - time.time()))
        while time.time() < stop:
            for row in await conn.fetch(WAITS):
                waits[row["wait"]] += row["n"]
            notify_waiters.append(await conn.fetchval(NOTIFY_LOCK_WAITERS))
            samples += 1
            if time.time() >= next_pool_sample:
                next_pool_sample = time.time() + 1.0
                pools = await _bouncer_pools(pooled)
                bouncer_waiting.append(pools["writers"][0])
                bouncer_maxwait_ms.append(pools["writers"][1])
                relay_waiting.append(pools["relay"][0])
                relay_maxwait_ms.append(pools["relay"][1])
            await asyncio.sleep(WAIT_SAMPLE_SECONDS)
    finally:
        await conn.close()
    return {
        "samples": samples,
        "per_sample": {k: round(v / max(samples, 1), 3) for k, v in waits.most_common()},
        "notify_lock_waiters_mean": round(sum(notify_waiters) / max(len(notify_waiters), 1), 2),
        "notify_lock_waiters_max": max(notify_waiters, default=0),
        "pgbouncer_waiting_clients_mean": round(
            sum(bouncer_waiting) / max(len(bouncer_waiting), 1), 2
        ),
        "pgbouncer_waiting_clients_max": max(bouncer_waiting, default=0),
        "pgbouncer_maxwait_ms_max": max(bouncer_maxwait_ms, default=0.0),
        "relay_pool_waiting_clients_mean": round(
            sum(relay_waiting) / max(len(relay_waiting), 1), 2
        ),
        "relay_pool_maxwait_ms_max": max(relay_maxwait_ms, default=0.0),
    }


async def _bouncer_pools(pooled: str) -> dict[str, tuple[int, float]]:
    """Per pool (the writers', the relay's): clients waiting for a server connection and
    the longest wait in ms, from PgBouncer's console (`SHOW POOLS`)."""
    pools = {"writers": (0, 0.0), "relay": (0, 0.0)}
    for row in await asyncio.to_thread(show, pooled, "POOLS"):
        if row["database"] == "pgbouncer":
            continue
        which = "relay" if row["database"].endswith(RELAY_SUFFIX) else "writers"
        waiting, maxwait = pools[which]
        pools[which] = (
            waiting + int(row["cl_waiting"]),
            max(maxwait, int(row["maxwait"]) * 1000 + int(row["maxwait_us"]) / 1000),
        )
    return pools


async def _one(
    hosts: int, interval: float, seconds: float, workers: int, browser: bool = False
) -> dict[str, Any]:
    async with scratch_database(ADMIN_URL, f"perfpulse_bench_fleet_{os.getpid()}") as url:
        return await _measure(url, hosts, interval, seconds, workers, browser)


def _agents_worker(
    pooled: str,
    names: list[str],
    interval: float,
    warm: float,
    start: float,
    seconds: float,
    results: Any,
) -> None:
    """In its own process: these agents, each with its own connection through PgBouncer;
    one tick at `warm` (registration), then `seconds` of ticks from `start`."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> dict[str, Any]:
        template = await _template()
        conns = []
        relay = relay_url(pooled) if RELAY_POOL else pooled
        for chunk in range(0, 2 * len(names), 200):  # PgBouncer accepts faster in bursts
            conns += await asyncio.gather(
                *(
                    asyncpg.connect(
                        relay if k % 2 == 0 else pooled,
                        statement_cache_size=0,
                        connection_class=TransactionPooledConnection,
                    )
                    for k in range(chunk, min(chunk + 200, 2 * len(names)))
                )
            )
        agents = [
            Agent(name, conns[2 * i], conns[2 * i + 1], random.uniform(0, interval))
            for i, name in enumerate(names)
        ]
        await asyncio.gather(
            *(_agent(a, template, interval, warm, warm + interval) for a in agents)
        )
        backlog: list[int] = []

        async def sample_backlog() -> None:
            while True:
                await asyncio.sleep(5 - (time.time() - start) % 5)
                backlog.append(sum(len(a.pending) for a in agents))

        sampler = asyncio.create_task(sample_backlog())
        await asyncio.gather(
            *(_agent(a, template, interval, start, start + seconds) for a in agents)
        )
        sampler.cancel()
        ended = time.time()
        await asyncio.gather(*(_final_flush(a) for a in agents))
        await asyncio.gather(*(c.close() for c in conns))
        return {
            "ended": ended,
            "backlog": backlog,
            "produced": sum(a.produced for a in agents),
            "published": sum(a.published for a in agents),
            "skipped": sum(a.skipped for a in agents),
            "writes": [w for a in agents for w in a.write_seconds],
        }

    results.put(asyncio.run(main()))


async def _measure(
    url: str, hosts: int, interval: float, seconds: float, workers: int, browser: bool
) -> dict[str, Any]:
    prefill = await _prefill_history(url, hosts, datetime.now(UTC))
    context = multiprocessing.get_context("spawn")
    with pgbouncer(
        url, pool_size=SERVER_POOL, max_clients=2 * hosts + 100, relay_pool=RELAY_POOL
    ) as pooled:
        bouncer = next(
            p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "pgbouncer"
        )
        dashboard_env = {
            "PERFPULSE_DATABASE_URL": url,
            "PERFPULSE_COLLECT": "false",
            "PERFPULSE_WS_QUEUE_SIZE": "64",
            "PERFPULSE_DASHBOARD_DIR": str(DASHBOARD),
        }
        with perfpulse(interval, dashboard_env) as dashboard:
            names = [f"sim-{i + 1:05d}" for i in range(hosts)]
            # Connections and a first tick (registration) before the measured window.
            warm = time.time() + 10 + hosts / 500
            start = warm + interval + 3
            agent_results: Any = context.Queue()
            procs = [
                context.Process(
                    target=_agents_worker,
                    args=(pooled, names[k::workers], interval, warm, start, seconds, agent_results),
                )
                for k in range(workers)
            ]
            for proc in procs:
                proc.start()
            client_results: Any = context.Queue()
            clients = context.Process(
                target=_clients,
                args=(dashboard.base, dashboard.token, start, seconds, browser, client_results),
            )
            clients.start()
            watched = {
                "pgbouncer": [bouncer],
                "dashboard": [psutil.Process(dashboard.pid)],
                "agents": [psutil.Process(p.pid) for p in procs],
            }
            probe = await asyncpg.connect(url)
            waits = asyncio.create_task(_sample_waits(url, start, start + seconds, pooled))
            await asyncio.sleep(max(0.0, start - time.time()))
            cpu0 = {k: _cpu_seconds(v) for k, v in watched.items()}
            # PostgreSQL's backends come and go (PgBouncer opens them as needed): every
            # process at the end, less what it had used before the window if it existed.
            postgres0 = _cpu_by_pid(_postgres_processes())
            wal0 = await probe.fetchval("SELECT pg_current_wal_lsn()")
            size0 = await probe.fetchval(HISTORY_BYTES)
            stored0 = await _stored_snapshots(probe)
            await asyncio.sleep(max(0.0, start + seconds - time.time()))
            cpu1 = {k: _cpu_seconds(v) for k, v in watched.items()}
            waited = await waits
            postgres1 = _cpu_by_pid(_postgres_processes())
            cpu0["postgres"] = 0.0
            cpu1["postgres"] = sum(t - postgres0.get(pid, 0.0) for pid, t in postgres1.items())
            elapsed = time.time() - start
            wal = await probe.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", wal0)
            stored_during = await _stored_snapshots(probe) - stored0
            size1 = await probe.fetchval(HISTORY_BYTES)
            live_bytes = await probe.fetchval("SELECT pg_total_relation_size('live_snapshots')")
            parts = [agent_results.get(timeout=seconds + 600) for _ in procs]
            for proc in procs:
                proc.join(60)
            stored = await _stored_snapshots(probe)
            await probe.close()
            received = client_results.get(timeout=120)
            clients.join(60)
    cpu = {k: (cpu1[k] - cpu0[k]) / elapsed * 100 for k in cpu0}
    writes = [w for part in parts for w in part["writes"]]
    backlog = [sum(samples) for samples in zip(*(part["backlog"] for part in parts), strict=False)]
    half = len(backlog) // 2
    produced = sum(part["produced"] for part in parts)
    return {
        "hosts": hosts,
        "interval_seconds": interval,
        "seconds": round(elapsed, 1),
        "agent_processes": workers,
        "pgbouncer_server_connections": {"writers": SERVER_POOL, "relay": RELAY_POOL},
        "history_prefill_seconds": round(prefill, 1),
        "snapshots_per_second": round(stored_during / elapsed, 1),
        "offered_snapshots_per_second": round(hosts / interval, 1),
        "published": sum(part["published"] for part in parts),
        "publish_skipped": sum(part["skipped"] for part in parts),
        "produced": produced,
        "lost": produced - stored,
        "backlog": backlog,
        "backlog_max_first_half": max(backlog[:half], default=0),
        "backlog_max_second_half": max(backlog[half:], default=0),
        "cpu_percent_of_one_core": {k: round(v, 1) for k, v in cpu.items()},
        "write_batch_ms_p50": round(percentile(writes, 50) * 1000, 1) if writes else None,
        "write_batch_ms_p99": round(percentile(writes, 99) * 1000, 1) if writes else None,
        "fleet_delay_ms": _delays(received["fleet"]),
        "single_host_delay_ms": _delays(received["single"]),
        "history_24h_ms": {
            "count": len(received["history"]),
            "p50": round(percentile(received["history"], 50) * 1000, 1)
            if received["history"]
            else None,
            "p95": round(percentile(received["history"], 95) * 1000, 1)
            if received["history"]
            else None,
            # p95 of each fifth of the window: the hot tier grows, the compactor starts.
            "p95_by_fifth": _by_fifth(received["history"], received["history_at"], seconds),
            # snapshots the dashboard instance's compactor packed in each fifth
            "compacted_by_fifth": _compacted_by_fifth(received["compacted"], seconds),
            # Requests beside it, p50 / p95 ms: the floor any answer has on this machine now.
            "healthz_p50_p95": _p50_p95(received["healthz"]),
            "auth_me_p50_p95": _p50_p95(received["me"]),
        },
        "wal_bytes_per_host_per_second": round(float(wal) / hosts / elapsed, 1),
        "disk_bytes_per_host_per_day": round(float(size1 - size0) / hosts / elapsed * 86400),
        "live_snapshots_bytes_per_host": round(float(live_bytes) / hosts),
        "postgres_cpu_percent_per_host": round(cpu["postgres"] / hosts, 4),
        "fleet_page": _page_summary(received["page"]),
        "waits": waited,
        "backfill": received.get("backfill"),
    }


async def _compacted(client: httpx.AsyncClient) -> float:
    """perfpulse_storage_compacted_snapshots_total of the dashboard instance."""
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("perfpulse_storage_compacted_snapshots_total"):
            return float(line.split()[-1])
    return 0.0


def _fifth(when: float, seconds: float) -> int:
    """Which fifth of the window `when` (seconds into it) falls in."""
    return min(4, max(0, int(when / seconds * 5)))


def _compacted_by_fifth(samples: list[tuple[float, float]], seconds: float) -> list[float]:
    ends = [0.0] * 5
    for when, total in samples:
        fifth = _fifth(when, seconds)
        ends[fifth] = max(ends[fifth], total)
    for k in range(1, 5):
        ends[k] = max(ends[k], ends[k - 1])
    return [ends[0]] + [ends[k] - ends[k - 1] for k in range(1, 5)]


def _p50_p95(values: list[float]) -> list[float] | None:
    if not values:
        return None
    return [round(percentile(values, 50) * 1000, 1), round(percentile(values, 95) * 1000, 1)]


def _by_fifth(values: list[float], at: list[float], seconds: float) -> list[float | None]:
    fifths: list[list[float]] = [[] for _ in range(5)]
    for value, when in zip(values, at, strict=True):
        fifths[_fifth(when, seconds)].append(value)
    return [round(percentile(f, 95) * 1000, 1) if f else None for f in fifths]


def _page_summary(page: dict[str, Any] | None) -> dict[str, Any] | None:
    if page is None:
        return None
    tasks = page["long_tasks_ms"]
    return {
        "seconds": page["seconds"],
        "long_tasks": len(tasks),
        "long_tasks_over_100_ms": sum(1 for t in tasks if t > 100),
        "longest_ms": round(max(tasks), 1) if tasks else 0,
        "rows_in_page": page["rows_in_page"],
        "counts": page["counts"],
    }


def _delays(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50": None, "p99": None}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def holds(result: dict[str, Any]) -> bool:
    """The issue's targets: nothing lost, both delays' p99 under a second, history p95
    under 100 ms, and the writer's backlog not growing."""
    return (
        result["lost"] == 0
        and (result["fleet_delay_ms"]["p99"] or 1e9) < 1000
        and (result["single_host_delay_ms"]["p99"] or 1e9) < 1000
        and (result["history_24h_ms"]["p95"] or 1e9) < 100
        # Each agent holds up to a batch between flushes; more means writes fall behind.
        and result["backlog_max_second_half"] <= BATCH * result["hosts"]
    )


def run(
    hosts: list[int],
    interval: float,
    seconds: float,
    knee: bool,
    workers: int = 2,
    browser: bool = False,
) -> dict[str, Any]:
    runs = []
    for count in [] if knee else hosts:
        result = asyncio.run(_one(count, interval, seconds, workers, browser))
        result["holds"] = holds(result)
        runs.append(result)
        print(orjson.dumps(result).decode(), flush=True)
    knee_result = None
    if knee:
        # Double until the targets break, then bisect between the last good and the first
        # bad count to within 10 %.
        good, bad = 0, None
        count = max(hosts) if hosts else 1000  # where the search starts
        while bad is None or bad - good > max(100, good // 10):
            result = asyncio.run(_one(count, interval, seconds, workers))
            result["holds"] = holds(result)
            runs.append(result)
            print(orjson.dumps(result).decode(), flush=True)
            if result["holds"]:
                good = count
                count = count * 2 if bad is None else (good + bad) // 2
            else:
                bad = count
                count = (good + bad) // 2
        knee_result = good
    return {"machine": machine(), "runs": runs, "knee_hosts": knee_result}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}",
        "",
        "| hosts | interval | seconds | snapshots/s (offered) | lost | backlog max "
        "(1st / 2nd half) | fleet delay p50 / p99 ms | host delay p50 / p99 ms | "
        "history 24 h p50 / p95 ms | CPU % of a core: PostgreSQL / PgBouncer / dashboard / "
        "agents | holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        cpu = r["cpu_percent_of_one_core"]
        lines.append(
            f"| {r['hosts']} | {r['interval_seconds']:g} s | {r['seconds']} | "
            f"{r['snapshots_per_second']} ({r['offered_snapshots_per_second']}) | "
            f"{r['lost']} | {r['backlog_max_first_half']} / "
            f"{r['backlog_max_second_half']} | {r['fleet_delay_ms']['p50']} / "
            f"{r['fleet_delay_ms']['p99']} | {r['single_host_delay_ms']['p50']} / "
            f"{r['single_host_delay_ms']['p99']} | {r['history_24h_ms']['p50']} / "
            f"{r['history_24h_ms']['p95']} | {cpu['postgres']} / {cpu['pgbouncer']} / "
            f"{cpu['dashboard']} / {cpu['agents']} | {'yes' if r['holds'] else 'no'} |"
        )
    lines.append("")
    for r in result["runs"]:
        lines.append(
            f"- {r['hosts']} hosts at {r['interval_seconds']:g} s: per host, PostgreSQL "
            f"{r['postgres_cpu_percent_per_host']} % of a core, WAL "
            f"{r['wal_bytes_per_host_per_second']} B/s, disk "
            f"{r['disk_bytes_per_host_per_day'] / 1e6:.1f} MB/day of history, live row "
            f"{r.get('live_snapshots_bytes_per_host', 0) / 1e3:.0f} kB; relay publishes skipped "
            f"{r['publish_skipped']} of {r['produced']}; write_batch p50 / p99 "
            f"{r['write_batch_ms_p50']} / {r['write_batch_ms_p99']} ms"
        )
    for r in result["runs"]:
        page = r.get("fleet_page")
        if page:
            lines.append(
                f"- Fleet page in Chromium, {r['hosts']} hosts at {r['interval_seconds']:g} s, "
                f"{page['seconds']:g} s observed: {page['long_tasks']} long tasks, "
                f"{page['long_tasks_over_100_ms']} over 100 ms, longest {page['longest_ms']} ms; "
                f'{page["rows_in_page"]} rows in the page for "{page["counts"]}"'
            )
    for r in result["runs"]:
        b = r.get("backfill")
        if b:
            lines.append(
                f"- {r['hosts']} hosts at {r['interval_seconds']:g} s: one host's stream opened "
                f"with `backfill=120` got {b['snapshots']} stored snapshots ({b['bytes'] / 1e3:.0f}"
                f" kB) {b['ms']} ms after connecting"
            )
    for r in result["runs"]:
        w = r.get("waits")
        if w:
            top = ", ".join(f"{k} {v}" for k, v in list(w["per_sample"].items())[:6])
            lines.append(
                f"- {r['hosts']} hosts at {r['interval_seconds']:g} s, waits of active "
                f"backends per sample ({w['samples']} samples every {WAIT_SAMPLE_SECONDS} s): "
                f"{top}; NOTIFY lock waiters mean / max {w['notify_lock_waiters_mean']} / "
                f"{w['notify_lock_waiters_max']}; PgBouncer clients waiting mean / max "
                f"{w['pgbouncer_waiting_clients_mean']} / {w['pgbouncer_waiting_clients_max']}, "
                f"longest wait {w['pgbouncer_maxwait_ms_max']:.0f} ms"
                + (
                    f"; the relay's pool: clients waiting mean "
                    f"{w['relay_pool_waiting_clients_mean']}, longest wait "
                    f"{w['relay_pool_maxwait_ms_max']:.0f} ms"
                    if "relay_pool_maxwait_ms_max" in w
                    else ""
                )
            )
    if result.get("knee_hosts") is not None:
        lines.append(f"\nKnee: {result['knee_hosts']} hosts hold the targets.")
    return "\n".join(lines)
