"""Each snapshot against the rules: inactive -> pending -> firing -> resolved.

A rule's condition holding starts it pending; held for the rule's `for`, it fires (at once
with `for: 0s`); one snapshot where it does not hold resolves a firing alert and drops a
pending one. A value that cannot be read this tick (the collector failed, the member is
gone for a tick) changes nothing: an alert is never resolved by missing data alone.
Evaluation is plain Python over the snapshot's already-built sections: a few
microseconds a rule (bench/README.md, alerts)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from exporter.alerts.rules import Rule
from exporter.storage import paths
from exporter.storage.documents import extract, identity_key

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert instance: a rule, on a host, for one member where the rule has `[*]`."""

    alert: str
    host: str
    labels: tuple[tuple[str, str], ...]  # the member's identity, and the rule's labels
    severity: str
    summary: str
    state: str
    value: float
    peak: float
    started_at: datetime  # when the condition started to hold
    fired_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.alert, self.labels

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def read(data: Mapping[str, Any] | None, steps: tuple[paths.Step, ...]) -> float | None:
    """The number at `steps`; booleans as 1 and 0; None when absent."""
    if data is None:
        return None
    if len(steps) == 1 and isinstance(steps[0], str):
        value = data.get(steps[0])
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float):
            return float(value) if math.isfinite(value) else None
    found = extract(dict(data), steps) if steps else None
    return None if found is None else float(found)


def members(
    data: Mapping[str, Any] | None, steps: tuple[paths.Step, ...]
) -> Iterable[tuple[tuple[str, str], Any]]:
    """A `[*]` rule's list: each member with its identity label."""
    node: Any = data
    for step in steps:
        if not isinstance(node, dict) or isinstance(step, paths.Select):
            return
        node = node.get(step)
    if not isinstance(node, list):
        return
    key = identity_key(node)
    for index, member in enumerate(node):
        if key is None:
            yield ("index", str(index)), member
        else:
            yield (key, str(member[key])), member


def render(summary: str, host: str, value: float, labels: Mapping[str, str]) -> str:
    shown = f"{value:.1f}" if abs(value) < 1e6 else f"{value:.3g}"
    text = summary.replace("{{ value }}", shown).replace("{{ host }}", host)
    for name, label in labels.items():
        text = text.replace(f"{{{{ {name} }}}}", label)
    return text


def brief(alert: Alert) -> dict[str, Any]:
    """An open alert as a snapshot carries it."""
    return {
        "alert": alert.alert,
        "state": alert.state,
        "severity": alert.severity,
        "summary": alert.summary,
        "labels": alert.label_map(),
        "since": (alert.fired_at or alert.started_at).isoformat(),
    }


def end(alert: Alert, at: datetime, value: float | None = None) -> Alert:
    """The alert resolved at `at`. A pending one ends with no fired_at: the store drops
    it, receivers ignore it."""
    return replace(
        alert, state=RESOLVED, value=alert.value if value is None else value, resolved_at=at
    )


SEVERITY_RANK = {"critical": 0, "page": 0, "error": 1, "warning": 2, "info": 3}


def worst(alerts: list[dict[str, Any]]) -> str | None:
    """The worst severity among firing alerts (unknown severities rank as warning)."""
    firing = [a["severity"] for a in alerts if a.get("state") == FIRING]
    return min(firing, key=lambda s: SEVERITY_RANK.get(s, 2)) if firing else None


class Evaluator:
    """The rules' state for one host; `evaluate` returns the alerts that changed."""

    def __init__(self, rules: list[Rule], host: str) -> None:
        self.rules = rules
        self.host = host
        self.active: dict[tuple[str, tuple[tuple[str, str], ...]], Alert] = {}

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Pending and firing alerts kept from before a restart: they go on, not anew.
        Only those of this evaluator's rules; the caller decides about the others."""
        names = {rule.alert for rule in self.rules}
        for alert in alerts:
            if alert.state in (PENDING, FIRING) and alert.alert in names:
                self.active[alert.key] = alert

    def close(self, at: datetime) -> list[Alert]:
        """Every open alert ended now (its host removed from the fleet)."""
        ended = [end(alert, at) for alert in self.active.values()]
        self.active.clear()
        return ended

    def evaluate(
        self, sections: Mapping[str, Mapping[str, Any] | None], at: datetime
    ) -> list[Alert]:
        changed: list[Alert] = []
        for rule in self.rules:
            data = sections.get(rule.section)
            if rule.suffix is None:
                self._step(rule, (), read(data, rule.prefix), at, changed)
                continue
            for identity, member in members(data, rule.prefix):
                value = (
                    read(member, rule.suffix)
                    if rule.suffix
                    else (float(member) if isinstance(member, int | float) else None)
                )
                self._step(rule, (identity,), value, at, changed)
        return changed

    def _step(
        self,
        rule: Rule,
        identity: tuple[tuple[str, str], ...],
        value: float | None,
        at: datetime,
        changed: list[Alert],
    ) -> None:
        labels = tuple(sorted({**dict(identity), **rule.labels}.items()))
        key = (rule.alert, labels)
        current = self.active.get(key)
        if value is None:
            return  # unknown this tick: no change either way
        holds = rule.test(value, rule.threshold)
        if not holds:
            if current is None:
                return
            del self.active[key]
            changed.append(end(current, at, value))
            return
        if current is None:
            current = Alert(
                alert=rule.alert,
                host=self.host,
                labels=labels,
                severity=rule.severity,
                summary=render(rule.summary, self.host, value, dict(labels)),
                state=PENDING,
                value=value,
                peak=value,
                started_at=at,
            )
            self.active[key] = current
            if rule.for_seconds > 0:
                changed.append(current)
                return
        peak = max(current.peak, value) if rule.op in (">", ">=") else min(current.peak, value)
        updated = replace(current, value=value, peak=peak)
        if (
            current.state == PENDING
            and (at - current.started_at).total_seconds() >= rule.for_seconds
        ):
            updated = replace(
                updated,
                state=FIRING,
                fired_at=at,
                summary=render(rule.summary, self.host, value, dict(labels)),
            )
            changed.append(updated)
        self.active[key] = updated
