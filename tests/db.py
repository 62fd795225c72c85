"""One-off queries against a test database, from test code."""

from __future__ import annotations

from typing import Any

import asyncpg


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
