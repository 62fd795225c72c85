"""Grafana dashboards: generated from the panel spec, linted like grafana/dashboard-linter,
every PromQL target parsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.grafana.dashboards import SCHEMA_VERSION, all_dashboards, render
from exporter.spec import load_panels
from tests.promql import problems

ROOT = Path(__file__).parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROMETHEUS_DASHBOARDS = ("perfpulse-host.json", "perfpulse-fleet.json")
TITLES = ["CPU", "Memory", "Network", "Disk", "Hardware counters", "Memory bandwidth"]


def committed(name: str) -> dict:
    return json.loads((DASHBOARDS / name).read_text())


@pytest.mark.parametrize("name", list(all_dashboards()))
def test_committed_json_is_what_the_spec_generates(name):
    expected = render(all_dashboards()[name])
    assert (DASHBOARDS / name).read_text() == expected, (
        f"grafana/dashboards/{name} is out of date: run `perfpulse grafana generate`"
    )


def test_spec_has_the_six_panels_in_order():
    assert [panel["title"] for panel in load_panels()] == TITLES


def test_host_and_history_dashboards_mirror_the_spec():
    spec = load_panels()
    for name in ("perfpulse-host.json", "perfpulse-history.json"):
        panels = committed(name)["panels"][: len(TITLES)]
        assert [p["title"] for p in panels] == TITLES
        assert [p["fieldConfig"]["defaults"]["unit"] for p in panels] == [s["unit"] for s in spec]
    # The host dashboard then has the top services and containers, from the spec too.
    extra = [p["title"] for p in committed("perfpulse-host.json")["panels"][len(TITLES) :]]
    assert extra == ["Top services and containers"]


@pytest.mark.parametrize("name", list(all_dashboards()))
def test_dashboard_level_rules(name):
    dashboard = committed(name)
    assert "id" not in dashboard
    assert dashboard["uid"].startswith("perfpulse-")
    assert dashboard["editable"] is False
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    for panel in dashboard["panels"]:
        assert panel["title"], panel
        assert panel["description"], panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{panel['title']}: no unit"
        assert "min" in defaults, f"{panel['title']}: no min"
        assert panel["datasource"]["uid"].startswith("${"), (
            f"{panel['title']}: datasource not a variable"
        )


@pytest.mark.parametrize("name", PROMETHEUS_DASHBOARDS)
def test_prometheus_dashboards_have_the_datasource_job_and_instance_variables(name):
    variables = {v["name"]: v for v in committed(name)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for label in ("job", "instance"):
        assert variables[label]["type"] == "query"
        assert variables[label]["refresh"] == 2  # on time range change
        assert variables[label]["datasource"]["uid"] == "${datasource}"
    assert '{job=~"$job"}' in variables["instance"]["definition"]


@pytest.mark.parametrize("name", PROMETHEUS_DASHBOARDS)
def test_every_target_parses_and_follows_the_linter_rules(name):
    targets = [
        (panel["title"], target["expr"])
        for panel in committed(name)["panels"]
        for target in panel["targets"]
    ]
    assert targets
    for title, expr in targets:
        assert problems(expr) == [], f"{name} / {title}: {expr}"


def test_the_linter_catches_what_it_should():
    assert (
        problems(
            'rate(perfpulse_cpu_seconds_total{job=~"$job", instance=~"$instance"}[$__rate_interval])'
        )
        == []
    )
    assert problems('perfpulse_cpu_seconds_total{job=~"$job", instance=~"$instance"}') == [
        "perfpulse_cpu_seconds_total: a counter outside rate/irate/increase"
    ]
    assert problems(
        'rate(perfpulse_cpu_seconds_total{job=~"$job", instance=~"$instance"}[5m])'
    ) == ["perfpulse_cpu_seconds_total: range is not $__rate_interval"]
    assert problems('perfpulse_load1{instance=~"$instance"}') == [
        'perfpulse_load1: no job=~"$job" matcher'
    ]


def test_history_dashboard_reads_the_minute_aggregates_by_field_position():
    from exporter.storage.fields import FIELDS

    panels = committed("perfpulse-history.json")["panels"]
    cpu = panels[0]["targets"][0]["rawSql"]
    position = [name for name, _ in FIELDS["cpu"]].index("usage_percent") + 1
    assert f"sums[{position}] / nullif(counts[{position}], 0) * 0.01" in cpu
    assert "$__timeFilter(bucket)" in cpu and "metric_type = 'cpu'" in cpu
