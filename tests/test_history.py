"""The history API: downsampling arithmetic on known data, and every 422."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest

from exporter.api.app import create_app
from exporter.api.history import HistoryOut
from exporter.api.timeparse import parse_time
from exporter.auth.tokens import issue_token
from exporter.storage import history as reads
from exporter.storage import ingest
from exporter.storage.fields import FIELDS
from exporter.storage.ingest import StoredSnapshot
from exporter.storage.migrate import load_migrations
from tests.conftest import TEST_SECRET
from tests.servers import serve_in_thread
from tests.test_writer import snapshot
from tests.test_ws import add_user

# Ten minutes of 1 s snapshots from 10:00:00: cpu usage_percent = i, memory percent = 2i.
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
COUNT = 600


@pytest.fixture
def api(make_settings, clean_database_url) -> Iterator[httpx.Client]:
    async def load() -> None:
        await add_user(clean_database_url)
        conn = await asyncpg.connect(clean_database_url)
        try:
            batch = [snapshot(i, host="h1") for i in range(COUNT)]
            for start in range(0, COUNT, 100):
                await ingest.write_batch(conn, batch[start : start + 100])
        finally:
            await conn.close()

    asyncio.run(load())
    settings = make_settings(hostname="h1")
    token = issue_token(TEST_SECRET.encode(), "alice", timedelta(minutes=5)).token
    headers = {"Authorization": f"Bearer {token}"}
    with (
        serve_in_thread(create_app(settings), settings) as url,
        httpx.Client(base_url=url, headers=headers) as client,
    ):
        yield client


def history(client: httpx.Client, **params: object) -> httpx.Response:
    return client.get("/api/metrics/history", params=params)


def test_raw_buckets_average_and_max_exactly(api):
    body = history(
        api, metric_type="cpu", start="2026-11-26T10:00:00Z", end="2026-11-26T10:01:00Z", points=6
    ).json()
    assert body["resolution"] == "raw"
    assert body["bucket_seconds"] == 10.0
    assert body["samples"] == [10] * 6
    # Bucket k holds i = 10k .. 10k+9: average 10k + 4.5, max 10k + 9.
    assert body["avg"]["usage_percent"] == [10 * k + 4.5 for k in range(6)]
    assert body["max"]["usage_percent"] == [10 * k + 9 for k in range(6)]
    assert body["timestamps"][1] == "2026-11-26T10:00:10Z"
    assert body["avg"]["iowait_percent"] == [None] * 6  # not in the data: no value, not 0


def test_long_ranges_come_from_minute_rollups_with_the_same_arithmetic(api):
    body = history(
        api,
        metric_type="memory",
        start="2026-11-26T10:00:00Z",
        end="2026-11-26T10:10:00Z",
        points=5,
    ).json()
    assert body["resolution"] == "1m"
    assert body["bucket_seconds"] == 120.0
    assert body["samples"] == [120] * 5
    # Bucket k holds i = 120k .. 120k+119, memory percent = 2i.
    assert body["avg"]["percent"] == [2 * (120 * k + 59.5) for k in range(5)]
    assert body["max"]["percent"] == [2 * (120 * k + 119) for k in range(5)]


def test_any_stored_number_by_its_path_with_min_and_last(api):
    body = history(
        api,
        metric_type="cpu",
        field=["usage_percent", "modes_percent.user"],
        start="2026-11-26T10:00:00Z",
        end="2026-11-26T10:01:00Z",
        points=6,
    ).json()
    assert body["fields"] == ["usage_percent", "modes_percent.user"]
    assert body["min"]["usage_percent"] == [10 * k for k in range(6)]
    assert body["last"]["usage_percent"] == [10 * k + 9 for k in range(6)]
    assert body["avg"]["modes_percent.user"] == [None] * 6  # not in these snapshots


def test_hours_from_the_same_arithmetic(api):
    body = history(
        api,
        metric_type="memory",
        start="2026-11-26T10:00:00Z",
        end="2026-11-26T11:00:00Z",
        points=1,
        resolution="1h",
    ).json()
    assert body["resolution"] == "1h"
    assert body["bucket_seconds"] == 3600.0
    assert body["samples"] == [COUNT]
    assert body["avg"]["percent"] == [2 * (COUNT - 1) / 2]
    assert body["min"]["percent"] == [0.0]
    assert body["last"]["percent"] == [2.0 * (COUNT - 1)]


def test_a_series_is_written_exactly_as_its_documented_model(api):
    """The series is written by orjson, not through the response model: the text must be
    what the model (the OpenAPI schema's HistoryOut) would write."""
    response = history(
        api, metric_type="cpu", start="2026-11-26T10:00:00+01:00", end="now", points=7
    )
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    modelled = HistoryOut.model_validate_json(response.text).model_dump(mode="json")
    assert body == modelled  # datetimes as the model writes them ("...Z"), nulls, floats
    assert body["start"] == "2026-11-26T09:00:00Z"
    schema = api.get("/openapi.json").json()
    ok = schema["paths"]["/api/metrics/history"]["get"]["responses"]["200"]
    assert "HistoryOut" in str(ok)


def test_points_bound_the_number_of_buckets(api):
    body = history(
        api, metric_type="cpu", start="2026-11-26T09:00:00Z", end="2026-11-26T11:00:00Z", points=7
    ).json()
    assert len(body["timestamps"]) <= 7
    assert sum(body["samples"]) == COUNT


def test_latest_returns_the_newest_stored_snapshot(api):
    body = api.get("/api/metrics/latest").json()
    assert body["timestamp"] == (T0 + timedelta(seconds=COUNT - 1)).isoformat()
    assert body["cpu"]["usage_percent"] == COUNT - 1
    assert api.get("/api/metrics/latest", params={"host": "elsewhere"}).status_code == 404


def test_history_needs_a_token(api):
    response = httpx.get(str(api.base_url) + "/api/metrics/history", params={"metric_type": "cpu"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"metric_type": "gpu"}, "metric_type", "must be one of cpu, memory"),
        ({"metric_type": "cpu", "start": "yesterday"}, "start", "neither an ISO-8601 time"),
        ({"metric_type": "cpu", "end": "2026-13-45"}, "end", "neither an ISO-8601 time"),
        ({"metric_type": "cpu", "start": "now", "end": "now-1h"}, "start", "must be before end"),
        ({"metric_type": "cpu", "start": "now-2000d"}, "end", "at most 1830 days"),
        ({"metric_type": "cpu", "field": "per_cpu[cpu=0"}, "field", "unclosed '['"),
        ({"metric_type": "cpu", "field": "a..b"}, "field", "empty name at 2"),
        ({"metric_type": "cpu", "field": [f"f{i}" for i in range(65)]}, "field", "at most 64"),
        ({"metric_type": "processes", "field": "top"}, "field", "per-minute accounts"),
        ({"metric_type": "cpu", "start": "now-7h", "resolution": "raw"}, "resolution", "6 hours"),
        ({"metric_type": "cpu", "resolution": "5m"}, "resolution", "should match pattern"),
        ({"metric_type": "cpu", "points": 5001}, "points", "less than or equal to 5000"),
        ({"metric_type": "cpu", "points": 0}, "points", "greater than or equal to 1"),
        ({}, "metric_type", "Field required"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(api, params, parameter, message):
    response = history(api, **params)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["query", parameter]
    assert message in detail["msg"]


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"start": "yesterday"}, "start", "neither an ISO-8601 time"),
        ({"start": "now", "end": "now-1h"}, "start", "must be before end"),
        ({"start": "now-91d"}, "end", "at most 90 days"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
    ],
)
def test_alert_history_names_a_bad_parameter_as_history_does(api, params, parameter, message):
    response = api.get("/api/alerts/history", params=params)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert (detail["loc"], message in detail["msg"]) == (["query", parameter], True)


def test_relative_and_iso_times():
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_time("now", now) == now
    assert parse_time("now-90s", now) == now - timedelta(seconds=90)
    assert parse_time("now-1.5h", now) == now - timedelta(minutes=90)
    assert parse_time("now-7d", now) == now - timedelta(days=7)
    assert parse_time("2026-11-26T10:00:00Z", now) == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert parse_time("2026-11-26T11:00:00+01:00", now) == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert parse_time("2026-11-26T10:00:00", now) == datetime(2026, 11, 26, 10, tzinfo=UTC)


def test_rollup_field_order_only_grows():
    # metrics_rollup_1m and the hot rows' `plotted` store fields by position: existing
    # positions must never move.
    frozen = {
        "cpu": [
            "usage_percent",
            "iowait_percent",
            "steal_percent",
            "load1",
            "context_switches_per_second",
        ],
        "memory": ["percent", "used_bytes", "available_bytes", "cached_bytes", "swap_percent"],
        "network": [
            "receive_bytes_per_second",
            "transmit_bytes_per_second",
            "receive_packets_per_second",
            "transmit_packets_per_second",
            "receive_errors_per_second",
            "transmit_errors_per_second",
        ],
        "disk": [
            "read_bytes_per_second",
            "written_bytes_per_second",
            "busy_percent",
            "reads_completed_per_second",
            "writes_completed_per_second",
        ],
        "perf_events": [
            "ipc",
            "cache_miss_ratio",
            "branch_miss_ratio",
            "cpu_migrations_per_second",  # was task-clock: migration 0003 cleared it
            "context_switches_per_second",
            "page_faults_per_second",
        ],
        "memory_bandwidth": [
            "read_bytes_per_second",
            "write_bytes_per_second",
            "pgpgin_bytes_per_second",
            "pgpgout_bytes_per_second",
            "page_faults_per_second",
        ],
    }
    for metric_type, names in frozen.items():
        assert [name for name, _ in FIELDS[metric_type]][: len(names)] == names
    assert not any("task_clock" in name for fields in FIELDS.values() for name, _ in fields)


async def test_migration_0003_clears_task_clock_from_the_rollups_and_keeps_the_rest(
    clean_database_url,
):
    (retire,) = [m for m in load_migrations() if m.version == 3]
    conn = await asyncpg.connect(clean_database_url)
    try:
        await conn.execute(
            """
            INSERT INTO metrics_rollup_1m (host, metric_type, bucket, samples, counts, sums, maxes)
            VALUES ('h', 'perf_events', $1, 60, '{60,0,0,60,60,60}',
                    '{0,NULL,NULL,120,90000,54000}', '{0,NULL,NULL,2,1600,950}'),
                   ('h', 'cpu', $1, 60, '{60,60,60,60,60}',
                    '{600,60,0,30,21000}', '{20,2,0,0.6,400}')
            """,
            T0,
        )
        await conn.execute(retire.sql)
        perf = await conn.fetchrow(
            "SELECT counts, sums, maxes FROM metrics_rollup_1m WHERE metric_type = 'perf_events'"
        )
        cpu = await conn.fetchrow(
            "SELECT counts, sums, maxes FROM metrics_rollup_1m WHERE metric_type = 'cpu'"
        )
    finally:
        await conn.close()
    assert perf["counts"] == [60, 0, 0, 0, 60, 60]
    assert perf["sums"] == [0, None, None, None, 90000, 54000]
    assert perf["maxes"] == [0, None, None, None, 1600, 950]
    assert cpu["sums"] == [600, 60, 0, 30, 21000]  # other types untouched


def _cpu(i: int) -> str:
    """A cpu section with some plotted fields present, one absent and one not a number."""
    return orjson.dumps(
        {
            "usage_percent": i * 0.5,
            "modes_percent": {"iowait": i % 7, "steal": None},
            "load_average": {"1m": "busy"},
            "context_switches_per_second": 1000 + i,
        }
    ).decode()


async def test_plotted_numbers_are_stored_beside_the_json_and_read_in_its_place(
    clean_database_url,
):
    """Every write path stores a section's plotted numbers in rollup order (NULL where a
    field is absent, none for a per-minute account); a series of plotted fields reads
    them and not the JSON, and a row without them (written before 0011, or before a field
    was appended) is read from its JSON, with the same result."""
    ts = [T0 + timedelta(seconds=i) for i in range(240)]

    def batch(host: str) -> list[StoredSnapshot]:
        return [
            StoredSnapshot(t, host, (("cpu", _cpu(i)), ("processes", '{"top": []}')))
            for i, t in enumerate(ts)
        ]

    conn = await asyncpg.connect(clean_database_url)
    try:
        await ingest.write_batch(conn, batch("unnest")[:50])  # a transaction, unnest
        await ingest.write_batch(conn, batch("copy"))  # >= 100: COPY through staging
        await ingest.write_batch(conn, batch("simple")[:50], simple=True)  # one simple query
        await ingest.write_batch(conn, batch("old"))
        # As before 0011 (no numbers), and as before a field was appended (fewer).
        await conn.execute("UPDATE metrics_snapshots SET plotted = NULL WHERE host = 'old'")
        await ingest.write_batch(conn, batch("shorter"))
        await conn.execute(
            "UPDATE metrics_snapshots SET plotted = plotted[1:2] WHERE host = 'shorter'"
        )
        stored = {
            (r["host"], r["metric_type"]): r["plotted"]
            for r in await conn.fetch(
                'SELECT host, metric_type, plotted FROM metrics_snapshots WHERE "timestamp" = $1',
                ts[3],
            )
        }
        expected = [1.5, 3.0, None, None, 1003.0, None]  # FIELDS["cpu"] order
        for host in ("unnest", "copy", "simple"):
            assert stored[(host, "cpu")] == expected
            assert stored[(host, "processes")] is None
        assert stored[("old", "cpu")] is None and stored[("shorter", "cpu")] == expected[:2]

        start, end = T0, T0 + timedelta(seconds=240)
        fields = {key: tuple(key.split(".")) for key in ("usage_percent", "load_average.1m")}
        fields["context_switches_per_second"] = ("context_switches_per_second",)
        fields["modes_percent.iowait"] = ("modes_percent", "iowait")

        async def read(host: str, resolution: str, width: float) -> reads.Series:
            return await reads.series(conn, host, "cpu", fields, start, end, resolution, width)

        for resolution, width in (("raw", 10.0), ("1m", 60.0), ("1h", 3600.0)):
            copied = await read("copy", resolution, width)
            assert copied.avg["usage_percent"][0] == (
                sum(i * 0.5 for i in range(int(min(width, 240)))) / min(width, 240)
            )
            assert copied.max["modes_percent.iowait"][0] == 6.0
            assert set(copied.avg["load_average.1m"]) == {None}  # not a number: absent
            for host in ("old", "shorter"):
                assert await read(host, resolution, width) == copied, (host, resolution)

        # Read from `plotted`, not from the JSON: numbers changed there show.
        await conn.execute(
            "UPDATE metrics_snapshots SET plotted[1] = -1 WHERE host = 'copy' AND metric_type = 'cpu'"
        )
        assert set((await read("copy", "raw", 10.0)).max["usage_percent"]) == {-1.0}
        # A field that is not plotted is read from the JSON.
        steal = await reads.series(
            conn,
            "copy",
            "cpu",
            {"modes_percent.steal": ("modes_percent", "steal")},
            start,
            end,
            "raw",
            10.0,
        )
        assert set(steal.avg["modes_percent.steal"]) == {None}
        other = await reads.series(
            conn,
            "copy",
            "cpu",
            {"usage_percent": ("usage_percent",), "x": ("x",)},
            start,
            end,
            "raw",
            10.0,
        )
        assert other.max["usage_percent"][0] == 4.5  # from the JSON: i = 0..9
    finally:
        await conn.close()
