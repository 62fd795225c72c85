"""The `perfpulse` command: serve, snapshot."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import orjson

from exporter import __version__
from exporter.config import ConfigError, Settings, load_settings
from exporter.logs import configure_logging, logging_config


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "handler") and value is not None
    }
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 2
    code: int = args.handler(settings)
    return code


def _serve(settings: Settings) -> int:
    import uvicorn

    from exporter.api.app import create_app

    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handler that was installed before it; make that a no-op so a requested shutdown
    # exits 0 instead of dying by the signal (or a KeyboardInterrupt traceback).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
    return 0


def _snapshot(settings: Settings) -> int:
    from exporter.collectors import build_collectors
    from exporter.sampler import Sampler

    configure_logging("warning")
    sampler = Sampler(
        build_collectors(settings),
        interval=settings.sampling_interval_seconds,
        deadline=settings.collector_deadline,
        host=settings.hostname,
    )

    async def take() -> dict[str, object]:
        await sampler.sample_once()
        await asyncio.sleep(settings.sampling_interval_seconds)
        return (await sampler.sample_once()).to_dict()

    option = orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(take()), option=option) + b"\n")
    return 0
