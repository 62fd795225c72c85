from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from exporter.collectors import COLLECTOR_NAMES, build_collectors
from exporter.collectors.base import CollectorRunner, Unavailable, rate, sum_rates
from exporter.config import load_settings
from exporter.sampler import Sampler


class StaticSample:
    def __init__(self, value: float) -> None:
        self.value = value

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def metrics(self) -> Iterator[object]:
        return iter(())


class Fine:
    def __init__(self, name: str = "fine") -> None:
        self.name = name
        self.calls = 0

    def collect(self) -> StaticSample:
        self.calls += 1
        return StaticSample(self.calls)


class Broken:
    name = "broken"

    def collect(self) -> StaticSample:
        raise RuntimeError("boom")


class Missing:
    name = "missing"

    def collect(self) -> StaticSample:
        raise Unavailable("no PMU here")


class Hanging:
    """A collector stuck in a call until the test releases it."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()

    def collect(self) -> StaticSample:
        self.release.wait(timeout=30)
        return StaticSample(-1)


@pytest.fixture
def hanging():
    collector = Hanging()
    yield collector
    collector.release.set()


def test_rate_is_none_without_previous_or_after_reset():
    assert rate(10, None, 1.0) is None
    assert rate(10, 5, 0.0) is None
    assert rate(5, 10, 1.0) is None
    assert rate(15, 5, 2.0) == 5.0


def test_sum_rates_unknown_propagates():
    assert sum_rates([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": None}], ["a", "b"]) == {
        "a": 4.0,
        "b": None,
    }


async def test_runner_reports_exception_as_unavailable():
    result = await CollectorRunner(Broken()).run(deadline=1.0)
    assert not result.ok
    assert result.to_dict() == {"available": False, "error": "RuntimeError: boom"}


async def test_runner_reports_no_data_with_reason():
    result = await CollectorRunner(Missing()).run(deadline=1.0)
    assert result.to_dict() == {"available": False, "error": "no PMU here"}


class Slowly(Fine):
    """A threaded collector that needs running every 5 s, failing when told to."""

    refresh_seconds = 5.0

    def __init__(self) -> None:
        super().__init__("slowly")
        self.fail = False

    def collect(self) -> StaticSample:
        if self.fail:
            self.calls += 1
            raise RuntimeError("gone")
        return super().collect()


async def test_a_collector_with_a_refresh_interval_runs_that_often_and_fails_at_once():
    now = [0.0]
    collector = Slowly()
    runner = CollectorRunner(collector, clock=lambda: now[0])
    values = []
    for second in range(11):  # 0 .. 10 s: runs at 0, 5 and 10
        now[0] = float(second)
        values.append((await runner.run(deadline=1.0)).to_dict()["value"])
    assert values == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
    assert collector.calls == 3
    collector.fail = True
    now[0] = 15.0
    assert not (await runner.run(deadline=1.0)).ok
    now[0] = 16.0  # a failure is not kept: the next tick runs it again
    assert not (await runner.run(deadline=1.0)).ok
    assert collector.calls == 5


async def test_runner_times_out_and_does_not_pile_up_threads(hanging):
    runner = CollectorRunner(hanging)
    first = await runner.run(deadline=0.05)
    assert first.error == "timed out after 0.05s"
    threads_before = threading.active_count()
    second = await runner.run(deadline=0.05)
    assert second.error is not None
    assert second.error.startswith("previous collection still running after")
    assert threading.active_count() == threads_before
    hanging.release.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        third = await runner.run(deadline=1.0)
        if third.ok:
            break
    assert third.to_dict() == {"available": True, "value": -1}


async def test_one_raises_one_hangs_the_snapshot_still_arrives_with_the_others(hanging):
    fine = Fine()
    sampler = Sampler([fine, Broken(), hanging], interval=1.0, deadline=0.2, host="h")
    started = time.monotonic()
    snapshot = await sampler.sample_once()
    elapsed = time.monotonic() - started
    assert elapsed < 5.0  # bounded by the deadline, not by the 30 s hang
    data = snapshot.to_dict()
    assert data["fine"] == {"available": True, "value": 1}
    assert data["broken"] == {"available": False, "error": "RuntimeError: boom"}
    assert data["hanging"] == {"available": False, "error": "timed out after 0.2s"}


async def test_snapshot_shape_is_final_from_day_one():
    settings = load_settings(hostname="testhost")
    sampler = Sampler(build_collectors(settings), interval=1.0, deadline=0.5, host="testhost")
    data = (await sampler.sample_once()).to_dict()
    assert list(data) == ["seq", "timestamp", "host", *COLLECTOR_NAMES]
    assert abs(data["seq"] - datetime.now(UTC).timestamp() * 1000) < 60_000
    assert data["host"] == "testhost"
    assert datetime.fromisoformat(data["timestamp"]).tzinfo == UTC
    for name in ("cpu", "memory", "network", "disk", "memory_bandwidth"):
        assert data[name]["available"] is True, data[name]
    assert data["perf_events"] == {
        "available": False,
        "error": "perf child not started",
    }


async def test_seq_counts_ticks_and_starts_from_the_start_time():
    sampler = Sampler([Fine()], interval=1.0, deadline=0.5, host="h")
    first = await sampler.sample_once()
    second = await sampler.sample_once()
    assert second.seq == first.seq + 1
    await asyncio.sleep(0.002)
    restarted = Sampler([Fine()], interval=1.0, deadline=0.5, host="h")
    assert (await restarted.sample_once()).seq > second.seq


async def test_subscription_drops_oldest_when_full():
    sampler = Sampler([Fine()], interval=1.0, deadline=0.5, host="h", first_seq=1)
    subscription = sampler.subscribe(maxsize=2)
    for _ in range(5):
        await sampler.sample_once()
    assert subscription.dropped == 3
    assert [(await subscription.get()).seq for _ in range(2)] == [4, 5]
    subscription.close()
    await sampler.sample_once()
    assert subscription.pending() == 0


class SlowOnce:
    """Takes 2.5 intervals on its third call, instantly otherwise."""

    name = "slow_once"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def collect(self) -> StaticSample:
        self.calls += 1
        if self.calls == 3:
            time.sleep(self.delay)
        return StaticSample(self.calls)


async def test_schedule_is_drift_free_and_skips_after_an_overrun():
    interval = 0.5
    sampler = Sampler([SlowOnce(2.5 * interval)], interval=interval, deadline=1.0, host="h")
    subscription = sampler.subscribe(maxsize=64)
    task = asyncio.create_task(sampler.run())
    snapshots = [await asyncio.wait_for(subscription.get(), 5) for _ in range(8)]
    task.cancel()
    start = snapshots[0].timestamp
    offsets = [(s.timestamp - start).total_seconds() / interval for s in snapshots]
    # Every tick starts on the grid start + N * interval (within 175 ms: noisy machines).
    assert all(abs(o - round(o)) < 0.35 for o in offsets), offsets
    slots = [round(o) for o in offsets]
    assert slots[:3] == [0, 1, 2]
    assert sampler.skipped_ticks >= 2
    assert slots[3] >= 5  # the overrun tick's successors moved to later slots, not shifted
    assert slots == sorted(set(slots))
