"""What an API token costs against a JWT, at 1,000 streams, on a real PostgreSQL.

- Admission: the check every stream and request makes (`session_for_token`): a JWT is an
  HMAC and one indexed lookup (user, revoked?); an API token is a SHA-256 and one indexed
  lookup (token joined to its user), and an UPDATE of its last use at most once a minute.
  1,000 checks one after another (per check), and 1,000 at once (1,000 streams
  reconnecting after a restart: wall time).
- Re-check: the sweeper's query over 1,000 open streams, every
  PERFPULSE_SESSION_RECHECK_SECONDS: JWT sessions against API-token sessions.

Rounds alternate between the two kinds, in the same run; medians.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import machine
from exporter.auth.access import new_token, token_digest
from exporter.auth.passwords import hash_password
from exporter.auth.sessions import Sessions
from exporter.auth.tokens import issue_token, session_for_token
from exporter.config import load_settings
from exporter.storage import users
from exporter.storage.database import Database
from exporter.storage.embedded import EmbeddedPostgres, url_for

STREAMS = 1000
ROUNDS = 7
SECRET = b"bench-secret-0123456789abcdef0123456789"


async def _checks_one_by_one(pool: Any, credential: str) -> float:
    started = time.perf_counter()
    for _ in range(STREAMS):
        await session_for_token(pool, SECRET, credential)
    return (time.perf_counter() - started) / STREAMS * 1e6


async def _checks_at_once(pool: Any, credential: str) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(session_for_token(pool, SECRET, credential) for _ in range(STREAMS)))
    return (time.perf_counter() - started) * 1e3


async def _recheck_ms(pool: Any, claims: Any, username: str) -> float:
    sessions = Sessions(recheck_seconds=3600, max_per_user=STREAMS + 1)
    for _ in range(STREAMS):
        sessions.open(username, claims.version, claims.token_id, lambda reason: None)
    started = time.perf_counter()
    closed = await sessions.recheck(pool)
    assert closed == 0
    return (time.perf_counter() - started) * 1e3


async def _measure(url: str, tmp: str) -> dict[str, Any]:
    database = Database(load_settings(database_url=url, data_dir=Path(tmp), hostname="bench"))
    await database.start(wait=True)
    try:
        pool = database.pool
        await users.create(pool, "bench", await hash_password("bench-password"))
        user = await users.get(pool, "bench")
        assert user is not None
        jwt = issue_token(SECRET, "bench", timedelta(hours=1), version=user.token_version).token
        api = new_token()
        expires = datetime.now(UTC) + timedelta(days=1)
        await users.create_api_token(pool, "bench", "bench", token_digest(api), expires)
        kinds = {"jwt": jwt, "api_token": api}
        claims = {k: (await session_for_token(pool, SECRET, c))[1] for k, c in kinds.items()}
        samples: dict[str, dict[str, list[float]]] = {
            k: {"one_us": [], "at_once_ms": [], "recheck_ms": []} for k in kinds
        }
        for _ in range(ROUNDS):
            for kind, credential in kinds.items():
                samples[kind]["one_us"].append(await _checks_one_by_one(pool, credential))
                samples[kind]["at_once_ms"].append(await _checks_at_once(pool, credential))
                samples[kind]["recheck_ms"].append(await _recheck_ms(pool, claims[kind], "bench"))
        return {
            kind: {name: statistics.median(values) for name, values in measured.items()}
            for kind, measured in samples.items()
        } | {"pool_size": database.settings.pool_size}
    finally:
        await database.stop()


async def _run(database_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-access-") as tmp:
        embedded = None
        if database_url is None:
            embedded = EmbeddedPostgres(Path(tmp) / "pg")
            url = url_for(await embedded.start(), "postgres")
        else:
            url = database_url
        try:
            measured = await _measure(url, tmp)
        finally:
            if embedded is not None:
                await embedded.stop()
    return {
        "machine": machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "server": "embedded" if embedded is not None else "external",
        "streams": STREAMS,
        "rounds": ROUNDS,
        **measured,
    }


def run(database_url: str | None) -> dict[str, Any]:
    return asyncio.run(_run(database_url))


def report(result: dict[str, Any]) -> str:
    jwt, api = result["jwt"], result["api_token"]
    rows = [
        ("one check, one after another (µs)", "one_us", ".0f"),
        (f"{result['streams']:,} checks at once (ms, wall)", "at_once_ms", ".0f"),
        (f"re-check of {result['streams']:,} open streams (ms)", "recheck_ms", ".1f"),
    ]
    return "\n".join(
        [
            "## access — API tokens against JWTs",
            "",
            f"{result['machine']}; PostgreSQL {result['server']}, a pool of "
            f"{result['pool_size']}; median of {result['rounds']} alternating rounds.",
            "",
            "| | JWT | API token | token / JWT |",
            "|---|---|---|---|",
            *(
                f"| {label} | {jwt[key]:{fmt}} | {api[key]:{fmt}} | {api[key] / jwt[key]:.2f} |"
                for label, key, fmt in rows
            ),
        ]
    )
