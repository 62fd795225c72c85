"""The uvicorn configuration perfpulse runs under (shared by `serve` and the tests)."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from exporter.api.webconfig import load_web_config
from exporter.config import Settings
from exporter.logs import logging_config
from exporter.sinks.wire import DIRECT_WS, describe_frame_path

log = logging.getLogger(__name__)

WS_PROTOCOL = DIRECT_WS


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": logging_config(settings.log_level),
        "access_log": False,
        "server_header": False,
        # Open WebSockets must not hold a shutdown for long.
        "timeout_graceful_shutdown": 5,
        # Bounds on what a client can send, and keepalive: a client that stops reading
        # stops answering pings and is disconnected after interval + timeout.
        "ws_max_size": settings.ws_max_message_bytes,
        "ws_ping_interval": settings.ws_ping_interval_seconds,
        "ws_ping_timeout": settings.ws_ping_interval_seconds,
        "ws_max_queue": 4,
        # Compression would deflate every snapshot once per client and hold a zlib state
        # (~256 KiB) per connection; a snapshot is a few KiB a second.
        "ws_per_message_deflate": False,
        # The live stream writes pre-built frames straight to this protocol's transport
        # (exporter/sinks/wire.py); any other implementation takes the slower ASGI path.
        "ws": WS_PROTOCOL,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
    if settings.web_config_file is not None:
        web = load_web_config(settings.web_config_file)
        if web.tls:
            options["ssl_certfile"] = str(web.cert_file)
            options["ssl_keyfile"] = str(web.key_file)
    options.update(overrides)
    log.info("live stream: %s", describe_frame_path(str(options["ws"])))
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
