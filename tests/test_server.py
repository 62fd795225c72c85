"""perfpulse's uvicorn server loop: woken once a second, and at once by a shutdown."""

from __future__ import annotations

import asyncio
import signal
import time

import uvicorn

from exporter.server import Server


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("no request expected")


def _server() -> tuple[Server, list[float]]:
    config = uvicorn.Config(_app, log_config=None)
    config.load()
    server = Server(config)
    ticks: list[float] = []
    on_tick = server.on_tick

    async def counting(counter: int) -> bool:
        ticks.append(time.monotonic())
        return await on_tick(counter)

    server.on_tick = counting  # type: ignore[method-assign]
    return server, ticks


async def test_the_idle_loop_wakes_about_once_a_second_and_keeps_the_date_header_fresh() -> None:
    server, ticks = _server()
    loop = asyncio.create_task(server.main_loop())
    await asyncio.sleep(2.5)
    server.exit_soon()
    await asyncio.wait_for(loop, 1.0)
    # uvicorn's own loop polls ten times a second: 25 wake-ups in this window.
    assert 3 <= len(ticks) <= 5, ticks
    date = dict(server.server_state.default_headers)[b"date"]
    assert date.endswith(b"GMT")


async def test_a_shutdown_signal_ends_the_loop_without_waiting_for_the_next_second() -> None:
    server, ticks = _server()
    loop = asyncio.create_task(server.main_loop())
    await asyncio.sleep(0.05)
    asked = time.monotonic()
    server.handle_exit(signal.SIGTERM, None)
    await asyncio.wait_for(loop, 0.5)  # the poll alone would take up to a second
    assert server.should_exit
    assert ticks[-1] - asked < 0.5
