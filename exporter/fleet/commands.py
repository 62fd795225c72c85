"""`perfpulse hosts ...`: the fleet's registered hosts from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from exporter.config import CommandError, Settings
from exporter.fleet.hosts import list_hosts, remove_host
from exporter.logs import audit
from exporter.storage.database import with_database


def hosts_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = with_database(settings, list_hosts)
    if not rows:
        print("no hosts have written to this database yet")
        return 0
    print("HOST\tSTATE\tLAST SEEN\tINTERVAL\tVERSION")
    for info, age, _ in sorted(rows, key=lambda row: (row[0].stale, row[0].host)):
        state = "stale" if info.stale else "live"
        print(
            f"{info.host}\t{state}\t{info.last_seen:%Y-%m-%d %H:%M:%S%z} ({_ago(age)})\t"
            f"{info.interval_seconds:g}s\t{info.version}"
        )
    return 0


def hosts_remove(settings: Settings, args: argparse.Namespace) -> int:
    async def remove(pool: Any) -> bool:
        async with pool.acquire() as conn:
            return await remove_host(conn, args.name)

    if not with_database(settings, remove):
        raise CommandError(f"no host {args.name!r}")
    audit("host_removed", host=args.name, by="cli")
    print(
        f"removed host {args.name!r} from the fleet list (its history stays until retention; "
        "a running agent registers it again at its next snapshot)"
    )
    return 0


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"
