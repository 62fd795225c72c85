"""Field paths: how one number inside a snapshot section is named.

A path walks the section's JSON: `usage_percent`, `modes_percent.user`,
`interfaces.eth0.receive_bytes_total`. A list of objects is addressed by the member's
identity where it has one (`per_cpu[cpu=0].usage_percent`,
`filesystems[mountpoint=/].percent`, `top[pid=812].cpu_seconds`), else by position
(`items[2].value`). A name or value holding `.`, `[`, `]`, `=` or `"` is written as a JSON
string: `interfaces."eth0.100".receive_bytes_total`. Stored series are keyed by the
canonical form `render(parse(text))`, so any spelling of a path finds the same series.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_BARE_NAME = re.compile(r'[^.\[\]="\\]+')
_BARE_VALUE = re.compile(r'[^\[\]="\\]+')
MAX_PATH_LENGTH = 300


@dataclass(frozen=True, slots=True)
class Select:
    """A list member: by identity (`key=value`) or, with `key` None, by position."""

    key: str | None
    value: str


Step = str | Select


class PathError(ValueError):
    """A path that cannot be parsed; the message says where and why."""


def name(text: str) -> str:
    """A dict key as a path segment."""
    if _BARE_NAME.fullmatch(text) and text.strip() == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def value(text: str) -> str:
    """A selector's value (after `=`)."""
    if _BARE_VALUE.fullmatch(text) and text.strip() == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def render(steps: tuple[Step, ...]) -> str:
    out: list[str] = []
    for step in steps:
        if isinstance(step, Select):
            if step.key is None:
                out.append(f"[{step.value}]")
            else:
                out.append(f"[{name(step.key)}={value(step.value)}]")
        else:
            out.append(("." if out else "") + name(step))
    return "".join(out)


def parse(text: str) -> tuple[Step, ...]:
    """The steps of a path; PathError with the position of the first thing wrong."""
    if not text or len(text) > MAX_PATH_LENGTH:
        raise PathError(f"a path has 1 to {MAX_PATH_LENGTH} characters")
    steps: list[Step] = []
    i = 0
    expect_name = True
    while i < len(text):
        char = text[i]
        if char == "[":
            if not steps:
                raise PathError(f"'[' at {i} follows no name")
            close = _closing_bracket(text, i)
            steps.append(_selector(text[i + 1 : close], i))
            i = close + 1
            expect_name = False
        elif char == ".":
            if expect_name:
                raise PathError(f"empty name at {i}")
            i += 1
            expect_name = True
        else:
            if not expect_name:
                raise PathError(f"expected '.' or '[' at {i}")
            segment, i = _name_at(text, i)
            steps.append(segment)
            expect_name = False
    if expect_name:
        raise PathError("the path ends with '.'")
    return tuple(steps)


def canonical(text: str) -> str:
    return render(parse(text))


def _name_at(text: str, i: int) -> tuple[str, int]:
    if text[i] == '"':
        end = _string_end(text, i)
        return json.loads(text[i : end + 1]), end + 1
    j = i
    while j < len(text) and text[j] not in '.[]="':
        j += 1
    if j == i:
        raise PathError(f"unexpected {text[i]!r} at {i}")
    return text[i:j], j


def _string_end(text: str, start: int) -> int:
    j = start + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == '"':
            return j
        j += 1
    raise PathError(f"unterminated string at {start}")


def _closing_bracket(text: str, start: int) -> int:
    j = start + 1
    while j < len(text):
        if text[j] == '"':
            j = _string_end(text, j) + 1
            continue
        if text[j] == "]":
            return j
        j += 1
    raise PathError(f"unclosed '[' at {start}")


def _selector(inner: str, at: int) -> Select:
    if inner.isdigit():
        return Select(None, inner)
    if inner.startswith('"'):
        end = _string_end(inner, 0)
        key, i = json.loads(inner[: end + 1]), end + 1
    else:
        key, i = _bare_key(inner)
    if i >= len(inner) or inner[i] != "=":
        raise PathError(f"a selector at {at} is [position] or [key=value]")
    rest = inner[i + 1 :]
    if rest.startswith('"'):
        end = _string_end(rest, 0)
        if end != len(rest) - 1:
            raise PathError(f"text after the quoted value at {at}")
        return Select(key, json.loads(rest))
    if '"' in rest:
        raise PathError(f"a value holding '\"' must be quoted (at {at})")
    return Select(key, rest)


def _bare_key(inner: str) -> tuple[str, int]:
    j = inner.find("=")
    if j <= 0:
        raise PathError("a selector is [position] or [key=value]")
    return inner[:j], j
