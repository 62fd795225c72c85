"""Aggregates over time: each number's avg, min, max, last and count per bucket.

`aggregate` turns rows of values (snapshots) into one row per bucket; `coarser` turns
aggregate rows into wider buckets (minutes into hours, or into the buckets a chart asks
for) with the same arithmetic: the average weighted by counts, the extremes of the
extremes, the last value of the last bucket that had one. An aggregate column is named
`<path>|<aggregate>`; `|samples` counts the snapshots in each bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from exporter.storage.blocks import Block, Column, empty

AGGREGATES = ("avg", "min", "max", "last", "count")
SAMPLES = "|samples"
MINUTE_US = 60_000_000
HOUR_US = 3600 * 1_000_000


def column_of(key: str, aggregate: str) -> str:
    return f"{key}|{aggregate}"


def split(column: str) -> tuple[str, str]:
    """(path, aggregate) of an aggregate column."""
    key, _, aggregate = column.rpartition("|")
    return key, aggregate


def _groups(timestamps: np.ndarray[Any, Any], width: int, origin: int) -> tuple[Any, Any]:
    """Bucket starts of each group of rows (timestamps in order) and where groups begin."""
    bucket = (timestamps - origin) // width * width + origin
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    return bucket[starts], starts


def _count_mean(
    values: np.ndarray[Any, Any],
    present: np.ndarray[Any, Any],
    weights: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
) -> tuple[Any, Any, Any]:
    """Count, weighted mean and whether any value is there, per group, for every column
    of the (rows x columns) matrices at once."""
    count = np.add.reduceat(np.where(present, weights, 0), starts, axis=0)
    total = np.add.reduceat(np.where(present, values * weights, 0.0), starts, axis=0)
    has = count > 0
    mean = np.divide(total, count, out=np.zeros(count.shape), where=has)
    return count, mean, has


def _lowest(values: Any, present: Any, starts: Any) -> Any:
    return np.fmin.reduceat(np.where(present, values, np.nan), starts, axis=0)


def _highest(values: Any, present: Any, starts: Any) -> Any:
    return np.fmax.reduceat(np.where(present, values, np.nan), starts, axis=0)


def _last(values: Any, present: Any, starts: Any) -> Any:
    """The last present value of each group (0 where none is)."""
    index = np.where(present, np.arange(len(values))[:, None], -1)
    last_row = np.maximum(np.maximum.reduceat(index, starts, axis=0), 0)
    return np.take_along_axis(values, last_row, axis=0)


def _reduce(
    values: np.ndarray[Any, Any],
    present: np.ndarray[Any, Any],
    weights: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
) -> tuple[Any, ...]:
    """count, weighted mean, min, max and last present value per group, for every column
    of the (rows x columns) matrices at once."""
    v = values.astype(np.float64)
    count, mean, has = _count_mean(v, present, weights, starts)
    return (
        count,
        mean,
        _lowest(v, present, starts),
        _highest(v, present, starts),
        _last(v, present, starts),
        has,
    )


def _matrix(block: Block, keys: list[str]) -> tuple[Any, Any]:
    values = np.stack([block.columns[k].values.astype(np.float64) for k in keys], axis=1)
    present = np.stack([block.columns[k].present for k in keys], axis=1)
    return values, present


def aggregate(block: Block, width: int, origin: int = 0) -> Block:
    """Raw rows into buckets of `width` microseconds, aligned to `origin`."""
    if block.rows == 0:
        return empty()
    bucket_starts, starts = _groups(block.timestamps, width, origin)
    ones = np.ones(block.rows, np.int64)
    columns = {SAMPLES: Column(np.add.reduceat(ones, starts), np.ones(len(starts), bool))}
    # Bookkeeping columns (templates) are not numbers.
    keys = [k for k in block.columns if not k.startswith("\x00")]
    if not keys:
        return Block(bucket_starts, columns)
    values, present = _matrix(block, keys)
    count, mean, lowest, highest, last, has = _reduce(values, present, ones[:, None], starts)
    _put(columns, keys, (count, mean, lowest, highest, last, has), skip_empty=True)
    return Block(bucket_starts, columns)


def coarser(block: Block, width: int, origin: int = 0) -> Block:
    """Aggregate rows into buckets of `width` microseconds (a multiple of theirs)."""
    if block.rows == 0:
        return empty()
    bucket_starts, starts = _groups(block.timestamps, width, origin)
    columns: dict[str, Column] = {}
    if SAMPLES in block.columns:
        s = block.columns[SAMPLES]
        columns[SAMPLES] = Column(
            np.add.reduceat(np.where(s.present, s.values, 0), starts).astype(np.int64),
            np.ones(len(starts), bool),
        )
    keys = sorted(
        {
            split(c)[0]
            for c in block.columns
            if c != SAMPLES and column_of(split(c)[0], "count") in block.columns
        }
    )
    if not keys:
        return Block(bucket_starts, columns)
    counts, counted = _matrix(block, [column_of(k, "count") for k in keys])
    weights = np.where(counted, counts, 0).astype(np.int64)
    present = counted & (weights > 0)
    parts = {}
    for name in ("avg", "min", "max", "last"):
        names = [column_of(k, name) for k in keys]
        filled = [
            block.columns[c]
            if c in block.columns
            else Column(np.zeros(block.rows), present[:, 0] & False)
            for c in names
        ]
        parts[name] = (
            np.stack([c.values.astype(np.float64) for c in filled], axis=1),
            np.stack([c.present for c in filled], axis=1) & present,
        )
    # Each aggregate from its own kind (one reduction each).
    count, mean, has = _count_mean(parts["avg"][0], present, weights, starts)
    lowest = _lowest(*parts["min"], starts)
    highest = _highest(*parts["max"], starts)
    last = _last(*parts["last"], starts)
    _put(columns, keys, (count, mean, lowest, highest, last, has), skip_empty=False)
    return Block(bucket_starts, columns)


def _put(
    columns: dict[str, Column],
    keys: Sequence[str],
    reduced: tuple[Any, Any, Any, Any, Any, Any],
    *,
    skip_empty: bool,
) -> None:
    """Each key's aggregate columns from the matrices `_reduce` gives (a column per key)."""
    count, mean, lowest, highest, last, has = reduced
    for j, key in enumerate(keys):
        there = has[:, j]
        if skip_empty and not there.any():
            continue
        columns[column_of(key, "avg")] = Column(mean[:, j], there)
        columns[column_of(key, "min")] = Column(lowest[:, j], there)
        columns[column_of(key, "max")] = Column(highest[:, j], there)
        columns[column_of(key, "last")] = Column(last[:, j], there)
        columns[column_of(key, "count")] = Column(count[:, j].astype(np.int64), there)
