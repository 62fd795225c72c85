"""A section's JSON as numbers and a shape, and back.

`flatten` splits one document into its numbers, each named by its path (exporter/storage/
paths.py), and a template: the document with every number replaced by a marker that
says whether it was an integer or a float. Strings, booleans, nulls and the identity of
list members (`cpu`, `mountpoint`, `pid`, ...) stay in the template. Consecutive snapshots
share a handful of templates, so a chunk stores each template once and the numbers as
columns; `rebuild` puts a document back together exactly (the same keys in the same
order, integers as integers).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from exporter.storage import paths
from exporter.storage.paths import Select, Step

MARK_INT = "\x00i"
MARK_FLOAT = "\x00f"
_ESCAPE = "\x00"  # a real string starting with NUL gets one more in front
# Fields that name a list member, in the order they are tried; the first one every member
# has, with distinct values, names them (otherwise members are named by position).
IDENTITY_KEYS = ("cpu", "mountpoint", "device", "interface", "path", "pid", "id", "name")

JSON = Any


class Flat:
    """One document: its template (as canonical JSON bytes) and its numbers."""

    __slots__ = ("keys", "template", "values")

    def __init__(self, template: bytes, keys: list[str], values: list[int | float]) -> None:
        self.template = template
        self.keys = keys
        self.values = values


def flatten(document: JSON) -> Flat:
    """The document's template, numbers and their paths."""
    template, values = shape(document)
    return Flat(template, Template.of(template).keys, values)


def shape(document: JSON) -> tuple[bytes, list[int | float]]:
    """The document's template and its numbers in document order (paths not built: they
    are the same for every document of one template, `Template.of(t).keys`)."""
    values: list[int | float] = []
    template = _walk(document, values)
    return orjson.dumps(template), values


def is_number(node: object) -> bool:
    return isinstance(node, int | float) and not isinstance(node, bool)


@functools.lru_cache(maxsize=8192)
def _child(prefix: str, key: str) -> str:
    return f"{prefix}.{paths.name(key)}" if prefix else paths.name(key)


@functools.lru_cache(maxsize=8192)
def _member(prefix: str, identity: str | None, value: str) -> str:
    return prefix + paths.render((Select(identity, value),))


def _walk(node: JSON, values: list[int | float]) -> JSON:
    # The hot loop of compaction: one call per object or list, numbers appended in order.
    kind = type(node)
    if kind is dict:
        out = {}
        for k, v in node.items():
            vk = type(v)
            if vk is float:
                values.append(v)
                out[k] = MARK_FLOAT
            elif vk is int:
                values.append(v)
                out[k] = MARK_INT
            elif vk is dict or vk is list:
                out[k] = _walk(v, values)
            elif vk is str and v.startswith(_ESCAPE):
                out[k] = _ESCAPE + v
            else:
                out[k] = v
        return out
    if kind is list:
        identity = identity_key(node)
        items = []
        for member in node:
            if identity is not None:
                kept = member[identity]
                walked = _walk({k: v for k, v in member.items() if k != identity}, values)
                items.append({k: kept if k == identity else walked[k] for k in member})
            else:
                items.append(
                    _walk(member, values) if type(member) in (dict, list) else _leaf(member, values)
                )
        return items
    return _leaf(node, values)


def _leaf(node: JSON, values: list[int | float]) -> JSON:
    kind = type(node)
    if kind is float or kind is int:
        values.append(node)
        return MARK_INT if kind is int else MARK_FLOAT
    if kind is str and node.startswith(_ESCAPE):
        return _ESCAPE + node
    return node


def identity_key(members: Sequence[JSON]) -> str | None:
    if not members or not all(isinstance(m, dict) for m in members):
        return None
    for key in IDENTITY_KEYS:
        seen = set()
        for member in members:
            v = member.get(key)
            if not isinstance(v, str | int) or isinstance(v, bool) or str(v) in seen:
                break
            seen.add(str(v))
        else:
            return key
    return None


class Template:
    """A parsed template: the paths of its numbers in document order, whether each was an
    integer, and a builder."""

    __slots__ = ("integer", "keys", "tree")

    def __init__(self, encoded: bytes) -> None:
        self.tree = orjson.loads(encoded)
        self.keys: list[str] = []
        self.integer: list[bool] = []
        _template_keys(self.tree, "", self.keys, self.integer)

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of(encoded: bytes) -> Template:
        return Template(encoded)

    def rebuild(self, numbers: Iterator[float]) -> JSON:
        """The document, numbers taken in order from `numbers` (one per key)."""
        return _fill(self.tree, numbers)


def _template_keys(node: JSON, prefix: str, keys: list[str], integer: list[bool]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _template_keys(v, _child(prefix, k), keys, integer)
    elif isinstance(node, list):
        identity = identity_key(node)
        for i, member in enumerate(node):
            if identity is None:
                _template_keys(member, _member(prefix, None, str(i)), keys, integer)
                continue
            at = _member(prefix, identity, str(member[identity]))
            for k, v in member.items():
                if k != identity:
                    _template_keys(v, _child(at, k), keys, integer)
    elif node in (MARK_INT, MARK_FLOAT):
        keys.append(prefix)
        integer.append(node == MARK_INT)


def _fill(node: JSON, numbers: Iterator[float]) -> JSON:
    if isinstance(node, dict):
        return {k: _fill(v, numbers) for k, v in node.items()}
    if isinstance(node, list):
        identity = identity_key(node)
        if identity is None:
            return [_fill(m, numbers) for m in node]
        return [{k: v if k == identity else _fill(v, numbers) for k, v in m.items()} for m in node]
    if node == MARK_INT:
        return int(next(numbers))
    if node == MARK_FLOAT:
        return float(next(numbers))
    if isinstance(node, str) and node.startswith(_ESCAPE):
        return node[1:]
    return node


def extract(document: JSON, steps: tuple[Step, ...]) -> int | float | None:
    """The number at `steps` in a document, or None (absent, null or not a number)."""
    node = document
    for step in steps:
        if isinstance(step, Select):
            # Members are named as flatten names them: by identity where there is one.
            if not isinstance(node, list) or identity_key(node) != step.key:
                return None
            if step.key is None:
                index = int(step.value)
                node = node[index] if index < len(node) else None
            else:
                node = next(
                    (
                        m
                        for m in node
                        if isinstance(m, dict) and str(m.get(step.key, "\x00")) == step.value
                    ),
                    None,
                )
        elif isinstance(node, dict):
            node = node.get(step)
        else:
            return None
        if node is None:
            return None
    return node if is_number(node) else None
