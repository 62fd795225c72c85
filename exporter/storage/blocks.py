"""Columns of numbers packed for storage: scaled integers, deltas, zigzag, byte planes, zlib.

A `Block` is a table: one int64 timestamp (microseconds since the epoch) per row and any
number of named columns, each with a value per row where it is present. `encode` packs it
into one compressed value, `decode` unpacks all columns or only those asked for.

Each column becomes integers first:
- integers stay what they are (exact);
- floats that are decimals of at most 6 places (`0.93`, `2599.998`, `12.288974`) are
  scaled by their power of ten (exact: decoding gives back the same float);
- other floats (a rate such as 4039517.1395541807) keep `SIGNIFICANT` significant digits
  of the largest magnitude in the column: the error is at most half a unit in the sixth
  digit of that value (5e-6 of it). These are the only lossy values.
Then first or second differences (whichever needs fewer bytes), zigzag (small negative
numbers stay small), the bytes of every value split into planes (all the high bytes, which
are mostly zero, together), and zlib over the whole block. Absent cells repeat the
previous value (a zero difference) and are marked in a bitmap.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

SIGNIFICANT = 6
MAX_DECIMALS = 6
_MAGIC = b"PPB1"
_EXACT_LIMIT = 2**53  # integers a float64 holds exactly
_INT_LIMIT = 2**63


@dataclass(slots=True)
class Column:
    """One column: `values` (int64 for integers, else float64) and where they exist."""

    values: np.ndarray[Any, Any]
    present: np.ndarray[Any, Any]

    @property
    def integer(self) -> bool:
        return bool(self.values.dtype == np.int64)

    def floats(self) -> np.ndarray[Any, Any]:
        """float64 values with NaN where absent."""
        out = self.values.astype(np.float64)
        out[~self.present] = np.nan
        return out


@dataclass(slots=True)
class Block:
    timestamps: np.ndarray[Any, Any]
    columns: dict[str, Column]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.timestamps)

    def numbers(self) -> int:
        """How many values are present (what the density figures count)."""
        return sum(int(c.present.sum()) for c in self.columns.values())


def column(values: list[int | float | None]) -> Column:
    """A column from Python numbers (None where absent): integer if every value is."""
    present = np.array([v is not None for v in values], dtype=bool)
    integer = all(
        isinstance(v, int) and -_INT_LIMIT <= v < _INT_LIMIT for v in values if v is not None
    )
    if integer:
        data = np.array([0 if v is None else v for v in values], dtype=np.int64)
    else:
        data = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return Column(data, present)


# --- integers -> bytes ------------------------------------------------------------------


def _pack_ints(x: np.ndarray[Any, Any]) -> tuple[list[int], bytes]:
    """[order, width, *bases] and the byte planes of x's zigzagged differences."""
    best: tuple[list[int], np.ndarray[Any, Any]] | None = None
    for order in (1, 2):
        d = x
        bases = []
        for _ in range(order):
            if len(d) == 0:
                break
            bases.append(int(d[0]))
            d = np.diff(d)  # int64 wraps on overflow; decoding wraps back the same way
        zig = ((d << 1) ^ (d >> 63)).view(np.uint64)
        width = (int(zig.max()).bit_length() + 7) // 8 if len(zig) else 0
        if best is None or width < best[0][1]:
            best = ([order, width, *bases], zig)
    assert best is not None
    header, zig = best
    width = header[1]
    if width == 0:
        return header, b""
    planes = zig.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width].T
    return header, planes.tobytes()


def _unpack_ints(header: list[int], n: int, buf: memoryview, at: int) -> tuple[Any, int]:
    _, width, *bases = header
    m = max(0, n - len(bases))
    if width:
        raw = np.frombuffer(buf, np.uint8, count=width * m, offset=at).reshape(width, m)
        full = np.zeros((m, 8), np.uint8)
        full[:, :width] = raw.T
        zig = full.view("<u8").ravel().astype(np.uint64)
        d = (zig >> np.uint64(1)).view(np.int64) ^ -(zig & np.uint64(1)).view(np.int64)
    else:
        d = np.zeros(m, np.int64)
    for base in reversed(bases):
        d = np.concatenate((np.array([base], np.int64), d)).cumsum(dtype=np.int64)
    return d[:n], at + width * m


# --- floats -> integers -----------------------------------------------------------------


def _scale_columns(
    values: np.ndarray[Any, Any], present: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Each column of a float matrix as integers: (exact?, exponent, ints) per column.
    Exact when its values are decimals of at most MAX_DECIMALS places (exponent: minus the
    places); else SIGNIFICANT digits of its largest |value| (exponent: that of the last
    digit kept)."""
    v = np.where(present, values, 0.0)
    n, c = v.shape
    biggest = np.abs(v).max(axis=0) if n else np.zeros(c)
    places = np.full(c, -1)
    for d in range(MAX_DECIMALS + 1):
        todo = np.flatnonzero((places < 0) & (biggest * 10**d < _EXACT_LIMIT))
        if len(todo) == 0:
            continue
        sub = v[:, todo]
        exact = (np.rint(sub * 10**d) / 10**d == sub).all(axis=0)
        places[todo[exact]] = d
    exact_columns = places >= 0
    with np.errstate(divide="ignore"):
        lossy = np.floor(np.log10(np.where(exact_columns, 1.0, biggest))) - (SIGNIFICANT - 1)
    exponent = np.where(exact_columns, -places, lossy).astype(np.int64)
    up = exponent < 0  # multiply by 10**-exponent (a Python int, as decoding divides by)
    factor = np.where(up, 10.0 ** np.where(up, -exponent, 0), 10.0 ** np.where(up, 0, exponent))
    scaled = np.where(up[None, :], v * factor[None, :], v / factor[None, :])
    return exact_columns, exponent, np.rint(scaled).astype(np.int64)


def _filled_columns(ints: np.ndarray[Any, Any], present: np.ndarray[Any, Any]) -> Any:
    """Absent cells take the previous present value of their column (the first present
    one at the start; 0 in a column with none)."""
    if present.all():
        return ints
    n = ints.shape[0]
    index = np.where(present, np.arange(n)[:, None], -1)
    np.maximum.accumulate(index, axis=0, out=index)
    first = np.argmax(present, axis=0)
    index = np.where(index < 0, first[None, :], index)
    out = np.take_along_axis(ints, index, axis=0)
    out[:, ~present.any(axis=0)] = 0
    return out


_WIDTHS = np.array([1 << (8 * k) for k in range(8)], dtype=np.uint64)


def _zigzag(d: np.ndarray[Any, Any]) -> Any:
    return ((d << 1) ^ (d >> 63)).view(np.uint64)


def _widths(zig: np.ndarray[Any, Any]) -> Any:
    """Bytes each column's largest value needs (0 when all are 0)."""
    if zig.shape[0] == 0:
        return np.zeros(zig.shape[1], np.int64)
    top = zig.max(axis=0)
    return (top[:, None] >= _WIDTHS[None, :]).sum(axis=1)


def _pack_columns(x: np.ndarray[Any, Any]) -> tuple[list[list[int]], list[bytes]]:
    """`_pack_ints` for every column of an int64 matrix at once."""
    n, c = x.shape
    d1 = np.diff(x, axis=0)
    d2 = np.diff(d1, axis=0)
    z1, z2 = _zigzag(d1), _zigzag(d2)
    w1, w2 = _widths(z1), _widths(z2)
    second = w2 < w1
    b1 = z1.astype("<u8").view(np.uint8).reshape(max(n - 1, 0), c, 8)
    b2 = z2.astype("<u8").view(np.uint8).reshape(max(n - 2, 0), c, 8)
    headers, planes = [], []
    for j in range(c):
        if n == 0:
            headers.append([1, 0])
            planes.append(b"")
        elif second[j]:
            width = int(w2[j])
            headers.append([2, width, int(x[0, j]), int(d1[0, j])])
            planes.append(b2[:, j, :width].T.tobytes() if width else b"")
        else:
            width = int(w1[j])
            headers.append([1, width, int(x[0, j])])
            planes.append(b1[:, j, :width].T.tobytes() if width else b"")
    return headers, planes


def encode(block: Block, level: int = 6) -> bytes:
    n = block.rows
    if n > 1 and bool((np.diff(block.timestamps) < 0).any()):
        raise ValueError("block timestamps must be in order")
    ts_header, ts_bytes = _pack_ints(block.timestamps.astype(np.int64))
    keys = list(block.columns)
    cols = [block.columns[k] for k in keys]
    ints = np.zeros((n, len(keys)), np.int64)
    present = np.ones((n, len(keys)), bool)
    kinds = ["i"] * len(keys)
    exponents = [0] * len(keys)
    integer = [j for j, col in enumerate(cols) if col.integer]
    floating = [j for j, col in enumerate(cols) if not col.integer]
    for j in integer:
        ints[:, j] = cols[j].values
        present[:, j] = cols[j].present
    if floating:
        values = np.stack([cols[j].values for j in floating], axis=1).reshape(n, len(floating))
        shown = np.stack([cols[j].present for j in floating], axis=1).reshape(n, len(floating))
        exact, exponent, scaled = _scale_columns(values, shown)
        for c, j in enumerate(floating):
            kinds[j] = "d" if exact[c] else "q"
            exponents[j] = -int(exponent[c]) if exact[c] else int(exponent[c])
        ints[:, floating] = scaled
        present[:, floating] = shown
    headers, planes = _pack_columns(_filled_columns(ints, present))
    masked = np.logical_not(np.all(present, axis=0))
    if any("\n" in key for key in keys):
        raise ValueError("a column name holds a newline")
    # One row of six integers per column (exponent, masked, order, width, first value,
    # first difference), so that a read of a few columns finds them with array arithmetic
    # instead of walking every column's header.
    table = np.zeros((len(keys), 6), "<i8")
    table[:, 0] = exponents
    table[:, 1] = masked
    for j, header in enumerate(headers):
        table[j, 2 : 2 + len(header)] = header
    parts = [table.tobytes(), ts_bytes]
    for j in range(len(keys)):
        if masked[j]:
            parts.append(np.packbits(present[:, j]).tobytes())
        parts.append(planes[j])
    meta = orjson.dumps(
        {
            "n": n,
            "ts": ts_header,
            "keys": "\n".join(keys),
            "kinds": "".join(kinds),
            "extra": block.extra,
        }
    )
    body = b"".join(parts)
    return _MAGIC + zlib.compress(struct.pack("<I", len(meta)) + meta + body, level)


def _meta(blob: bytes) -> tuple[dict[str, Any], memoryview, int]:
    if blob[:4] != _MAGIC:
        raise ValueError("not a perfpulse block")
    raw = zlib.decompress(blob[4:])
    (length,) = struct.unpack_from("<I", raw)
    return orjson.loads(raw[4 : 4 + length]), memoryview(raw), 4 + length


@functools.lru_cache(maxsize=512)
def _layout(joined: str) -> tuple[list[str], dict[str, int]]:
    """A block's column names and their positions. Blocks of one host's section mostly
    share their columns: the split and the index are made once per distinct set."""
    names = joined.split("\n") if joined else []
    return names, dict(zip(names, range(len(names)), strict=True))


@dataclass(slots=True)
class _Plan:
    """A block read up to its columns' bytes: where each chosen column's differences
    start, how they are stored, and what is known without them."""

    n: int
    timestamps: np.ndarray[Any, Any]
    names: list[str]  # of the chosen columns
    raw: np.ndarray[Any, Any]
    starts: np.ndarray[Any, Any]
    orders: np.ndarray[Any, Any]
    widths: np.ndarray[Any, Any]
    first: np.ndarray[Any, Any]
    step: np.ndarray[Any, Any]
    present: np.ndarray[Any, Any]
    kinds: np.ndarray[Any, Any]
    power: np.ndarray[Any, Any]
    extra: dict[str, Any]


def _plan(blob: bytes, keys: Iterable[str] | None) -> _Plan:
    meta, buf, at = _meta(blob)
    n = meta["n"]
    names, index = _layout(meta["keys"])
    c = len(names)
    table = np.frombuffer(buf, "<i8", count=6 * c, offset=at).reshape(c, 6).astype(np.int64)
    timestamps, at = _unpack_ints(meta["ts"], n, buf, at + 48 * c)
    exponents, masked, orders, widths, first, step = table.T
    mask_bytes = (n + 7) // 8
    # Where each column's bytes start: its mask (if it has one), then `width` bytes for
    # each difference past the first value(s).
    sizes = masked * mask_bytes + widths * np.maximum(0, n - orders)
    starts = at + np.concatenate((np.zeros(1, np.int64), np.cumsum(sizes)[:-1]))
    if keys is None:
        chosen = np.arange(c)
    else:
        chosen = np.array(sorted({index[k] for k in keys if k in index}), np.int64)
    raw = np.frombuffer(buf, np.uint8)
    present = np.ones((len(chosen), n), bool)
    with_mask = np.flatnonzero(masked[chosen])
    if len(with_mask):
        spots = starts[chosen[with_mask]][:, None] + np.arange(mask_bytes)[None, :]
        present[with_mask] = np.unpackbits(raw[spots], axis=1, count=n).astype(bool)
    return _Plan(
        n,
        timestamps,
        [names[j] for j in chosen.tolist()],
        raw,
        (starts + masked * mask_bytes)[chosen],
        orders[chosen],
        widths[chosen],
        first[chosen],
        step[chosen],
        present,
        np.frombuffer(meta["kinds"].encode(), "S1")[chosen],
        exponents[chosen],
        meta["extra"],
    )


def _finish(plan: _Plan, values: np.ndarray[Any, Any]) -> Block:
    """The block from its columns' integers: integers as they are, the rest divided (or
    multiplied) by their power of ten, all rows at once."""
    power, kinds = plan.power, plan.kinds
    scaled = values / (10.0 ** np.abs(power))[:, None]
    up = (kinds == b"q") & (power > 0)
    if up.any():
        scaled[up] = values[up] * (10.0 ** power[up])[:, None]
    integer = (kinds == b"i").tolist()
    columns = {
        name: Column(values[r] if integer[r] else scaled[r], plan.present[r])
        for r, name in enumerate(plan.names)
    }
    return Block(plan.timestamps, columns, plan.extra)


def decode(blob: bytes, keys: Iterable[str] | None = None) -> Block:
    """The block, with every column or only `keys` (those it has)."""
    p = _plan(blob, keys)
    return _finish(p, _restore(p.raw, p.starts, p.orders, p.widths, p.n, p.first, p.step))


def decode_many(blobs: Sequence[bytes], keys: Iterable[str] | None = None) -> list[Block]:
    """`decode` of each blob, the columns of blobs with as many rows restored together:
    a day's hourly blocks of minutes (60 rows each) cost one pass, not 24 (most of a
    small block's decoding was per-call overhead)."""
    wanted = None if keys is None else list(keys)
    plans = [_plan(blob, wanted) for blob in blobs]
    values: dict[int, np.ndarray[Any, Any]] = {}
    by_rows: dict[int, list[int]] = {}
    for i, p in enumerate(plans):
        by_rows.setdefault(p.n, []).append(i)
    for n, members in by_rows.items():
        group = [plans[i] for i in members]
        offsets = np.cumsum([0] + [len(p.raw) for p in group[:-1]])
        restored = _restore(
            np.concatenate([p.raw for p in group]) if len(group) > 1 else group[0].raw,
            np.concatenate([p.starts + off for p, off in zip(group, offsets, strict=True)]),
            np.concatenate([p.orders for p in group]),
            np.concatenate([p.widths for p in group]),
            n,
            np.concatenate([p.first for p in group]),
            np.concatenate([p.step for p in group]),
        )
        at = 0
        for i, p in zip(members, group, strict=True):
            values[i] = restored[at : at + len(p.names)]
            at += len(p.names)
    return [_finish(p, values[i]) for i, p in enumerate(plans)]


def _restore(
    raw: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
    orders: np.ndarray[Any, Any],
    widths: np.ndarray[Any, Any],
    n: int,
    first: np.ndarray[Any, Any],
    step: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """The values of several columns, one per row, all at once: each column's byte
    planes gathered (columns of one width together: no plane past a column's width is
    read), zigzag undone, then its differences added up from its first value (twice for
    second differences)."""
    k = len(starts)
    if n == 0 or k == 0:
        return np.zeros((k, n), np.int64)
    m = n - 1
    counts = np.maximum(0, n - orders)  # differences stored per column
    i = np.arange(m)
    zig = np.zeros((k, m), np.uint64)
    for width in np.unique(widths).tolist():
        if width == 0:
            continue
        cols = np.flatnonzero(widths == width)
        # Byte p of difference i is at start + p * count + i. A column of second
        # differences stores one fewer: its last position reads a neighbour's byte, and
        # that difference is never used (the sums below stop before it).
        spots = (
            starts[cols, None, None]
            + np.arange(width)[None, :, None] * counts[cols, None, None]
            + i[None, None, :]
        )
        full = np.zeros((len(cols), m, 8), np.uint8)
        full[:, :, :width] = raw[np.minimum(spots, len(raw) - 1)].transpose(0, 2, 1)
        zig[cols] = full.view("<u8").reshape(len(cols), m)
    d = (zig >> np.uint64(1)).view(np.int64) ^ -(zig & np.uint64(1)).view(np.int64)
    second = np.flatnonzero(orders == 2)
    if len(second) and n >= 2:
        inner = np.concatenate((step[second, None], d[second, : n - 2]), axis=1)
        d[second] = inner.cumsum(axis=1, dtype=np.int64)
    out: np.ndarray[Any, Any] = np.concatenate((first[:, None], d), axis=1).cumsum(
        axis=1, dtype=np.int64
    )
    return out


def shifted(blob: bytes, micros: int, level: int = 6) -> bytes:
    """The same block `micros` later: only its first timestamp changes (the rest are
    differences). Builds long histories from a measured day without packing it again."""
    meta, buf, at = _meta(blob)
    meta["ts"][2] += micros
    head = orjson.dumps(meta)
    return _MAGIC + zlib.compress(struct.pack("<I", len(head)) + head + bytes(buf[at:]), level)


def keys_of(blob: bytes) -> list[str]:
    meta, _, _ = _meta(blob)
    return meta["keys"].split("\n") if meta["keys"] else []


# --- putting blocks together ------------------------------------------------------------


def empty() -> Block:
    return Block(np.zeros(0, np.int64), {})


def concat(blocks: list[Block], *, keep: str = "first") -> Block:
    """The rows of every block in time order; where blocks share a timestamp, the row of
    the earliest block in the list (`keep="first"`) or of the latest (`"last"`) stays.
    Columns missing from a block are absent in its rows."""
    blocks = [b for b in blocks if b.rows]
    if not blocks:
        return empty()
    if len(blocks) == 1:
        return blocks[0]
    keys: dict[str, bool] = {}
    for b in blocks:
        for key, col in b.columns.items():
            keys[key] = keys.get(key, True) and col.integer
    timestamps = np.concatenate([b.timestamps for b in blocks])
    rank = np.concatenate([np.full(b.rows, i) for i, b in enumerate(blocks)])
    if keep == "last":
        rank = -rank
    order = np.lexsort((rank, timestamps))
    timestamps = timestamps[order]
    unique = np.ones(len(timestamps), bool)
    unique[1:] = timestamps[1:] != timestamps[:-1]
    pick = order[unique]
    columns = {}
    for key, integer in keys.items():
        dtype = np.int64 if integer else np.float64
        # np.concatenate casts integers to floats where the column mixes them.
        values = np.concatenate(
            [b.columns[key].values if key in b.columns else np.zeros(b.rows, dtype) for b in blocks]
        )
        present = np.concatenate(
            [b.columns[key].present if key in b.columns else np.zeros(b.rows, bool) for b in blocks]
        )
        columns[key] = Column(values[pick].astype(dtype, copy=False), present[pick])
    return Block(timestamps[unique], columns, blocks[0].extra)


def between(block: Block, start: int, end: int) -> Block:
    """The rows with start <= timestamp < end."""
    lo, hi = np.searchsorted(block.timestamps, [start, end])
    if lo == 0 and hi == block.rows:
        return block
    return Block(
        block.timestamps[lo:hi],
        {k: Column(c.values[lo:hi], c.present[lo:hi]) for k, c in block.columns.items()},
        block.extra,
    )


def outside(block: Block, start: int, end: int) -> Block:
    """The rows with timestamp < start or >= end."""
    lo, hi = np.searchsorted(block.timestamps, [start, end])
    keep = np.r_[0:lo, hi : block.rows]
    return Block(
        block.timestamps[keep],
        {k: Column(c.values[keep], c.present[keep]) for k, c in block.columns.items()},
        block.extra,
    )
