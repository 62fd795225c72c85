"""One log format for perfpulse and uvicorn, with credentials redacted from every line."""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# A token in a query string, an Authorization header, or anything shaped like a JWT.
_SECRETS = (
    (re.compile(r"([?&](?:access_)?token=)[^&\s\"']+", re.I), r"\1[REDACTED]"),
    (re.compile(r"(bearer[ ,]+)[\w.~+/=-]+", re.I), r"\1[REDACTED]"),
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "[REDACTED]"),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", re.I), r"\1[REDACTED]@"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes tokens and passwords from the whole line.

    uvicorn logs each WebSocket's path with its query string (`?token=...`), and an
    exception's text may quote a URL: redacting the formatted output covers messages,
    arguments and tracebacks alike.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for the root logger and uvicorn's loggers (passed to uvicorn too)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": RedactingFormatter, "format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper(), "propagate": True},
            "uvicorn.error": {"level": level.upper(), "propagate": True},
            "uvicorn.access": {"level": "WARNING", "propagate": True},
            # The embedded server's library narrates every pg_ctl call at INFO.
            "pgserver": {"level": "WARNING", "propagate": True},
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
