"""`perfpulse storage stats | compact`: what history costs, and compaction on demand."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from typing import Any

from exporter.config import CommandError, Settings
from exporter.storage import stats
from exporter.storage.compactor import Compactor
from exporter.storage.database import Database


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def storage_stats(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        database = Database(settings)
        await database.start(wait=True)
        try:
            async with database.pool.acquire() as conn:
                return await stats.collect(conn, settings.storage_hot_seconds)
        finally:
            await database.stop()

    _print(asyncio.run(run()))
    return 0


def storage_compact(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> dict[str, Any]:
        database = Database(settings)
        await database.start(wait=True)
        try:
            if database.direct_url is None:
                raise CommandError(
                    "compaction needs a direct connection to PostgreSQL (not through a "
                    "transaction pooler): set PERFPULSE_DATABASE_LISTEN_URL"
                )
            compactor = Compactor(
                database,
                hot_seconds=settings.storage_hot_seconds,
                name=f"perfpulse {settings.hostname} cli",
            )
            report = await compactor.pass_once(wait=True)
            return dataclasses.asdict(report)
        finally:
            await database.stop()

    _print(asyncio.run(run()))
    return 0
