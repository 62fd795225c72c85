"""One log format for perfpulse and uvicorn, with credentials redacted from every line."""

from __future__ import annotations

import logging
import logging.config
import re
import time
from typing import Any
from urllib.parse import unquote_plus

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# A token in a query string, an Authorization header, or anything shaped like a JWT.
_SECRETS = (
    (re.compile(r"([?&](?:access_)?token=)[^&\s\"']+", re.I), r"\1[REDACTED]"),
    (re.compile(r"(bearer[ ,]+)[\w.~+/=-]+", re.I), r"\1[REDACTED]"),
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "[REDACTED]"),
    (re.compile(r"pp_[\w-]{20,}"), "[REDACTED]"),  # an API token
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", re.I), r"\1[REDACTED]@"),
)


# A query string: every parameter whose name, percent-decoded, says token is redacted
# (`?tok%65n=` reaches the app as `token` too).
_QUERY = re.compile(r"\?([^\s\"'#]+)")
_PERCENT_DOTS = re.compile(r"eyJ[\w-]*(?:\.|%2e)[\w-]*(?:\.|%2e)[\w-]*", re.I)


def _redact_query(match: re.Match[str]) -> str:
    params = []
    for param in match.group(1).split("&"):
        name, eq, _ = param.partition("=")
        if eq and "token" in unquote_plus(name).lower():
            param = f"{name}=[REDACTED]"
        params.append(param)
    return "?" + "&".join(params)


def redact(text: str) -> str:
    text = _QUERY.sub(_redact_query, text)
    text = _PERCENT_DOTS.sub("[REDACTED]", text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class OncePerMinute(logging.Filter):
    """Lets a record whose message starts with `prefix` through at most once a minute.

    asyncio logs "socket.accept() out of system resource" on every accept attempt while
    the process is out of descriptors: hundreds of thousands of lines a minute.
    """

    def __init__(self, prefix: str, interval: float = 60.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval = interval
        self._last = -interval
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return False
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more since the last report)"
            record.args = None
        self._last, self.suppressed = now, 0
        return True


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
        "filters": {
            "accept_errors": {
                "()": OncePerMinute,
                "prefix": "socket.accept() out of system resource",
            }
        },
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
            "asyncio": {"filters": ["accept_errors"], "propagate": True},
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))


# --- the audit log ---------------------------------------------------------------------

audit_log = logging.getLogger("perfpulse.audit")


def _quote(value: object) -> str:
    text = str(value)
    if text and re.fullmatch(r"[\w.@:/*,+-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def audit(event: str, **fields: object) -> None:
    """One line per login, user and token change, host removed, on perfpulse.audit:
    `audit event=login outcome=success user=alice address=10.0.0.7`."""
    pairs = " ".join(f"{key}={_quote(value)}" for key, value in fields.items() if value is not None)
    audit_log.info("audit event=%s %s", event, pairs)


def audit_to_stderr() -> None:
    """For the command line: audit lines on stderr (the server logs them with the rest)."""
    if not audit_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        audit_log.addHandler(handler)
        audit_log.setLevel(logging.INFO)
        audit_log.propagate = False
