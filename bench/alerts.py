"""Alert evaluation cost per snapshot: the default rules, and 100 rules, over the stored
test capture (15 minutes of this machine at 1 s), against an empty rule set in the same
run (what walking the snapshots alone costs). And the fleet's silence check: the `host.*`
rules stepped for 1,000 and 10,000 hosts, as the leading dashboard instance does every 2 s
(the database query apart)."""

from __future__ import annotations

import gzip
import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import machine
from exporter.alerts.evaluate import Evaluator
from exporter.alerts.rules import DEFAULT_RULES, HOST_SECTION, Rule, load_rules, parse_rules
from exporter.alerts.silence import SilenceWatch

CAPTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "snapshots-1s.jsonl.gz"
ROUNDS = 21


def _snapshots() -> list[tuple[datetime, dict[str, Any]]]:
    out = []
    with gzip.open(CAPTURE, "rt") as lines:
        for line in lines:
            row = json.loads(line)
            sections = {name: json.loads(text) for name, text in row["rows"]}
            out.append((datetime.fromisoformat(row["timestamp"]), sections))
    return out


def _hundred() -> str:
    """100 rules: the default nine on snapshots repeated under other names, with other
    thresholds."""
    rules = _on_snapshots(parse_rules(DEFAULT_RULES, "defaults"))
    lines = ["rules:"]
    for i in range(100):
        rule = rules[i % len(rules)]
        lines += [
            f"  - alert: Bench{i}",
            f"    expr: {rule.expr.rsplit(' ', 1)[0]} {rule.threshold + i}",
            "    for: 1m",
        ]
    return "\n".join(lines) + "\n"


def _per_snapshot_us(rules: list[Any], snapshots: list[tuple[datetime, dict[str, Any]]]) -> float:
    samples = []
    for _ in range(ROUNDS):
        evaluator = Evaluator(rules, "bench")
        started = time.perf_counter()
        for at, sections in snapshots:
            evaluator.evaluate(sections, at)
        samples.append((time.perf_counter() - started) / len(snapshots) * 1e6)
    return statistics.median(samples)


def _on_snapshots(rules: list[Rule]) -> list[Rule]:
    """What the engine evaluates per snapshot: all but the `host.*` rules."""
    return [r for r in rules if r.section != HOST_SECTION]


def _silence_check_ms(hosts: int) -> float:
    """One check of every host's silence; a tenth of the hosts silent (their alerts open)."""
    rules = [r for r in load_rules(None) if r.section == HOST_SECTION]
    watch = SilenceWatch(rules, None, lambda changes: None)  # type: ignore[arg-type]
    silence = {f"host-{i:05d}": (60.0 if i % 10 == 0 else 0.4, 1.0) for i in range(hosts)}
    start = datetime(2026, 1, 1)
    watch.check(silence, start)
    samples = []
    for round_ in range(ROUNDS):
        started = time.perf_counter()
        watch.check(silence, start.replace(minute=1 + round_))
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


def run() -> dict[str, Any]:
    snapshots = _snapshots()
    defaults = _on_snapshots(load_rules(None))
    empty = _per_snapshot_us([], snapshots)
    default = _per_snapshot_us(defaults, snapshots)
    hundred = _per_snapshot_us(_on_snapshots(parse_rules(_hundred(), "hundred")), snapshots)
    return {
        "machine": machine(),
        "snapshots": len(snapshots),
        "rounds": ROUNDS,
        "empty_us": empty,
        "default_rules": len(defaults),
        "default_us": default,
        "hundred_us": hundred,
        "silence_ms": {hosts: _silence_check_ms(hosts) for hosts in (1000, 10_000)},
    }


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## alerts — evaluation cost per snapshot",
            "",
            f"{result['machine']}; {result['snapshots']} snapshots of the test capture, median "
            f"of {result['rounds']} rounds.",
            "",
            "| rules | µs per snapshot | over the empty set |",
            "|---|---|---|",
            f"| none (baseline) | {result['empty_us']:.2f} | |",
            f"| default ({result['default_rules']}) | {result['default_us']:.2f} | "
            f"{result['default_us'] - result['empty_us']:.2f} |",
            f"| 100 | {result['hundred_us']:.2f} | {result['hundred_us'] - result['empty_us']:.2f} |",
            "",
            "| fleet hosts | silence check, ms (every 2 s, on one instance) |",
            "|---|---|",
            *(f"| {hosts:,} | {ms:.2f} |" for hosts, ms in result["silence_ms"].items()),
        ]
    )
