"""The embedded PostgreSQL perfpulse starts by itself: tuned to wake up less, never to
commit less durably."""

from __future__ import annotations

import asyncpg

from exporter.storage.embedded import IDLE_SETTINGS, EmbeddedPostgres, tune


async def test_the_embedded_server_wakes_less_and_stays_durable(tmp_path):
    embedded = EmbeddedPostgres(tmp_path / "data")
    url = await embedded.start()
    try:
        conn = await asyncpg.connect(url)
        try:
            shown = {name: await conn.fetchval(f"SHOW {name}") for name in IDLE_SETTINGS}
            durable = {
                name: await conn.fetchval(f"SHOW {name}")
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            }
            again = await tune(conn, IDLE_SETTINGS)  # a second start changes nothing
        finally:
            await conn.close()
    finally:
        await embedded.stop()
    assert shown == IDLE_SETTINGS
    assert durable == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    assert again == []
