"""Snapshot sections as blocks: every number of each document, and its template.

A chunk of the compacted tier is a `Block` (exporter/storage/blocks.py) with one row per
snapshot, one column per path, a bookkeeping column `TEMPLATE` (which template each row
has) and the templates themselves in `extra`, so that documents come back whole
(`documents`). Reads that want a few numbers (`pick`) parse hot rows and take only those.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from exporter.storage.blocks import Block, Column, column, concat
from exporter.storage.documents import Template, extract, shape
from exporter.storage.paths import Step

TEMPLATE = "\x00template"
JSON = Any


def micros(ts: datetime) -> int:
    """Microseconds since the epoch (exact: no float on the way)."""
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def moment(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def from_documents(rows: Sequence[tuple[int, str]]) -> Block:
    """A block of documents given as (microseconds, JSON text), in time order."""
    n = len(rows)
    groups: dict[bytes, list[int]] = {}
    numbers: list[list[int | float]] = []
    for i, (_, text) in enumerate(rows):
        template, values = shape(orjson.loads(text))
        groups.setdefault(template, []).append(i)
        numbers.append(values)
    columns: dict[str, Column] = {}
    which = np.zeros(n, np.int64)
    for t, (template, members) in enumerate(groups.items()):
        which[members] = t
        _fill_columns(columns, Template.of(template), members, [numbers[i] for i in members], n)
    block = Block(
        np.array([ts for ts, _ in rows], np.int64),
        columns,
        {"templates": [t.decode() for t in groups]},
    )
    block.columns[TEMPLATE] = Column(which, np.ones(n, bool))
    return block


def _fill_columns(
    columns: dict[str, Column],
    template: Template,
    members: list[int],
    values: list[list[int | float]],
    n: int,
) -> None:
    """The numbers of documents sharing one template into their columns, a matrix at a
    time (one conversion in C instead of one per value)."""
    for integer in (True, False):
        positions = [j for j, is_int in enumerate(template.integer) if is_int == integer]
        if not positions:
            continue
        take = itemgetter(*positions)
        rows = [take(v) for v in values] if len(positions) > 1 else [(take(v),) for v in values]
        try:
            matrix = np.array(rows, np.int64 if integer else np.float64)
        except OverflowError:  # an integer past int64: kept as a float
            matrix = np.array(rows, np.float64)
        for c, j in enumerate(positions):
            key = template.keys[j]
            col = columns.get(key)
            if col is None:
                dtype = matrix.dtype
                col = columns[key] = Column(np.zeros(n, dtype), np.zeros(n, bool))
            elif col.values.dtype != matrix.dtype and matrix.dtype == np.float64:
                col.values = col.values.astype(np.float64)
            col.values[members] = matrix[:, c]
            col.present[members] = True


def merge(older: Block, newer: Block) -> Block:
    """Both chunks' rows in one; a snapshot in both (same timestamp) is kept once, as
    `older` has it. Templates are renumbered into one list."""
    if older.rows == 0:
        return newer
    templates = list(older.extra.get("templates", []))
    index = {t: i for i, t in enumerate(templates)}
    remap = []
    for t in newer.extra.get("templates", []):
        if t not in index:
            index[t] = len(templates)
            templates.append(t)
        remap.append(index[t])
    renumbered = dict(newer.columns)
    old_which = newer.columns[TEMPLATE]
    renumbered[TEMPLATE] = Column(
        np.array(remap, np.int64)[old_which.values] if remap else old_which.values,
        old_which.present,
    )
    merged = concat([older, Block(newer.timestamps, renumbered, newer.extra)], keep="first")
    merged.extra = {"templates": templates}
    return merged


def documents(block: Block) -> list[tuple[int, JSON]]:
    """Every row rebuilt as its document: (microseconds, document)."""
    templates = [Template.of(t.encode()) for t in block.extra.get("templates", [])]
    which = block.columns[TEMPLATE].values
    out = []
    for row in range(block.rows):
        template = templates[int(which[row])]
        numbers = (block.columns[key].values[row] for key in template.keys)
        out.append((int(block.timestamps[row]), template.rebuild(numbers)))
    return out


def pick(rows: Iterable[tuple[int, str]], wanted: dict[str, tuple[Step, ...]]) -> Block:
    """Only the `wanted` numbers (path -> parsed steps) of documents given as JSON text."""
    stamps: list[int] = []
    getters = [(key, getter(steps)) for key, steps in wanted.items()]
    cells: dict[str, list[int | float | None]] = {key: [] for key in wanted}
    for ts, text in rows:
        document = orjson.loads(text)
        stamps.append(ts)
        for key, get in getters:
            cells[key].append(get(document))
    return Block(np.array(stamps, np.int64), {key: column(v) for key, v in cells.items()})


def getter(steps: tuple[Step, ...]) -> Any:
    """`extract` for one path; a path of names only (most plotted fields) takes the short
    way: dict lookups, no list handling."""
    if not all(isinstance(step, str) for step in steps):
        return lambda document: extract(document, steps)

    def get(document: JSON) -> int | float | None:
        node = document
        for step in steps:
            if type(node) is not dict:
                return None
            node = node.get(step)
        return node if type(node) in (int, float) else None

    return get
