"""Times in query parameters: ISO-8601 or relative to now (`now`, `now-1h`, `now-15m`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w))?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime) -> datetime:
    """An aware UTC datetime; ValueError with a message fit for the user otherwise."""
    value = text.strip()
    match = _RELATIVE.match(value.lower())
    if match:
        if match[1] is None:
            return now
        try:
            return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        except OverflowError:
            raise ValueError(f"{text!r} reaches before the year 1") from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO-8601 time (2026-11-26T10:00:00Z) "
            "nor relative to now (now, now-15m, now-6h, now-7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # a time without offset is UTC
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range in UTC") from None
