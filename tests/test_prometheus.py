"""The shipped Prometheus configuration, rules and compose file, checked by the real tools;
the dashboards' queries run by a real Prometheus against a real perfpulse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.spec import load_panels, load_tables
from tests.servers import free_port, serve

ROOT = Path(__file__).parent.parent


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (Debian packages)"
    return path


def run(
    *argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("config", ["prometheus.yml", "fleet.yml"])
def test_promtool_check_config(config):
    result = run(tool("promtool"), "check", "config", f"prometheus/{config}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules_with_all_lints():
    result = run(tool("promtool"), "check", "rules", "--lint=all", "prometheus/rules/perfpulse.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_promtool_rule_unit_tests():
    result = run(
        tool("promtool"), "test", "rules", "tests/perfpulse_test.yml", cwd=ROOT / "prometheus"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_recording_rules_follow_level_metric_operations():
    groups = yaml.safe_load((ROOT / "prometheus/rules/perfpulse.yml").read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule:
                level, metric, operations = rule["record"].split(":")
                assert level == "instance" and metric.startswith("perfpulse_") and operations
            else:
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]


COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "example",
    "GRAFANA_DB_READER_PASSWORD": "example",
    "GF_ADMIN_PASSWORD": "example",
    "PERFPULSE_JWT_SECRET": "x" * 40,
}


def test_compose_file_is_valid_for_a_real_compose_parser():
    result = run(tool("docker-compose"), "-f", "compose.yaml", "config", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {
        "perfpulse",
        "postgres",
        "prometheus",
        "grafana",
        "victoriametrics",
    }
    assert config["services"]["victoriametrics"]["profiles"] == ["victoriametrics"]
    for name, service in config["services"].items():
        assert "healthcheck" in service, name
        if "image" in service and name != "perfpulse":
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name
    assert config["services"]["perfpulse"]["pid"] == "host"
    assert set(config["volumes"]) >= {"postgres-data", "prometheus-data", "grafana-data"}


def test_the_victoriametrics_profile_scrapes_with_prometheus_configuration():
    result = run(
        tool("docker-compose"),
        *("-f", "compose.yaml", "--profile", "victoriametrics", "config"),
        env=COMPOSE_ENV,
    )
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["victoriametrics"]
    assert "-promscrape.config=/etc/prometheus/prometheus.yml" in service["command"]
    mounts = [
        v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]
    ]
    assert any(m.split(":")[1] == "/etc/prometheus/prometheus.yml" for m in mounts), mounts
    assert "healthcheck" in service and not service["image"].endswith(":latest")
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/perfpulse.yml").read_text()
    )["datasources"]
    urls = {source["name"]: source["url"] for source in provisioned}
    assert urls["VictoriaMetrics"] == "http://victoriametrics:8428"


def test_compose_parser_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        (ROOT / "compose.yaml")
        .read_text()
        .replace("    pid: host\n", "    pid: host\n    cpus: lots\n")
    )
    result = run(tool("docker-compose"), "-f", str(broken), "config", "-q", env=COMPOSE_ENV)
    assert result.returncode != 0


def test_compose_refuses_to_start_without_secrets():
    result = run(
        tool("docker-compose"), "-f", "compose.yaml", "config", "-q", env={"POSTGRES_PASSWORD": ""}
    )
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD" in result.stderr or "set " in result.stderr


def _expand(expr: str, rate_interval: str) -> str:
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$instance", ".+")
        .replace("$job", "perfpulse")
    )


# Panel queries that cannot return data on these virtual machines: no hardware counters,
# no memory-controller PMU, no resctrl. test_hardware_queries_on_synthetic_series proves
# them on synthetic data instead.
NO_DATA_HERE = {
    ("Hardware counters", "{{instance}} IPC"),
    ("Hardware counters", "{{instance}} cache-miss ratio"),
    ("Hardware counters", "{{instance}} branch-miss ratio"),
    ("Hardware counters", "{{instance}} front-end stalls"),
    ("Hardware counters", "{{instance}} back-end stalls"),
    ("Memory bandwidth", "{{instance}} DRAM read"),
    ("Memory bandwidth", "{{instance}} DRAM write"),
    ("Memory bandwidth", "{{instance}} DRAM read+write (resctrl)"),
}


@contextmanager
def prometheus_running(tmp_path: Path, config: dict[str, Any]) -> Iterator[str]:
    """The real Prometheus on `config`; yields its API's base URL."""
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, (tmp_path / "prometheus.log").read_text()


def wait_until(
    api: str, query: str, done: Callable[[list[dict[str, Any]]], Any], timeout: float = 60
) -> list[dict[str, Any]]:
    """Poll an instant query until `done(result)` holds."""
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{api}/query", params={"query": query})
            # While its storage starts, Prometheus answers 503 in plain text.
            result = response.json()["data"]["result"] if response.status_code == 200 else []
            if done(result):
                return result
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{query} never satisfied the test: {result}")


@contextmanager
def busy_service() -> Iterator[None]:
    """A real cgroup with a CPU burner in it, so that the services-and-containers query
    has a group to show (this machine runs no service in a cgroup of its own)."""
    from tests.test_cgroups import burner, real_group, unified_root

    with real_group("perfpulse-dashboard-test.service", [unified_root()]) as (group,):
        process = burner()
        try:
            (group / "cgroup.procs").write_text(str(process.pid))
            yield
        finally:
            process.kill()
            process.wait()


@pytest.mark.e2e
def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path, server_env):
    env = {**server_env, "PERFPULSE_PROCESSES_SCAN_SECONDS": "1"}
    with busy_service(), serve(tmp_path, "--interval", "0.5", env=env) as server:
        config = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(ROOT / "prometheus/rules/perfpulse.yml")]
        job = config["scrape_configs"][0]
        job["scrape_interval"] = "1s"
        job["scrape_timeout"] = "1s"
        job["static_configs"] = [{"targets": [server.url.removeprefix("http://")]}]
        with prometheus_running(tmp_path, config) as api:
            wait_until(
                api,
                'count_over_time(up{job="perfpulse"}[1m])',
                lambda result: result and float(result[0]["value"][1]) >= 6,
            )
            results = dashboard_query_results(api)
    empty = {key for key, result in results.items() if not result}
    assert empty == EXPECTED_EMPTY


EXPECTED_EMPTY = NO_DATA_HERE | {("Fleet", "IPC"), ("Fleet", "DRAM bandwidth")}


def dashboard_queries() -> dict[tuple[str, str], str]:
    """(panel, legend) -> query, for every Prometheus query of the shipped dashboards."""
    queries = {
        (panel["title"], target["legend"]): target["expr"]
        for panel in [*load_panels(), *load_tables()]
        for target in panel.get("prometheus", [])
    }
    fleet = json.loads((ROOT / "grafana/dashboards/perfpulse-fleet.json").read_text())
    for target in fleet["panels"][0]["targets"]:
        queries[("Fleet", target["legendFormat"])] = target["expr"]
    return queries


def dashboard_query_results(api: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every dashboard query, run once as an instant query on a Prometheus-compatible API."""
    results = {}
    for key, expr in dashboard_queries().items():
        body = httpx.get(f"{api}/query", params={"query": _expand(expr, "5s")}).json()
        assert body["status"] == "success", (key, body)
        results[key] = body["data"]["result"]
    return results


def test_hardware_queries_on_synthetic_series(tmp_path):
    """The panels this machine cannot fill, evaluated by promtool on synthetic counters."""
    labels = 'job="perfpulse", instance="h:8000"'
    series = [
        (f"perfpulse_perf_cycles_total{{{labels}}}", "0+3000000000x20"),
        (f"perfpulse_perf_instructions_total{{{labels}}}", "0+4500000000x20"),
        (f"perfpulse_perf_cache_references_total{{{labels}}}", "0+600000000x20"),
        (f"perfpulse_perf_cache_misses_total{{{labels}}}", "0+30000000x20"),
        (f"perfpulse_perf_branch_instructions_total{{{labels}}}", "0+768000000x20"),
        (f"perfpulse_perf_branch_misses_total{{{labels}}}", "0+24000000x20"),
        (f"perfpulse_perf_stalled_cycles_frontend_total{{{labels}}}", "0+600000000x20"),
        (f"perfpulse_perf_stalled_cycles_backend_total{{{labels}}}", "0+750000000x20"),
        (f"perfpulse_memory_read_bytes_total{{{labels}}}", "0+6000000000x20"),
        (f"perfpulse_memory_write_bytes_total{{{labels}}}", "0+1200000000x20"),
        (f"perfpulse_memory_transfer_bytes_total{{{labels}}}", "0+9000000000x20"),
    ]
    expected = {
        "{{instance}} IPC": 1.5,
        "{{instance}} cache-miss ratio": 0.05,
        "{{instance}} branch-miss ratio": 0.03125,
        "{{instance}} front-end stalls": 0.2,
        "{{instance}} back-end stalls": 0.25,
        "{{instance}} DRAM read": 100e6,
        "{{instance}} DRAM write": 20e6,
        "{{instance}} DRAM read+write (resctrl)": 150e6,
    }
    tests = []
    for panel in load_panels():
        for target in panel["prometheus"]:
            if (panel["title"], target["legend"]) in NO_DATA_HERE:
                tests.append(
                    {
                        "expr": _expand(target["expr"], "5m"),
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": '{instance="h:8000"}', "value": expected[target["legend"]]}
                        ],
                    }
                )
    assert len(tests) == len(NO_DATA_HERE)
    spec = {
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": tests,
            }
        ]
    }
    path = tmp_path / "synthetic_test.yml"
    path.write_text(yaml.safe_dump(spec))
    result = run(tool("promtool"), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_file_sd_finds_the_agents_and_lets_one_go(tmp_path, server_env):
    """prometheus/fleet.yml as shipped, its targets file pointing at two real agents: both
    are scraped and named by the dashboards' instance variable; one removed from the file
    stops being a target, with no reload."""
    agents = [
        {
            **server_env,
            "PERFPULSE_HOSTNAME": name,
            "PERFPULSE_DASHBOARD": "false",
            "PERFPULSE_DATA_DIR": str(tmp_path / name),
        }
        for name in ("agent-a", "agent-b")
    ]
    with (
        serve(tmp_path, "--interval", "0.5", env=agents[0]) as a,
        serve(tmp_path, "--interval", "0.5", env=agents[1]) as b,
    ):
        addresses = [a.url.removeprefix("http://"), b.url.removeprefix("http://")]
        targets = tmp_path / "targets"
        targets.mkdir()
        listing = targets / "agents.yml"
        # The shipped example's first group, its hosts replaced by the two agents.
        example = yaml.safe_load((ROOT / "prometheus/targets/perfpulse-agents.yml").read_text())
        listing.write_text(yaml.safe_dump([{**example[0], "targets": addresses}]))
        config = yaml.safe_load((ROOT / "prometheus/fleet.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["rule_files"] = [str(ROOT / "prometheus/rules/perfpulse.yml")]
        job = config["scrape_configs"][0]
        job["scrape_timeout"] = "1s"
        job["file_sd_configs"][0]["files"] = [str(targets / "*.yml")]
        with prometheus_running(tmp_path, config) as api:
            up = wait_until(api, 'up{job="perfpulse"} == 1', lambda result: len(result) == 2)
            assert {r["metric"]["instance"] for r in up} == set(addresses)
            assert {r["metric"]["role"] for r in up} == {example[0]["labels"]["role"]}
            # What the Grafana dashboards' instance variable asks for.
            values = httpx.get(
                f"{api}/label/instance/values",
                params={"match[]": 'perfpulse_build_info{job=~"perfpulse"}'},
            ).json()["data"]
            assert sorted(values) == sorted(addresses)
            listing.write_text(yaml.safe_dump([{"targets": addresses[:1]}]))
            deadline = time.monotonic() + 30
            while True:
                active = httpx.get(f"{api}/targets", params={"state": "active"}).json()
                found = [t["labels"]["instance"] for t in active["data"]["activeTargets"]]
                if found == addresses[:1]:
                    break
                assert time.monotonic() < deadline, found
                time.sleep(0.5)
