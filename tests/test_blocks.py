"""The compacted tier's pieces on known data: paths, documents, blocks, aggregates."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from exporter.storage import blocks, paths
from exporter.storage.aggregates import SAMPLES, aggregate, coarser
from exporter.storage.blocks import Block, column, concat
from exporter.storage.chunks import TEMPLATE, documents, from_documents, merge, pick
from exporter.storage.documents import Template, extract, flatten

# A disk section as the collector writes it (abridged): a list keyed by mountpoint, a dict
# of devices, integers, exact decimals, a full-precision float, a null and strings.
DISK = {
    "available": True,
    "total": {"read_bytes_total": 1081918464, "busy_percent": 23.349498122546407},
    "devices": {"vda": {"io_time_seconds_total": 11.068, "io_in_progress": 0}},
    "pressure": {"some": {"avg10": 0.03, "total_seconds": 3.904679}},
    "pressure_error": None,
    "filesystems": [
        {"mountpoint": "/", "device": "/dev/vda", "percent": 23.35, "used_bytes": 25437945856},
        {"mountpoint": "/boot", "device": "/dev/vda1", "percent": 41.0, "used_bytes": 1024},
    ],
    "note": "\x00starts with NUL",
}


def test_paths_parse_and_render_canonically():
    assert paths.parse('interfaces."eth0.100".receive_bytes_total') == (
        "interfaces",
        "eth0.100",
        "receive_bytes_total",
    )
    assert paths.canonical('filesystems[mountpoint="/"].percent') == (
        "filesystems[mountpoint=/].percent"
    )
    assert paths.canonical('top[name="a]b"].x') == 'top[name="a]b"].x'
    assert paths.render(("per_cpu", paths.Select(None, "1"), "usage_percent")) == (
        "per_cpu[1].usage_percent"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "1 to 300 characters"),
        ("a..b", "empty name at 2"),
        ("a.", "ends with '.'"),
        ("[0]", "follows no name"),
        ("a[b", "unclosed '['"),
        ("a[b]", "[position] or [key=value]"),
        ('a["x]', "unterminated string"),
    ],
)
def test_bad_paths_say_where(text, message):
    with pytest.raises(paths.PathError, match=message.replace("[", r"\[").replace("]", r"\]")):
        paths.parse(text)


def test_flatten_names_every_number_by_its_path():
    flat = flatten(DISK)
    assert dict(zip(flat.keys, flat.values, strict=True)) == {
        "total.read_bytes_total": 1081918464,
        "total.busy_percent": 23.349498122546407,
        "devices.vda.io_time_seconds_total": 11.068,
        "devices.vda.io_in_progress": 0,
        "pressure.some.avg10": 0.03,
        "pressure.some.total_seconds": 3.904679,
        "filesystems[mountpoint=/].percent": 23.35,
        "filesystems[mountpoint=/].used_bytes": 25437945856,
        "filesystems[mountpoint=/boot].percent": 41.0,
        "filesystems[mountpoint=/boot].used_bytes": 1024,
    }
    assert Template.of(flat.template).integer == [
        True,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
        False,
        True,
    ]


def test_a_template_rebuilds_the_document_exactly():
    flat = flatten(DISK)
    rebuilt = Template.of(flat.template).rebuild(iter(flat.values))
    assert orjson.dumps(rebuilt) == orjson.dumps(DISK)  # key order, 41.0 stays a float


def test_extract_follows_paths_as_flatten_names_them():
    assert extract(DISK, paths.parse("filesystems[mountpoint=/boot].used_bytes")) == 1024
    assert extract(DISK, paths.parse("devices.vda.io_time_seconds_total")) == 11.068
    assert extract(DISK, paths.parse("filesystems[0].percent")) is None  # named by identity
    assert extract(DISK, paths.parse("pressure_error")) is None
    assert extract(DISK, paths.parse("note")) is None
    assert extract(DISK, paths.parse("total.nothing")) is None


def _block(values: dict[str, list[int | float | None]], start: int = 0, step: int = 1) -> Block:
    n = len(next(iter(values.values())))
    stamps = np.arange(n, dtype=np.int64) * step + start
    return Block(stamps, {k: column(v) for k, v in values.items()})


def test_integers_and_short_decimals_come_back_exactly():
    counter = [10**12 + 7 * i + (i % 3) for i in range(500)]
    source = _block(
        {
            "counter": counter,
            "percent": [round(i * 0.37 % 100, 2) for i in range(500)],
            "seconds": [round(12.288974 + i * 0.000001, 6) for i in range(500)],
            "gaps": [None if i % 7 == 0 else i for i in range(500)],
            "huge": [2**63 - 1 - i * 977 for i in range(500)],
        },
        start=1_764_000_000_000_000,
        step=1_000_123,
    )
    decoded = blocks.decode(blocks.encode(source))
    assert decoded.timestamps.tolist() == source.timestamps.tolist()
    for key, col in source.columns.items():
        back = decoded.columns[key]
        assert back.present.tolist() == col.present.tolist()
        assert back.values[col.present].tolist() == col.values[col.present].tolist(), key


def test_other_floats_keep_six_significant_digits_of_their_column():
    rates = [4039517.1395541807 * (1 + math.sin(i) / 3) for i in range(300)] + [0.5]
    decoded = blocks.decode(blocks.encode(_block({"rate": rates})))
    biggest = max(abs(v) for v in rates)
    errors = [abs(a - b) for a, b in zip(decoded.columns["rate"].values, rates, strict=True)]
    assert max(errors) <= 5e-6 * biggest
    assert max(errors) > 0  # lossy: the digits past the sixth are gone


def test_only_the_columns_asked_for_are_decoded():
    blob = blocks.encode(_block({"a": [1, 2, 3], "b": [4.5, 5.5, 6.5], "c": [7, None, 9]}))
    partial = blocks.decode(blob, ["c", "missing"])
    assert list(partial.columns) == ["c"]
    assert partial.columns["c"].present.tolist() == [True, False, True]
    assert blocks.keys_of(blob) == ["a", "b", "c"]


def test_many_blocks_decode_together_as_each_alone():
    """decode_many restores blocks with as many rows in one pass: every block must come
    back as decode gives it, whatever its columns, widths, orders, masks and kinds, and
    a block's last bytes must not leak into the next one's."""
    rng = np.random.default_rng(7)

    def varied(n: int, seed: int) -> bytes:
        r = np.random.default_rng(seed)
        values: dict[str, list[int | float | None]] = {
            "wide": [int(v) for v in r.integers(-(2**40), 2**40, n)],  # many byte planes
            "steady": [1_000_000 + 3 * i for i in range(n)],  # second differences: 0
            "small": [int(v) for v in r.integers(0, 3, n)],
            "decimal": [round(float(v), 2) for v in r.uniform(0, 100, n)],
            "lossy": [float(v) * 4039517.1395541807 for v in r.uniform(0, 1, n)],
            "gaps": [None if i % 5 == seed % 5 else i * seed for i in range(n)],
        }
        if seed % 2:
            values["only_odd"] = [seed] * n
        return blocks.encode(_block(values, start=seed * 10**9, step=60_000_000))

    found = [varied(n, seed) for seed, n in enumerate([60, 60, 7, 60, 1, 2, 60, 0, 7])]
    order = rng.permutation(len(found))
    blobs = [found[i] for i in order]
    for keys in (None, ["wide", "gaps", "only_odd", "missing"], []):
        together = blocks.decode_many(blobs, keys)
        assert len(together) == len(blobs)
        for blob, block in zip(blobs, together, strict=True):
            alone = blocks.decode(blob, keys)
            assert block.timestamps.tolist() == alone.timestamps.tolist()
            assert list(block.columns) == list(alone.columns)
            for key, col in alone.columns.items():
                assert block.columns[key].present.tolist() == col.present.tolist(), key
                assert block.columns[key].values.tolist() == col.values.tolist(), key
                assert block.columns[key].values.dtype == col.values.dtype, key
    assert blocks.decode_many([]) == []


def test_a_shifted_block_is_the_same_block_later():
    source = _block({"a": [1, 2, 3], "b": [4.5, None, 6.5]}, start=1_000, step=7)
    for timestamps in ([1_000, 1_007, 1_014], [1_000, 1_007, 1_030]):
        source.timestamps = np.array(timestamps, np.int64)
        moved = blocks.decode(blocks.shifted(blocks.encode(source), 86_400_000_000))
        assert moved.timestamps.tolist() == [t + 86_400_000_000 for t in timestamps]
        assert moved.columns["b"].present.tolist() == [True, False, True]
        assert moved.columns["a"].values.tolist() == [1, 2, 3]


def test_constant_columns_cost_next_to_nothing():
    n = 3600
    busy = _block({f"c{i}": [0] * n for i in range(200)})
    one = _block({"c0": [0] * n})
    assert len(blocks.encode(busy)) - len(blocks.encode(one)) < 200 * 12


def test_concat_keeps_one_row_per_timestamp_first_block_wins():
    older = _block({"x": [1, 2, 3]}, start=0)
    newer = _block({"x": [20, 30, 40], "y": [1.5, 2.5, 3.5]}, start=1)
    both = concat([older, newer])
    assert both.timestamps.tolist() == [0, 1, 2, 3]
    assert both.columns["x"].values.tolist() == [1, 2, 3, 40]
    assert both.columns["y"].present.tolist() == [False, False, False, True]


def test_documents_come_back_whole_from_a_chunk_merged_with_late_ones():
    # Exact numbers only (a full-precision float would come back to six digits).
    docs = [
        {**DISK, "total": {"read_bytes_total": 1000 + i, "busy_percent": 23.35}} for i in range(5)
    ]
    rows = [(i * 1_000_000, orjson.dumps(d).decode()) for i, d in enumerate(docs)]
    first = from_documents(rows[:3])
    late = from_documents([rows[1], rows[3], rows[4]])  # one of them already stored
    merged = blocks.decode(blocks.encode(merge(first, late)))
    assert [ts for ts, _ in documents(merged)] == [0, 1_000_000, 2_000_000, 3_000_000, 4_000_000]
    assert [d for _, d in documents(merged)] == docs
    assert merged.columns[TEMPLATE].values.tolist() == [0, 0, 0, 0, 0]


def test_pick_takes_only_the_wanted_numbers():
    rows = [(5, orjson.dumps(DISK).decode())]
    wanted = {"filesystems[mountpoint=/].percent": paths.parse("filesystems[mountpoint=/].percent")}
    picked = pick(rows, wanted)
    assert picked.timestamps.tolist() == [5]
    assert picked.columns["filesystems[mountpoint=/].percent"].values.tolist() == [23.35]


def test_minute_aggregates_and_wider_buckets_from_them():
    # 180 one-second rows: x = i, y present on even seconds only.
    raw = _block(
        {"x": list(range(180)), "y": [float(i) if i % 2 == 0 else None for i in range(180)]},
        step=1_000_000,
    )
    minutes = aggregate(raw, 60_000_000)
    assert minutes.timestamps.tolist() == [0, 60_000_000, 120_000_000]
    assert minutes.columns[SAMPLES].values.tolist() == [60, 60, 60]
    assert minutes.columns["x|avg"].values.tolist() == [29.5, 89.5, 149.5]
    assert minutes.columns["x|min"].values.tolist() == [0, 60, 120]
    assert minutes.columns["x|max"].values.tolist() == [59, 119, 179]
    assert minutes.columns["x|last"].values.tolist() == [59, 119, 179]
    assert minutes.columns["y|count"].values.tolist() == [30, 30, 30]
    assert minutes.columns["y|last"].values.tolist() == [58.0, 118.0, 178.0]
    wide = coarser(minutes, 120_000_000)
    assert wide.columns[SAMPLES].values.tolist() == [120, 60]
    assert wide.columns["x|avg"].values.tolist() == [59.5, 149.5]
    assert wide.columns["x|min"].values.tolist() == [0, 120]
    assert wide.columns["x|max"].values.tolist() == [119, 179]
    assert wide.columns["y|avg"].values.tolist() == [59.0, 149.0]
    assert wide.columns["y|last"].values.tolist() == [118.0, 178.0]
    assert wide.columns["y|count"].values.tolist() == [60, 30]
    # The same arithmetic straight from the rows.
    direct = aggregate(raw, 120_000_000)
    for key in ("x|avg", "x|min", "x|max", "x|last", "y|avg", "y|count"):
        assert direct.columns[key].values.tolist() == wide.columns[key].values.tolist(), key
