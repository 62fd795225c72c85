"""Grafana dashboards generated from the panel spec (exporter/spec/panels.json).

The spec is the one source of truth for the six panels, shared with the Vue dashboard;
`perfpulse grafana generate` writes grafana/dashboards/*.json from it, and a test fails
when the committed files differ from what the spec gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.spec import load_panels, load_tables

SCHEMA_VERSION = 39  # Grafana 11
PROMETHEUS_UID = "perfpulse-prometheus"
POSTGRES_UID = "perfpulse-postgres"
FOLDER_UID = "perfpulse"
DS = {"type": "prometheus", "uid": "${datasource}"}
PG = {"type": "grafana-postgresql-datasource", "uid": "${postgres}"}


def _targets(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A panel's Prometheus queries as Grafana targets, A, B, C, ..."""
    return [
        {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "expr": target["expr"],
            "legendFormat": target["legend"],
            "range": True,
        }
        for i, target in enumerate(queries)
    ]


def _grid(index: int, width: int = 12, height: int = 8) -> dict[str, int]:
    return {"h": height, "w": width, "x": (index % 2) * width, "y": (index // 2) * height}


def _defaults(panel: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel["unit"], "min": panel["min"]}
    if "max" in panel:
        defaults["max"] = panel["max"]
    defaults["custom"] = {"lineWidth": 1, "fillOpacity": 10, "spanNulls": False}
    return defaults


def _right_axis(matcher: dict[str, str], unit: str) -> dict[str, Any]:
    """A series in another unit than its panel's (a PSI stall share on a bytes panel):
    drawn against a second axis on the right."""
    properties: list[dict[str, Any]] = [
        {"id": "unit", "value": unit},
        {"id": "min", "value": 0},
        {"id": "custom.axisPlacement", "value": "right"},
    ]
    if unit == "percentunit":
        properties.append({"id": "max", "value": 1})
    return {"matcher": matcher, "properties": properties}


def _variables() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": PROMETHEUS_UID},
            "hide": 0,
            "refresh": 1,
        },
        _query_variable("job", "Job", "label_values(perfpulse_build_info, job)"),
        _query_variable(
            "instance", "Instance", 'label_values(perfpulse_build_info{job=~"$job"}, instance)'
        ),
    ]


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value label variable, refreshed on time range change ("All" matches any)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".+",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def _dashboard(
    uid: str, title: str, description: str, panels: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["perfpulse"],
        "editable": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "graphTooltip": 1,
        "templating": {"list": extra.pop("variables", _variables())},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
        **extra,
    }


def _stacked(matcher: dict[str, Any]) -> dict[str, Any]:
    """A target's series stacked as areas (CPU time by mode: shares of one whole)."""
    return {
        "matcher": matcher,
        "properties": [
            {"id": "custom.stacking", "value": {"mode": "normal", "group": matcher["options"]}},
            {"id": "custom.fillOpacity", "value": 35},
        ],
    }


def host_dashboard() -> dict[str, Any]:
    """The six live panels, on Prometheus."""
    panels = []
    for index, spec in enumerate(load_panels()):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": spec["title"],
                "description": spec["description"],
                "datasource": DS,
                "gridPos": _grid(index),
                "fieldConfig": {
                    "defaults": _defaults(spec),
                    "overrides": [
                        _right_axis({"id": "byFrameRefID", "options": chr(ord("A") + i)}, t["unit"])
                        for i, t in enumerate(spec["prometheus"])
                        if t.get("unit", spec["unit"]) != spec["unit"]
                    ]
                    + [
                        _stacked({"id": "byFrameRefID", "options": chr(ord("A") + i)})
                        for i, t in enumerate(spec["prometheus"])
                        if t.get("stack")
                    ],
                },
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
                "targets": _targets(spec["prometheus"]),
            }
        )
    for table in load_tables():
        if "prometheus" not in table:
            continue
        index = len(panels)
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": table["grafana_title"],
                "description": table["description"],
                "datasource": DS,
                "gridPos": _grid(index),
                "fieldConfig": {"defaults": _defaults(table), "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
                "targets": _targets(table["prometheus"]),
            }
        )
    return _dashboard(
        "perfpulse-host",
        "perfpulse / Host",
        "One machine at a time: the six panels of perfpulse's own dashboard, and its top "
        "services and containers.",
        panels,
    )


FLEET_COLUMNS = (
    (
        "CPU busy",
        "percentunit",
        '1 - sum by (instance) (rate(perfpulse_cpu_seconds_total{job=~"$job", instance=~"$instance", mode=~"idle|iowait"}[$__rate_interval])) / sum by (instance) (rate(perfpulse_cpu_seconds_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
    ),
    (
        "Memory used",
        "percentunit",
        '1 - perfpulse_memory_available_bytes{job=~"$job", instance=~"$instance"} / perfpulse_memory_total_bytes{job=~"$job", instance=~"$instance"}',
    ),
    (
        "IPC",
        "none",
        'sum by (instance) (rate(perfpulse_perf_instructions_total{job=~"$job", instance=~"$instance"}[$__rate_interval])) / sum by (instance) (rate(perfpulse_perf_cycles_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
    ),
    (
        "DRAM bandwidth",
        "Bps",
        'sum by (instance) (rate(perfpulse_memory_read_bytes_total{job=~"$job", instance=~"$instance"}[$__rate_interval]) + rate(perfpulse_memory_write_bytes_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
    ),
)


def fleet_dashboard() -> dict[str, Any]:
    """One row per instance: CPU, memory, IPC, DRAM bandwidth."""
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "expr": expr,
            "legendFormat": name,
            "format": "table",
            "instant": True,
            "range": False,
        }
        for i, (name, _, expr) in enumerate(FLEET_COLUMNS)
    ]
    overrides = [
        {
            "matcher": {"id": "byName", "options": f"Value #{chr(ord('A') + i)}"},
            "properties": [
                {"id": "displayName", "value": name},
                {"id": "unit", "value": unit},
            ],
        }
        for i, (name, unit, _) in enumerate(FLEET_COLUMNS)
    ]
    panel = {
        "id": 1,
        "type": "table",
        "title": "Fleet",
        "description": "Every instance scraped, one row each: CPU busy, memory used, IPC (where hardware counters exist) and DRAM bandwidth (where measurable).",
        "datasource": DS,
        "gridPos": {"h": 16, "w": 24, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": "none", "min": 0}, "overrides": overrides},
        "options": {"showHeader": True, "sortBy": [{"displayName": "CPU busy", "desc": True}]},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
        "targets": targets,
    }
    return _dashboard(
        "perfpulse-fleet",
        "perfpulse / Fleet",
        "All instances side by side.",
        [panel],
    )


def history_dashboard() -> dict[str, Any]:
    """The six panels again, from the minute aggregates perfpulse stores in PostgreSQL."""
    variables = [
        {
            "name": "postgres",
            "label": "Data source",
            "type": "datasource",
            "query": "grafana-postgresql-datasource",
            "current": {"text": "perfpulse PostgreSQL", "value": POSTGRES_UID},
            "hide": 0,
            "refresh": 1,
        },
        {
            "name": "host",
            "label": "Host",
            "type": "query",
            "datasource": PG,
            "query": "SELECT DISTINCT host FROM metrics_rollup_1m ORDER BY 1",
            "definition": "SELECT DISTINCT host FROM metrics_rollup_1m ORDER BY 1",
            "refresh": 2,
            "includeAll": False,
            "multi": False,
        },
    ]
    from exporter.storage.fields import FIELDS

    panels = []
    for index, spec in enumerate(load_panels()):
        history = spec["history"]
        positions = {name: i + 1 for i, (name, _) in enumerate(FIELDS[history["metric_type"]])}
        columns = ", ".join(
            f"sums[{positions[s['field']]}] / nullif(counts[{positions[s['field']]}], 0)"
            f'{" * " + str(s["scale"]) if "scale" in s else ""} AS "{s["label"]}"'
            for s in history["series"]
        )
        sql = (
            f'SELECT bucket AS "time", {columns} FROM metrics_rollup_1m '
            f"WHERE host = '$host' AND metric_type = '{history['metric_type']}' "
            "AND $__timeFilter(bucket) ORDER BY 1"
        )
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": spec["title"],
                "description": spec["description"] + " Per-minute averages from PostgreSQL.",
                "datasource": PG,
                "gridPos": _grid(index),
                "fieldConfig": {
                    "defaults": _defaults(spec),
                    "overrides": [
                        _right_axis({"id": "byName", "options": s["label"]}, s["unit"])
                        for s in history["series"]
                        if s.get("unit", spec["unit"]) != spec["unit"]
                    ],
                },
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}
                },
                "targets": [
                    {
                        "refId": "A",
                        "datasource": PG,
                        "format": "time_series",
                        "rawQuery": True,
                        "editorMode": "code",
                        "rawSql": sql,
                    }
                ],
            }
        )
    return _dashboard(
        "perfpulse-history",
        "perfpulse / History",
        "Stored history (minute averages) from perfpulse's PostgreSQL, for ranges Prometheus no longer keeps.",
        panels,
        variables=variables,
    )


def all_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard."""
    return {
        "perfpulse-host.json": host_dashboard(),
        "perfpulse-fleet.json": fleet_dashboard(),
        "perfpulse-history.json": history_dashboard(),
    }


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in all_dashboards().items():
        path = directory / name
        path.write_text(render(dashboard))
        written.append(path)
    return written
