"""Alert rules and their evaluation: the file format and its errors (`perfpulse alerts
check`, `serve` exiting 2), the state machine, members by `[*]`, restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from exporter.alerts.evaluate import FIRING, PENDING, RESOLVED, Evaluator
from exporter.alerts.rules import RulesError, load_rules, parse_duration, parse_rules
from tests.aio import run
from tests.servers import free_port

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


GOOD = """\
rules:
  - alert: HostCpuBusy
    expr: cpu.usage_percent > 90
    for: 5m
    severity: warning
    summary: "CPU {{ value }} % busy on {{ host }}"
  - alert: RootAlmostFull
    expr: disk.filesystems[mountpoint=/].percent >= 80
    for: 0s
    severity: critical
    labels: {team: infra}
"""


def test_the_default_set_loads_and_names_what_the_prometheus_rules_name():
    rules = load_rules(None)
    names = {r.alert for r in rules}
    assert {"PerfpulseCpuSaturated", "PerfpulseMemoryPressure", "PerfpulseDiskSaturated"} <= names
    prometheus = Path("prometheus/rules/perfpulse.yml").read_text()
    # Prometheus says PerfpulseDown where perfpulse says PerfpulseHostStale.
    for name in names - {"PerfpulseFilesystemFull", "PerfpulseSwapGrowing", "PerfpulseHostStale"}:
        assert f"alert: {name}" in prometheus, name


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("expr: cpu.nosuch > 1", "unknown path: cpu has no 'nosuch'"),
        ("expr: cpux.usage_percent > 1", "it starts with a section"),
        ("expr: cpu.usage_percent >> 1", "is not `path OP number`"),
        ("expr: cpu.usage_percent > lots", "'lots' is not a number"),
        ("expr: cpu.per_cpu > 1", "is not a number"),
        ("expr: cpu.usage_percent > 1\n    for: 5 minutes", "duration '5 minutes'"),
        ("expr: cpu.usage_percent > 1\n    colour: red", "unknown keys ['colour']"),
    ],
)
def test_a_broken_rule_is_named_with_its_reason(rule, reason):
    text = f"rules:\n  - alert: Broken\n    {rule}\n"
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "mine.yml")
    assert str(caught.value).startswith("mine.yml: rule #1 (Broken): ")
    assert reason in str(caught.value)


def test_durations():
    assert [parse_duration(t) for t in ("0s", "30s", "5m", "1h30m", "2.5s")] == [
        0,
        30,
        300,
        5400,
        2.5,
    ]
    with pytest.raises(ValueError):
        parse_duration("")


def test_alerts_check_on_good_and_broken_files(tmp_path):
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    done = cli("alerts", "check", str(good))
    assert done.returncode == 0, done.stderr
    assert "2 rules" in done.stdout and "HostCpuBusy" in done.stdout
    broken = tmp_path / "broken.yml"
    broken.write_text(GOOD.replace("cpu.usage_percent > 90", "cpu.usage_percnt > 90"))
    done = cli("alerts", "check", str(broken))
    assert done.returncode == 1
    assert f"{broken}: rule #1 (HostCpuBusy): unknown path" in done.stderr
    missing = cli("alerts", "check", str(tmp_path / "none.yml"))
    assert missing.returncode == 1 and "cannot read it" in missing.stderr
    default = cli("alerts", "check")
    assert default.returncode == 0 and "PerfpulseCpuSaturated" in default.stdout


def test_serve_with_a_broken_rules_file_exits_2_naming_it(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("rules:\n  - alert: Bad\n    expr: memory.percent ~ 3\n")
    done = cli(
        "serve",
        env={
            "PERFPULSE_ALERT_RULES": str(broken),
            "PERFPULSE_DATA_DIR": str(tmp_path / "d"),
            "PERFPULSE_PORT": str(free_port()),
        },
        timeout=30,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{broken}: rule #1 (Bad)" in done.stderr


def snap(cpu: float | None = None, filesystems=None, available: bool = True) -> dict:
    return {
        "cpu": {"available": available, "usage_percent": cpu},
        "disk": {"filesystems": filesystems or []},
    }


def test_pending_then_firing_after_for_then_resolved_by_one_clean_snapshot():
    rules = parse_rules(GOOD, "good.yml")
    ev = Evaluator(rules[:1], "web-1")
    assert ev.evaluate(snap(95), at(0))[0].state == PENDING
    assert ev.evaluate(snap(97), at(200)) == []  # held, not yet 5 minutes
    assert ev.evaluate(snap(None), at(250)) == []  # unknown: no change
    fired = ev.evaluate(snap(96), at(300))
    assert [(a.state, a.value, a.peak) for a in fired] == [(FIRING, 96, 97)]
    assert fired[0].summary == "CPU 96.0 % busy on web-1"
    assert fired[0].started_at == at(0) and fired[0].fired_at == at(300)
    assert ev.evaluate(snap(99), at(301)) == []  # firing stays firing
    resolved = ev.evaluate(snap(10), at(302))
    assert [(a.state, a.resolved_at, a.peak) for a in resolved] == [(RESOLVED, at(302), 99)]
    assert ev.active == {}


def test_a_pending_alert_that_stops_holding_is_dropped_not_resolved():
    ev = Evaluator(parse_rules(GOOD, "good.yml")[:1], "h")
    ev.evaluate(snap(95), at(0))
    [dropped] = ev.evaluate(snap(50), at(10))
    assert dropped.state == RESOLVED and dropped.fired_at is None


def test_members_by_selector_and_by_wildcard():
    rules = parse_rules(
        GOOD + "  - alert: AnyFull\n    expr: disk.filesystems[*].percent > 90\n    for: 0s\n"
        "    summary: '{{ mountpoint }} {{ value }} % full'\n",
        "r.yml",
    )
    ev = Evaluator(rules[1:], "h")
    fs = [
        {"mountpoint": "/", "percent": 85.0},
        {"mountpoint": "/srv", "percent": 95.0},
        {"mountpoint": "/var", "percent": 91.0},
    ]
    fired = ev.evaluate(snap(1, fs), at(0))
    shown = sorted((a.alert, a.label_map().get("mountpoint"), a.state) for a in fired)
    assert shown == [
        ("AnyFull", "/srv", FIRING),
        ("AnyFull", "/var", FIRING),
        ("RootAlmostFull", None, FIRING),
    ]
    root = next(a for a in fired if a.alert == "RootAlmostFull")
    assert root.label_map() == {"team": "infra"}
    srv = next(a for a in fired if a.label_map().get("mountpoint") == "/srv")
    assert srv.summary == "/srv 95.0 % full"
    fs[2]["percent"] = 50.0
    [gone] = ev.evaluate(snap(1, fs), at(1))
    assert (gone.label_map()["mountpoint"], gone.state) == ("/var", RESOLVED)


def test_a_failing_collector_rule_reads_available_as_0_or_1():
    rules = parse_rules("rules:\n  - alert: CpuFailing\n    expr: cpu.available == 0\n", "r")
    ev = Evaluator(rules, "h")
    assert ev.evaluate(snap(5), at(0)) == []
    assert ev.evaluate(snap(available=False), at(1))[0].state == FIRING


def test_a_restart_carries_pending_and_firing_alerts_on():
    rules = parse_rules(GOOD, "good.yml")[:1]
    before = Evaluator(rules, "h")
    before.evaluate(snap(95), at(0))
    [fired] = before.evaluate(snap(95), at(300))
    after = Evaluator(rules, "h")
    after.restore([fired])
    assert after.evaluate(snap(99), at(400)) == []  # no new start
    [resolved] = after.evaluate(snap(1), at(401))
    assert resolved.started_at == at(0) and resolved.peak == 99


SILENCE = """\
rules:
  - alert: HostSilent
    expr: host.silent_intervals > 3
    for: 10s
  - alert: HostCpuBusy
    expr: cpu.usage_percent > 90
"""


def test_silence_rules_fire_per_host_carry_over_and_end_with_the_host():
    from exporter.alerts.silence import SilenceWatch

    rules = [r for r in parse_rules(SILENCE, "s") if r.section == "host"]
    published: list = []
    watch = SilenceWatch(rules, None, published.extend)  # type: ignore[arg-type]
    assert watch.check({"a": (0.4, 1.0), "b": (5.0, 1.0)}, at(0))[0].state == PENDING
    [fired] = watch.check({"a": (0.5, 1.0), "b": (15.0, 1.0)}, at(10))
    assert (fired.host, fired.state, fired.value) == ("b", FIRING, 15.0)
    # A 5 s host silent for 12 s is under 3 of its intervals.
    assert watch.check({"a": (12.0, 5.0), "b": (16.0, 1.0)}, at(11)) == []
    # Another instance takes over: what fired goes on, not anew.
    successor = SilenceWatch(rules, None, published.extend)  # type: ignore[arg-type]
    successor._evaluator("b").restore([fired])
    assert successor.check({"a": (0.3, 1.0), "b": (30.0, 1.0)}, at(20)) == []
    # b removed from the fleet: its alert ends.
    [ended] = successor.check({"a": (0.3, 1.0)}, at(21))
    assert (ended.host, ended.state, ended.started_at) == ("b", RESOLVED, at(0))
    assert [a.state for a in published] == [PENDING, FIRING, RESOLVED]


def test_rules_as_the_dashboard_reads_them():
    from exporter.alerts.rules import describe_rule

    rules = {r.alert: describe_rule(r) for r in load_rules(None)}
    assert rules["PerfpulseCpuSaturated"]["steps"] == ["cpu", "usage_percent"]
    assert rules["PerfpulseCpuSaturated"]["threshold"] == 90.0
    full = rules["PerfpulseFilesystemFull"]
    assert (full["path"], full["steps"], full["severity"]) == (
        "disk.filesystems[*].percent",
        None,
        "critical",
    )
    [root] = parse_rules(GOOD, "good.yml")[1:]
    assert describe_rule(root)["path"] == "disk.filesystems[mountpoint=/].percent"
    assert describe_rule(root)["steps"] is None
    tight = parse_rules("rules:\n  - alert: X\n    expr: cpu.usage_percent>=5\n", "r")[0]
    assert (describe_rule(tight)["path"], describe_rule(tight)["op"]) == ("cpu.usage_percent", ">=")


def test_a_host_rule_is_checked_like_any_other():
    [stale] = [r for r in load_rules(None) if r.section == "host"]
    assert (stale.alert, stale.expr) == ("PerfpulseHostStale", "host.silent_intervals > 3")
    with pytest.raises(RulesError, match="host has no 'uptime'"):
        parse_rules("rules:\n  - alert: X\n    expr: host.uptime > 1\n", "r")


class CpuSample:
    def __init__(self, busy: float) -> None:
        self.busy = busy

    def to_dict(self) -> dict[str, float]:
        return {"usage_percent": self.busy}

    def metrics(self) -> Iterator[object]:
        return iter(())


class Cpu:
    """A cpu section from a list of busy shares: the state machine's input on demand."""

    name = "cpu"
    blocking = False

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def collect(self) -> CpuSample:
        return CpuSample(self.values.pop(0))


def test_each_snapshot_carries_its_open_alerts_and_the_relay_summary_counts_them():
    from exporter.alerts.engine import AlertEngine
    from exporter.sampler import Sampler
    from exporter.sinks.relay import publish_args

    rules = parse_rules(GOOD, "good.yml")[:1]
    rules = [replace(rules[0], for_seconds=0.0)]
    engine = AlertEngine(rules, "h", database=None, receivers=[])  # type: ignore[arg-type]
    engine.evaluating = True
    sampler = Sampler([Cpu([95.0, 10.0])], interval=0.5, deadline=0.4, host="h")
    sampler.annotate = engine.annotate
    busy = run(sampler.sample_once())
    [carried] = busy.to_dict()["alerts"]
    assert (carried["alert"], carried["state"], carried["severity"]) == (
        "HostCpuBusy",
        "firing",
        "warning",
    )
    assert orjson.loads(busy.to_json())["alerts"] == [carried]
    summary = publish_args(busy, 0.5)[6]
    summary = orjson.loads(summary) if isinstance(summary, str | bytes) else summary
    assert (summary["alerts_firing"], summary["alerts_worst"]) == (1.0, "warning")
    calm = run(sampler.sample_once())
    assert calm.to_dict()["alerts"] == []
    assert list(engine.unsaved)[-1].state == RESOLVED


@pytest.mark.db
def test_on_restart_an_open_alert_of_a_rule_gone_from_the_file_is_resolved(make_settings):
    """What the file no longer has ends (Alertmanager and the dashboard would keep it
    forever); the silence rule's alert about this host is the fleet's, and stays."""
    import asyncio

    from exporter.alerts import store
    from exporter.alerts.engine import AlertEngine
    from exporter.alerts.evaluate import Alert
    from exporter.storage.database import Database

    def open_alert(name: str) -> Alert:
        return Alert(name, "h", (), "warning", "s", FIRING, 1.0, 1.0, at(0), at(0))

    async def scenario() -> tuple[list[str], list[str]]:
        database = Database(make_settings())
        await database.start()
        try:
            await asyncio.wait_for(database.ready.wait(), 30)
            kept = [open_alert("HostCpuBusy"), open_alert("HostSilent")]
            await store.record(database.pool, [*kept, open_alert("GoneRule")])
            engine = AlertEngine(parse_rules(SILENCE, "s"), "h", database, [])
            await engine._restore()
            published = [(a.alert, a.state) for a in engine.unsaved]
            await store.record(database.pool, list(engine.unsaved))
            still = sorted(a.alert for a in await store.open_alerts(database.pool, "h"))
            assert [a.alert for a in engine.open()] == ["HostCpuBusy"]
            return published, still
        finally:
            await database.stop()

    published, still = run(scenario())
    assert published == [("GoneRule", RESOLVED)]
    assert still == ["HostCpuBusy", "HostSilent"]
