"""The `perfpulse` command: the parser, `serve`, `snapshot` and `watch` (users and grafana
handlers live with their packages)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from exporter import __version__
from exporter.alerts.rules import RulesError, load_rules
from exporter.auth import commands as accounts
from exporter.config import CommandError, ConfigError, Settings, StartError, load_settings
from exporter.fleet import commands as fleet_cli
from exporter.grafana import commands as grafana_cli
from exporter.logs import audit_to_stderr, configure_logging
from exporter.storage import commands as storage_cli
from exporter.storage.database import DatabaseUnavailable

log = logging.getLogger("exporter.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfpulse",
        description="Host-performance exporter: Prometheus metrics, live stream, history.",
        epilog="Every option can also be set as PERFPULSE_<NAME> in the environment.",
    )
    parser.add_argument("--version", action="version", version=f"perfpulse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the exporter (HTTP API and sampler)")
    serve.add_argument("--host", help="bind address (PERFPULSE_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (PERFPULSE_PORT, default 8000)")
    serve.add_argument(
        "--interval",
        type=float,
        dest="sampling_interval_seconds",
        help="seconds between snapshots (PERFPULSE_SAMPLING_INTERVAL_SECONDS, default 5)",
    )
    serve.add_argument("--log-level", help="PERFPULSE_LOG_LEVEL, default info")
    serve.set_defaults(handler=_serve)

    snapshot = commands.add_parser(
        "snapshot", help="print one snapshot as JSON, taken over one interval so rates are real"
    )
    snapshot.add_argument(
        "--interval",
        type=float,
        default=1.0,
        dest="sampling_interval_seconds",
        help="seconds between the two readings (default 1)",
    )
    snapshot.set_defaults(handler=_snapshot)

    users = commands.add_parser("users", help="manage the accounts that may log in")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    create = user_commands.add_parser("create", help="add a user (password prompted)")
    create.add_argument("username")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    create.add_argument(
        "--role", default="viewer", help="admin or viewer (default viewer: reads only)"
    )
    create.add_argument(
        "--hosts",
        default="*",
        help="glob patterns of the hosts it may see: 'web-*,db-1' (default *)",
    )
    create.set_defaults(handler=accounts.users_create)
    set_role = user_commands.add_parser("set-role", help="make a user an admin or a viewer")
    set_role.add_argument("username")
    set_role.add_argument("role", help="admin or viewer")
    set_role.set_defaults(handler=accounts.users_set_access)
    set_hosts = user_commands.add_parser("set-hosts", help="the hosts a user may see")
    set_hosts.add_argument("username")
    set_hosts.add_argument("hosts", help="glob patterns, comma-separated: 'web-*,db-1' or '*'")
    set_hosts.set_defaults(handler=accounts.users_set_access)
    listing = user_commands.add_parser("list", help="list users")
    listing.set_defaults(handler=accounts.users_list)
    delete = user_commands.add_parser("delete", help="remove a user (its tokens stop working)")
    delete.add_argument("username")
    delete.set_defaults(handler=accounts.users_delete)
    passwd = user_commands.add_parser(
        "set-password", help="change a password (existing tokens stop working)"
    )
    passwd.add_argument("username")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    passwd.set_defaults(handler=accounts.users_set_password)

    tokens = commands.add_parser("tokens", help="API tokens for programs: create, list, revoke")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    token_create = token_commands.add_parser(
        "create", help="make a token acting as USER; printed once (stdout), stored hashed"
    )
    token_create.add_argument("name", help="a name to list and revoke it by")
    token_create.add_argument("--user", required=True, help="the user it acts as")
    token_create.add_argument(
        "--expires", default="90d", help="12h, 90d, 8w, 1y or never (default 90d)"
    )
    token_create.set_defaults(handler=accounts.tokens_create)
    token_list = token_commands.add_parser("list", help="name, user, created, expires, last used")
    token_list.set_defaults(handler=accounts.tokens_list)
    token_revoke = token_commands.add_parser("revoke", help="revoke a token (its streams close)")
    token_revoke.add_argument("name")
    token_revoke.set_defaults(handler=accounts.tokens_revoke)

    grafana = commands.add_parser("grafana", help="Grafana dashboards: generate or push them")
    grafana_commands = grafana.add_subparsers(
        dest="grafana_command", required=True, metavar="ACTION"
    )
    generate = grafana_commands.add_parser(
        "generate", help="write the dashboards' JSON from the panel spec (grafana/dashboards/)"
    )
    generate.add_argument("--dir", default="grafana/dashboards", help="output directory")
    generate.set_defaults(handler=grafana_cli.generate)
    push = grafana_commands.add_parser("push", help="push the dashboards to a running Grafana")
    push.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://grafana:3000")
    who = push.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="a service account token (or PERFPULSE_GRAFANA_TOKEN)")
    who.add_argument("--user", help="a user name; the password is prompted, or read from stdin")
    push.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    push.add_argument("--folder", help="folder title (default perfpulse)")
    push.add_argument(
        "--dry-run", action="store_true", help="print what would be done, change nothing"
    )
    push.set_defaults(handler=grafana_cli.push_dashboards)

    hosts = commands.add_parser("hosts", help="the fleet: hosts writing to this database")
    host_commands = hosts.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")
    host_list = host_commands.add_parser("list", help="list hosts, live and stale")
    host_list.set_defaults(handler=fleet_cli.hosts_list)
    host_remove = host_commands.add_parser(
        "remove", help="forget a host (stop its agent first, or it registers again)"
    )
    host_remove.add_argument("name")
    host_remove.set_defaults(handler=fleet_cli.hosts_remove)

    storage = commands.add_parser("storage", help="history's tiers: what they hold, compaction")
    storage_commands = storage.add_subparsers(
        dest="storage_command", required=True, metavar="ACTION"
    )
    storage_stats = storage_commands.add_parser(
        "stats", help="per tier: rows, bytes, numbers, bytes per number, span (JSON)"
    )
    storage_stats.set_defaults(handler=storage_cli.storage_stats)
    storage_compact = storage_commands.add_parser(
        "compact", help="pack everything older than the hot window now (JSON report)"
    )
    storage_compact.set_defaults(handler=storage_cli.storage_compact)

    alerts = commands.add_parser("alerts", help="alert rules: check a rules file")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    check = alert_commands.add_parser(
        "check", help="validate a rules file (default: the built-in rules) without serving"
    )
    check.add_argument("file", nargs="?", type=Path, help="the YAML rules file")
    check.set_defaults(handler=_alerts_check)

    watch = commands.add_parser(
        "watch", help="log in and print the live stream, a line per snapshot"
    )
    watch.add_argument("--url", default="http://127.0.0.1:8000", help="perfpulse's base URL")
    watch.add_argument("--user", default="admin", help="user name (default admin)")
    watch.add_argument(
        "--token-file", type=Path, help="read an API token (pp_...) from this file, not log in"
    )
    watch.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    watch.add_argument("--json", action="store_true", help="print each snapshot's JSON instead")
    watch.add_argument("--count", type=int, help="stop after this many snapshots")
    watch.set_defaults(handler=_watch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    if args.command in ("users", "tokens", "hosts"):
        audit_to_stderr()  # who changed access, on the terminal as in the server's log
    try:
        settings = load_settings(**overrides)
        code: int = args.handler(settings, args)
    except (ConfigError, StartError) as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 2
    except (DatabaseUnavailable, CommandError) as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.api.app import create_app
    from exporter.datadir import DataDirLock
    from exporter.server import Server, bind, raise_open_file_limit, uvicorn_config

    configure_logging(settings.log_level)
    try:
        rules = load_rules(settings.alert_rules)
    except RulesError as exc:
        raise StartError(f"alert rules: {exc}") from None
    # Before anything else starts: the data directory is this server's alone, and the
    # port is free. A second instance exits here having touched nothing.
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    listening = bind(settings.host, settings.port)
    files = raise_open_file_limit()
    if settings.alerts and (settings.collect or settings.dashboard):
        log.info("alerts: %d rules from %s", len(rules), settings.alert_rules or "the defaults")
    config = uvicorn_config(create_app(settings), settings)
    log.info("open-file limit %d", files)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handler that was installed before it; make that a no-op so a requested shutdown
    # exits 0 instead of dying by the signal (or a KeyboardInterrupt traceback).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        Server(config, freeze_heap=True).run(sockets=[listening])
    finally:
        lock.release()
    return 0


def _alerts_check(settings: Settings, args: argparse.Namespace) -> int:
    """As `promtool check rules`: exit 0 and a summary, or 1 naming the rule and why."""
    try:
        rules = load_rules(args.file)
    except RulesError as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 1
    source = args.file or "the built-in rules"
    print(f"{source}: {len(rules)} rules, valid")
    for rule in rules:
        print(f"  {rule.alert}: {rule.expr} for {rule.for_seconds:g}s ({rule.severity})")
    return 0


def _snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.runtime import Runtime

    configure_logging("warning")
    # Both readings whole: the process table and cgroups too are measured over the interval.
    settings = settings.model_copy(
        update={"processes_scan_seconds": settings.sampling_interval_seconds}
    )

    async def take() -> dict[str, object]:
        runtime = Runtime(settings)
        async with runtime.sampling_only() as sampler:
            await sampler.sample_once()
            await asyncio.sleep(settings.sampling_interval_seconds)
            await runtime.perf_reported(within=1.0)  # give perf's first interval a moment
            return (await sampler.sample_once()).to_dict()

    option = orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(take()), option=option) + b"\n")
    return 0


def _watch(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.watch import WatchError, follow, login

    base_url = args.url.rstrip("/")
    token: str | None = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise CommandError(f"{args.token_file}: {exc.strerror or exc}") from None
        if not token:
            raise CommandError(f"{args.token_file} is empty")
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = accounts.prompt(f"Password for {args.user}: ")
    try:
        if token is None:
            token = login(base_url, args.user, password)
        asyncio.run(follow(base_url, token, raw=args.json, limit=args.count))
    except WatchError as exc:
        raise CommandError(str(exc)) from None
    except BrokenPipeError:
        # The reader went away (`perfpulse watch | head -2`): stop quietly, and keep
        # Python from reporting the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
