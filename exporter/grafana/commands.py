"""`perfpulse grafana generate | push`."""

from __future__ import annotations

import argparse
import sys

from exporter.auth.commands import prompt
from exporter.config import CommandError, Settings


def generate(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.grafana.dashboards import write_all

    for path in write_all(Path(args.dir)):
        print(f"wrote {path}")
    return 0


def push_dashboards(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.grafana.push import PushError, plan, push

    target = plan(args.url, args.folder)
    if args.dry_run:
        print("\n".join(target.describe()))
        return 0
    credential: str | tuple[str, str]
    if args.token is not None:
        credential = args.token
    else:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = prompt(f"Grafana password for {args.user}: ")
        credential = (args.user, password)
    try:
        push(target, credential)
    except PushError as exc:
        raise CommandError(str(exc)) from None
    return 0
