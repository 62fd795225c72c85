"""Alert rules: a YAML file of threshold rules on snapshot paths, validated before serving.

    rules:
      - alert: HostCpuBusy
        expr: cpu.usage_percent > 90          # a snapshot path, an operator, a number
        for: 5m                               # held this long before firing (0s: at once)
        severity: warning
        summary: "CPU {{ value }} % busy on {{ host }}"
        labels: {team: infra}                 # optional, passed on

A path starts with the section (`cpu`, `memory`, `network`, `disk`, `perf_events`,
`memory_bandwidth`, `processes`, `cgroups`) and walks it as stored paths do
(exporter/storage/paths.py): `disk.filesystems[mountpoint=/].percent`. The section `host`
is not in a snapshot: it is how long a host of the fleet has written nothing
(`host.silent_seconds`, `host.silent_intervals`), evaluated for every host by one dashboard
instance per database (exporter/alerts/silence.py). `[*]` on a list makes
one alert per member, labelled by the member's identity (`disk.filesystems[*].percent`: one
per mount, label `mountpoint`). A true/false value compares as 1/0 (`cpu.available == 0`).
"""

from __future__ import annotations

import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import yaml

from exporter.collectors.sections import SECTION_TYPES
from exporter.storage import paths

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPR = re.compile(r"^\s*(?P<path>\S+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<number>\S+)\s*$")
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = {"alert", "expr", "for", "severity", "summary", "labels"}
WILDCARD = "[*]"
MAX_RULES = 500


class HostSilence(TypedDict):
    """The `host` section of a rule: a fleet host's silence, not a snapshot's section."""

    silent_seconds: float  # since the host's latest write, by the database's clock
    silent_intervals: float  # the same in the host's own sampling intervals


HOST_SECTION = "host"
RULE_SECTIONS: dict[str, type] = {**SECTION_TYPES, HOST_SECTION: HostSilence}

# What `perfpulse serve` evaluates without PERFPULSE_ALERT_RULES: the Prometheus rules'
# alerts that one snapshot can tell (same names where they overlap).
DEFAULT_RULES = """\
rules:
  - alert: PerfpulseCpuSaturated
    expr: cpu.usage_percent > 90
    for: 15m
    severity: warning
    summary: "CPU {{ value }} % busy on {{ host }}"
  - alert: PerfpulseMemoryPressure
    expr: memory.percent > 90
    for: 10m
    severity: warning
    summary: "Memory {{ value }} % used on {{ host }}"
  - alert: PerfpulseDiskSaturated
    expr: disk.total.busy_percent > 90
    for: 15m
    severity: warning
    summary: "The busiest disk on {{ host }} is {{ value }} % busy"
  - alert: PerfpulseFilesystemFull
    expr: disk.filesystems[*].percent > 90
    for: 5m
    severity: critical
    summary: "{{ mountpoint }} on {{ host }} is {{ value }} % full"
  - alert: PerfpulseSwapGrowing
    expr: memory.swap_in_bytes_per_second > 1048576
    for: 10m
    severity: warning
    summary: "{{ host }} swaps in {{ value }} B/s"
  - alert: PerfpulseCollectorFailing
    expr: cpu.available == 0
    for: 5m
    severity: warning
    summary: "The cpu collector is failing on {{ host }}"
  - alert: PerfpulseCollectorFailing
    expr: memory.available == 0
    for: 5m
    severity: warning
    summary: "The memory collector is failing on {{ host }}"
  - alert: PerfpulseCollectorFailing
    expr: disk.available == 0
    for: 5m
    severity: warning
    summary: "The disk collector is failing on {{ host }}"
  - alert: PerfpulseCollectorFailing
    expr: network.available == 0
    for: 5m
    severity: warning
    summary: "The network collector is failing on {{ host }}"
  - alert: PerfpulseHostStale
    expr: host.silent_intervals > 3
    for: 1m
    severity: warning
    summary: "{{ host }} has written nothing for {{ value }} of its sampling intervals"
"""


class RulesError(ValueError):
    """A rules file that cannot be used: which file, which rule, and why."""

    def __init__(self, source: str, rule: str | None, reason: str) -> None:
        self.source, self.rule, self.reason = source, rule, reason
        where = f"{source}: rule {rule}" if rule else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Rule:
    alert: str
    expr: str
    section: str
    prefix: tuple[paths.Step, ...]  # up to the list of a `[*]`, or the whole path
    suffix: tuple[paths.Step, ...] | None  # after `[*]`; None without a wildcard
    op: str
    threshold: float
    for_seconds: float
    severity: str
    summary: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def test(self) -> Callable[[float, float], bool]:
        return OPERATORS[self.op]


def parse_duration(text: object) -> float:
    """`0s`, `30s`, `5m`, `1h30m`: seconds. ValueError otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return float(text)
    match = _DURATION.match(str(text).strip()) if isinstance(text, str) else None
    if not match or not str(text).strip():
        raise ValueError(f"duration {text!r} is not like 30s, 5m or 1h30m")
    h, m, s = (match.group(k) for k in ("h", "m", "s"))
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def _check_steps(section: str, steps: tuple[paths.Step, ...], wildcard: bool) -> None:
    """Walk the section's declared type (collectors/sections.py): a name it does not
    have is an unknown path. Where the type says no more (a free-form dict, a list of
    objects), the rest is taken on trust."""
    node: Any = RULE_SECTIONS[section]
    for i, step in enumerate(steps):
        node = _unwrap(node)
        if isinstance(step, paths.Select):
            if typing.get_origin(node) is not list:
                raise ValueError(f"{paths.render(steps[: i + 1])!r}: not a list")
            node = typing.get_args(node)[0]
            continue
        if typing.is_typeddict(node):
            hints = typing.get_type_hints(node)
            if step not in hints and step != "available":
                known = ", ".join(sorted(hints))
                raise ValueError(
                    f"unknown path: {section} has no {paths.render(steps[: i + 1])!r} (it has {known})"
                )
            node = hints.get(step, bool)
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return
    if wildcard:
        return
    node = _unwrap(node)
    if typing.is_typeddict(node) or typing.get_origin(node) in (dict, list):
        raise ValueError(f"{section}.{paths.render(steps)} is not a number")


def _unwrap(node: Any) -> Any:
    """X | None -> X; a Union of TypedDicts (a section or its unavailable form) -> the
    first TypedDict."""
    args = typing.get_args(node)
    if args and typing.get_origin(node) in (
        typing.Union,
        types.UnionType,
    ):
        useful = [a for a in args if a is not type(None)]
        return useful[0] if useful else node
    return node


def parse_expr(
    expr: object,
) -> tuple[str, tuple[paths.Step, ...], tuple[paths.Step, ...] | None, str, float]:
    if not isinstance(expr, str):
        raise ValueError("expr must be text: a path, an operator and a number")
    match = _EXPR.match(expr)
    if not match:
        raise ValueError(f"expr {expr!r} is not `path OP number` (OP one of {' '.join(OPERATORS)})")
    text, op, number = match["path"], match["op"], match["number"]
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"{number!r} is not a number") from None
    section, _, rest = text.partition(".")
    if section not in RULE_SECTIONS:
        raise ValueError(
            f"unknown path {text!r}: it starts with a section, one of {', '.join(RULE_SECTIONS)}"
        )
    if not rest:
        raise ValueError(f"unknown path {text!r}: a section is not a number")
    if rest.count(WILDCARD) > 1:
        raise ValueError(f"{text!r}: at most one [*] per path")
    try:
        if WILDCARD in rest:
            before, after = rest.split(WILDCARD)
            prefix = paths.parse(before)
            suffix = paths.parse(after.removeprefix(".")) if after else ()
            _check_steps(section, (*prefix, paths.Select(None, "0"), *suffix), wildcard=not suffix)
            return section, prefix, suffix, op, threshold
        steps = paths.parse(rest)
    except paths.PathError as exc:
        raise ValueError(f"path {text!r}: {exc}") from None
    _check_steps(section, steps, wildcard=False)
    return section, steps, None, op, threshold


def parse_rules(text: str, source: str) -> list[Rule]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(source, None, f"not YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RulesError(source, None, "expected a mapping with a `rules:` list")
    items = document["rules"]
    if len(items) > MAX_RULES:
        raise RulesError(source, None, f"at most {MAX_RULES} rules")
    rules = []
    for index, item in enumerate(items, start=1):
        name = item.get("alert") if isinstance(item, dict) else None
        label = f"#{index}" + (f" ({name})" if isinstance(name, str) else "")
        try:
            rules.append(_rule(item))
        except ValueError as exc:
            raise RulesError(source, label, str(exc)) from None
    return rules


def _rule(item: object) -> Rule:
    if not isinstance(item, dict):
        raise ValueError("a rule is a mapping")
    unknown = set(item) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; a rule has {sorted(_KEYS)}")
    name = item.get("alert")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("`alert` must be a name (letters, digits, _)")
    section, prefix, suffix, op, threshold = parse_expr(item.get("expr"))
    labels = item.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and _NAME.match(k) and isinstance(v, str | int | float)
        for k, v in labels.items()
    ):
        raise ValueError("`labels` must map names to text")
    severity = item.get("severity", "warning")
    summary = item.get("summary", f"{name} on {{{{ host }}}}")
    if not isinstance(severity, str) or not isinstance(summary, str):
        raise ValueError("`severity` and `summary` are text")
    return Rule(
        alert=name,
        expr=item["expr"].strip(),
        section=section,
        prefix=prefix,
        suffix=suffix,
        op=op,
        threshold=threshold,
        for_seconds=parse_duration(item.get("for", "0s")),
        severity=severity,
        summary=summary,
        labels={k: str(v) for k, v in labels.items()},
    )


def describe_rule(rule: Rule) -> dict[str, Any]:
    """A rule as GET /api/alerts/rules gives it."""
    match = _EXPR.match(rule.expr)
    path = match["path"] if match else rule.expr
    plain = rule.suffix is None and all(isinstance(step, str) for step in rule.prefix)
    return {
        "alert": rule.alert,
        "expr": rule.expr,
        "path": path,
        "steps": [rule.section, *rule.prefix] if plain else None,
        "op": rule.op,
        "threshold": rule.threshold,
        "for_seconds": rule.for_seconds,
        "severity": rule.severity,
        "summary": rule.summary,
        "labels": rule.labels,
    }


def load_rules(path: Path | None) -> list[Rule]:
    """The rules of `path`, or the default set without one."""
    if path is None:
        return parse_rules(DEFAULT_RULES, "the default rules")
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(str(path), None, f"cannot read it: {exc.strerror or exc}") from None
    return parse_rules(text, str(path))
