"""The snapshot's declared section types are the contract: every path the panel spec, the
stored fields and `perfpulse watch` read must exist in those types and in a real snapshot
of this machine (real collectors, the real perf child), and the real snapshot must conform
to the types key for key."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from exporter.collectors.sections import SECTION_TYPES, Unavailable
from exporter.config import load_settings
from exporter.runtime import Runtime
from exporter.spec import HARDWARE_EVENTS, SOFTWARE_EVENTS, load_panels
from exporter.storage.fields import FIELDS
from exporter.watch import SUMMARY_PATHS
from tests.aio import run

NUMBER = (int, float)


def _members(tp: Any) -> list[Any]:
    """The alternatives of a union (X | None included), or the type itself."""
    if get_origin(tp) in (Union, types.UnionType):
        return list(get_args(tp))
    return [tp]


def declared_type(path: tuple[str, ...]) -> Any:
    """The declared type at `path` (section first); KeyError naming the step that fails."""
    section, *rest = path
    tp: Any = SECTION_TYPES[section]
    walked = [section]
    for key in rest:
        walked.append(key)
        candidates = [m for m in _members(tp) if m is not type(None)]
        if len(candidates) != 1:
            raise KeyError(f"{'.'.join(walked)}: ambiguous type {tp}")
        node = candidates[0]
        if is_typeddict(node):
            hints = get_type_hints(node)
            if key not in hints:
                raise KeyError(f"{'.'.join(walked)}: {node.__name__} has no key {key!r}")
            tp = hints[key]
        elif get_origin(node) is dict:
            tp = get_args(node)[1]  # keyed by what the machine has
        else:
            raise KeyError(f"{'.'.join(walked)}: {node} has no keys")
    return tp


def is_numeric(tp: Any) -> bool:
    members = [m for m in _members(tp) if m is not type(None)]
    return bool(members) and all(m in NUMBER for m in members)


def spec_paths() -> list[tuple[str, ...]]:
    return [
        tuple(item["path"])
        for panel in load_panels()
        for item in [*panel["live"], *panel.get("marks", [])]
    ] + [
        tuple(mark["of"])
        for panel in load_panels()
        for mark in panel.get("marks", [])
        if "of" in mark
    ]


def field_paths() -> list[tuple[str, ...]]:
    return [(section, *path) for section, fields in FIELDS.items() for _, path in fields]


ALL_PATHS = sorted(set(spec_paths() + field_paths() + list(SUMMARY_PATHS.values())))


@pytest.mark.parametrize("path", ALL_PATHS, ids=".".join)
def test_every_shared_path_is_a_declared_number(path):
    assert is_numeric(declared_type(path)), declared_type(path)


def test_dynamic_keys_in_shared_paths_are_events_perfpulse_counts():
    events = set(HARDWARE_EVENTS + SOFTWARE_EVENTS)
    for path in ALL_PATHS:
        if path[:2] == ("perf_events", "rates"):
            assert path[2] in events, path


def test_the_walker_refuses_paths_the_types_do_not_have():
    with pytest.raises(KeyError, match="CpuData has no key 'usage_pct'"):
        declared_type(("cpu", "usage_pct"))
    with pytest.raises(KeyError, match="has no keys"):
        declared_type(("memory", "percent", "deeper"))
    assert not is_numeric(declared_type(("memory_bandwidth", "source")))


def test_history_series_name_stored_fields():
    for panel in load_panels():
        history = panel["history"]
        names = {name for name, _ in FIELDS[history["metric_type"]]}
        for series in history["series"]:
            assert series["field"] in names, (panel["key"], series["field"])


def conforms(value: Any, tp: Any, where: str) -> list[str]:
    """Where `value` departs from `tp` (empty when it conforms)."""
    problems: list[str] = []
    for member in _members(tp):
        if member is type(None) and value is None:
            return []
    candidates = [m for m in _members(tp) if m is not type(None)]
    if value is None:
        return [f"{where}: None where {tp} is declared"]
    node = candidates[0] if len(candidates) == 1 else None
    if node is None:  # a union of plain types
        return (
            []
            if isinstance(value, tuple(c for c in candidates if isinstance(c, type)))
            else [f"{where}: {value!r} is not {tp}"]
        )
    if is_typeddict(node):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} where {node.__name__} is declared"]
        hints = get_type_hints(node)
        required = node.__required_keys__
        missing = required - value.keys()
        extra = value.keys() - hints.keys()
        problems += [f"{where}.{key}: missing" for key in sorted(missing)]
        problems += [f"{where}.{key}: not declared in {node.__name__}" for key in sorted(extra)]
        for key in value.keys() & hints.keys():
            problems += conforms(value[key], hints[key], f"{where}.{key}")
        return problems
    origin = get_origin(node)
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: not a mapping"]
        for key, item in value.items():
            problems += conforms(item, get_args(node)[1], f"{where}.{key}")
        return problems
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        for i, item in enumerate(value):
            problems += conforms(item, get_args(node)[0], f"{where}[{i}]")
        return problems
    if origin is Literal:
        return [] if value in get_args(node) else [f"{where}: {value!r} not in {node}"]
    if node is float:
        return (
            []
            if isinstance(value, NUMBER) and not isinstance(value, bool)
            else [f"{where}: {value!r} is not a number"]
        )
    return [] if isinstance(value, node) else [f"{where}: {value!r} is not {node.__name__}"]


@pytest.fixture(scope="module")
def real_snapshot() -> dict[str, Any]:
    """Two ticks of this machine's collectors, the real perf child included."""
    settings = load_settings(sampling_interval_seconds=0.5, hostname="contract")

    async def take() -> dict[str, Any]:
        runtime = Runtime(settings)
        async with runtime.sampling_only() as sampler:
            await sampler.sample_once()
            assert await runtime.perf_reported(within=10.0), "perf reported nothing in 10 s"
            data: dict[str, Any] = (await sampler.sample_once()).to_dict()
            return data

    return run(take())


def test_a_real_snapshot_conforms_to_the_declared_types(real_snapshot):
    problems = []
    for section, tp in SECTION_TYPES.items():
        data = dict(real_snapshot[section])
        if data.pop("available") is False:
            problems += conforms({"available": False, **data}, Unavailable, section)
            continue
        problems += conforms(data, tp, section)
    assert problems == []


@pytest.mark.parametrize("path", ALL_PATHS, ids=".".join)
def test_every_shared_path_exists_in_a_real_snapshot(real_snapshot, path):
    node: Any = real_snapshot
    for key in path:
        assert isinstance(node, dict) and key in node, f"{'.'.join(path)}: no {key!r}"
        node = node[key]
    assert node is None or isinstance(node, NUMBER)


def test_conforms_reports_a_drifted_section():
    drifted = {"total": {}, "devices": {"vda": {"busy_percent": "high"}}}
    problems = conforms(drifted, SECTION_TYPES["disk"], "disk")
    assert "disk.total.read_bytes_total: missing" in problems
    assert any(p.startswith("disk.devices.vda.busy_percent") for p in problems)
