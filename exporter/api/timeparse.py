"""Times in query parameters: ISO-8601 or relative to now (`now`, `now-1h`, `now-15m`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException

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


def invalid(parameter: str, message: str) -> HTTPException:
    """The 422 FastAPI gives for a bad query parameter, naming it and saying why."""
    return HTTPException(
        422, [{"type": "value_error", "loc": ["query", parameter], "msg": message}]
    )


def parse_range(
    start: str, end: str, max_range: timedelta, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """`start` and `end` as a range of at most `max_range`; a 422 naming the parameter
    otherwise."""
    now = now or datetime.now(UTC)
    try:
        begin = parse_time(start, now)
    except ValueError as exc:
        raise invalid("start", str(exc)) from None
    try:
        finish = parse_time(end, now)
    except ValueError as exc:
        raise invalid("end", str(exc)) from None
    if begin >= finish:
        raise invalid("start", "must be before end")
    if finish - begin > max_range:
        raise invalid("end", f"the range may span at most {max_range.days} days")
    return begin, finish
