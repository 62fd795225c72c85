"""One log format for perfpulse and uvicorn."""

from __future__ import annotations

import logging.config
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for the root logger and uvicorn's loggers (passed to uvicorn too)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": FORMAT}},
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
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
