# ruff: noqa: F811  (the browser and env fixtures come from tests/test_browser.py)
"""The dashboard's basics, in a real headless Chromium against a real `perfpulse serve`:
the summary row and filesystems from the snapshot, stale panels and the reconnect
countdown, Live filled from stored history after a restart, peaks kept in History, zoom,
axis labels that never overlap, an unknown host that keeps the session, the login's
countdown. Screenshots of each page at both sizes and schemes go to artifacts/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.servers import free_port, serve
from tests.test_browser import PANELS, browser, env, log_in, shoot, wait_for_points  # noqa: F401

pytestmark = pytest.mark.e2e

SIZES = {"1440": {"width": 1440, "height": 900}, "390": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")


def token_of(page: Page) -> str:
    return page.evaluate("() => sessionStorage.getItem('perfpulse.token')")


def latest(server_url: str, token: str) -> dict:
    answer = httpx.get(
        server_url + "/api/metrics/latest", headers={"Authorization": f"Bearer {token}"}
    )
    answer.raise_for_status()
    return answer.json()


def summary(page: Page) -> tuple[str, dict[str, str]]:
    """The summary row's snapshot time and each tile's raw value, read at once."""
    return page.evaluate(
        """() => {
          const row = document.querySelector('[data-test=summary]')
          const values = {}
          for (const tile of row.querySelectorAll('[data-summary]'))
            values[tile.dataset.summary] = tile.dataset.value
          return [row.dataset.timestamp, values]
        }"""
    )


def same_time(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def overlapping_labels(page: Page) -> list[str]:
    """Text boxes in any chart that overlap another or stick out of the chart."""
    return page.evaluate(
        """() => {
          const problems = []
          for (const panel of document.querySelectorAll('section.panel[data-panel]')) {
            const svg = panel.querySelector('.chart svg')
            if (!svg) continue
            const frame = svg.getBoundingClientRect()
            const boxes = [...svg.querySelectorAll('text')]
              .filter((t) => t.textContent.trim() && t.getAttribute('opacity') !== '0')
              .map((t) => ({ text: t.textContent, r: t.getBoundingClientRect() }))
              .filter((b) => b.r.width > 0)
            for (const b of boxes) {
              if (b.r.left < frame.left - 0.5 || b.r.right > frame.right + 0.5)
                problems.push(`${panel.dataset.panel}: "${b.text}" cut at the edge`)
            }
            for (let i = 0; i < boxes.length; i += 1)
              for (let j = i + 1; j < boxes.length; j += 1) {
                const a = boxes[i].r, b = boxes[j].r
                const overlap = a.left < b.right - 0.5 && b.left < a.right - 0.5 &&
                  a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5
                if (overlap)
                  problems.push(`${panel.dataset.panel}: "${boxes[i].text}" over "${boxes[j].text}"`)
              }
          }
          return problems
        }"""
    )


def test_summary_row_and_filesystems_equal_the_snapshot_at_both_sizes_and_schemes(
    browser, env, tmp_path
):
    with serve(tmp_path, "--interval", "2", env=env) as server:
        page = browser.new_page(viewport=SIZES["1440"])
        log_in(page, server.url)
        expect(page.locator("[data-test=summary]")).to_be_visible(timeout=15_000)
        token = token_of(page)
        # The tiles against the stored snapshot of the same time (ticks are 2 s apart),
        # past the first one (its CPU share needs a previous reading: none yet).
        deadline = time.monotonic() + 20
        while True:
            shown_at, values = summary(page)
            stored = latest(server.url, token)
            if same_time(stored["timestamp"], shown_at) and values["cpu"] != "":
                break
            assert time.monotonic() < deadline, (shown_at, stored["timestamp"])
            page.wait_for_timeout(300)
        assert float(values["cpu"]) == pytest.approx(stored["cpu"]["usage_percent"] / 100)
        memory = stored["memory"]
        assert float(values["memory"]) == pytest.approx(
            memory["used_bytes"] / memory["total_bytes"]
        )
        fullest = max(stored["disk"]["filesystems"], key=lambda f: f["percent"])
        assert float(values["filesystem"]) == pytest.approx(fullest["percent"] / 100)
        assert float(values["load"]) == pytest.approx(stored["cpu"]["load_average"]["1m"])
        assert abs(float(values["uptime"]) - (time.time() - _boot_time())) < 120
        identity = page.locator("[data-test=identity]")
        expect(identity).to_contain_text(f"{os.cpu_count()} cores")
        expect(identity).to_contain_text(os.uname().release)
        # The filesystem table lists / with statvfs's figures (as df computes them).
        st = os.statvfs("/")
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        percent = 100 * used / (used + st.f_bavail * st.f_frsize)
        root = page.locator("[data-table=filesystems] tr[data-mount='/']")
        expect(root).to_have_count(1)
        shown = float(root.locator("[data-percent]").get_attribute("data-percent") or "nan")
        assert shown == pytest.approx(percent, abs=0.5)
        # Loopback is marked, and said to be left out of the total.
        page.click("[data-details=network] button")
        expect(page.locator("[data-details=network] tr[data-name=lo]")).to_have_attribute(
            "data-kind", "loopback"
        )
        expect(page.locator("[data-details=network]")).to_contain_text("Loopback is not counted")
        # Memory is read against the host's total.
        expect(page.locator("[data-panel=memory] .current")).to_contain_text("of")
        for size, viewport in SIZES.items():
            for scheme in SCHEMES:
                page.emulate_media(color_scheme=scheme)
                page.set_viewport_size(viewport)
                page.wait_for_timeout(400)
                assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
                # The header is one row: its height is one line's, whatever the width.
                header = page.locator("header.top").bounding_box()
                assert header is not None and header["height"] < 48, header
                shoot(page, f"basics-live-{size}-{scheme}.png")
        page.close()


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


def test_no_axis_label_overlaps_or_is_cut_on_any_panel(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page(viewport=SIZES["1440"])
        log_in(page, server.url)
        wait_for_points(page, minimum=6)
        for name, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            page.wait_for_timeout(1200)  # a tick or two redraws at the new width
            assert overlapping_labels(page) == [], f"Live at {name} px"
        # The six plots line up: the same left edge and width where panels share a column.
        page.set_viewport_size(SIZES["1440"])
        page.wait_for_timeout(800)
        page.click("nav >> text=History")
        wait_for_points(page, minimum=1)
        for name, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            page.wait_for_timeout(800)
            assert overlapping_labels(page) == [], f"History at {name} px"
            for scheme in SCHEMES:
                page.emulate_media(color_scheme=scheme)
                page.wait_for_timeout(200)
                shoot(page, f"basics-history-{name}-{scheme}.png")
        page.close()


def test_stopped_data_turns_stale_counts_down_and_a_restart_opens_full(browser, env, tmp_path):
    port = free_port()
    page = browser.new_page(viewport=SIZES["1440"])
    with serve(tmp_path, "--interval", "0.5", env=env, port=port) as server:
        log_in(page, server.url)
        wait_for_points(page, minimum=10)
        expect(page.locator("[data-panel=cpu]")).to_have_attribute("data-stale", "false")
        server.stop()
        stopped = time.time()
        # Two intervals (1 s) without a snapshot: every panel dims and says since when.
        for panel in PANELS:
            expect(page.locator(f"[data-panel={panel}]")).to_have_attribute(
                "data-stale", "true", timeout=5_000
            )
        expect(page.locator("[data-panel=cpu] [data-test=stale]")).to_contain_text("No data since")
        expect(page.locator("[data-test=connection]")).to_have_text("Disconnected")
        expect(page.locator("[data-test=retry]")).to_be_visible()
        # The countdown runs: wait for an attempt with a few seconds to go, then see it fall.
        countdown = page.locator("[data-test=countdown]")
        page.wait_for_function(
            "() => { const c = document.querySelector('[data-test=countdown]');"
            " return c && Number(c.textContent.match(/in (\\d+) s/)[1]) >= 3 }",
            timeout=20_000,
        )
        first = int(re.search(r"in (\d+) s", countdown.inner_text()).group(1))
        page.wait_for_timeout(1600)
        second = int(re.search(r"in (\d+) s", countdown.inner_text()).group(1))
        assert second < first, (first, second)
        shoot(page, "basics-stale-1440.png")
        # Retry now tries at once: the attempts start over (the next wait is 1 s again).
        page.click("[data-test=retry]")
        expect(countdown).to_contain_text("retry 1 in", timeout=5_000)
    with serve(tmp_path, "--interval", "0.5", env=env, port=port) as server:
        # A fresh page after the restart: the server's buffer holds only seconds, the
        # stored history the minutes before.
        fresh = browser.new_page(viewport=SIZES["1440"])
        log_in(fresh, server.url)
        expect(fresh.locator("[data-test=connection]")).to_have_text("Connected")
        fresh.wait_for_function(
            f"() => Number(document.querySelector('[data-panel=cpu]').dataset.first) < {stopped * 1000}",
            timeout=15_000,
        )
        # The old page reconnects by itself (its backoff is short again after Retry now).
        expect(page.locator("[data-test=connection]")).to_have_text("Connected", timeout=20_000)
        expect(page.locator("[data-panel=cpu]")).to_have_attribute(
            "data-stale", "false", timeout=10_000
        )
        fresh.close()
    page.close()


def _peak(page: Page, panel: str, line: str) -> float:
    peaks = json.loads(page.get_attribute(f"[data-panel={panel}]", "data-peaks") or "{}")
    return float(peaks.get(line) or 0)


def test_a_spike_keeps_its_height_in_history_at_1h_and_24h(browser, env, tmp_path):
    """A burst of disk writes made here: its Live peak is History's peak at 1 h and 24 h
    (the bucket max is drawn beside the average), within 10 %."""
    with serve(tmp_path, "--interval", "1", env=env) as server:
        page = browser.new_page(viewport=SIZES["1440"])
        log_in(page, server.url)
        wait_for_points(page, minimum=4)
        target = tmp_path / "burst.bin"
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=256", "oflag=direct"],
            check=True,
            capture_output=True,
        )
        target.unlink()
        page.wait_for_timeout(4000)  # the burst's ticks, then a flush of the writer
        live = _peak(page, "disk", "written")
        assert live > 20 * 2**20, f"the burst did not show on Live: {live} B/s"
        page.click("nav >> text=History")
        for preset in ("1 h", "24 h"):
            page.select_option("select[name=range]", preset)
            page.wait_for_function(
                "() => JSON.parse(document.querySelector('[data-panel=disk]').dataset.peaks)"
                ".written > 0",
                timeout=15_000,
            )
            shown = _peak(page, "disk", "written")
            assert shown == pytest.approx(live, rel=0.10), (preset, shown, live)
            max_cell = page.locator("[data-panel=disk] [data-line=written] [data-stat=max]")
            assert float(max_cell.get_attribute("data-raw") or 0) == pytest.approx(live, rel=0.1)
        page.close()


def test_drag_zooms_history_and_back_returns(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page(viewport=SIZES["1440"])
        log_in(page, server.url)
        wait_for_points(page, minimum=4)
        page.click("nav >> text=History")
        page.select_option("select[name=range]", "15 min")
        shown = page.locator("[data-test=range]")
        page.wait_for_function(
            "() => { const r = document.querySelector('[data-test=range]');"
            " return r && (Date.parse(r.dataset.end) - Date.parse(r.dataset.start)) < 1000e3 }",
            timeout=10_000,
        )
        before = [shown.get_attribute("data-start"), shown.get_attribute("data-end")]
        span = _span(before)
        assert span == pytest.approx(900, abs=2)
        chart = page.locator("[data-panel=cpu] .chart svg").bounding_box()
        assert chart is not None
        y = chart["y"] + chart["height"] / 2
        page.mouse.move(chart["x"] + chart["width"] * 0.45, y)
        page.mouse.down()
        page.mouse.move(chart["x"] + chart["width"] * 0.6, y, steps=8)
        page.mouse.move(chart["x"] + chart["width"] * 0.75, y, steps=8)
        page.mouse.up()
        expect(page.locator("[data-test=unzoom]")).to_be_visible()
        page.wait_for_function(
            f"() => {{ const r = document.querySelector('[data-test=range]');"
            f" return (Date.parse(r.dataset.end) - Date.parse(r.dataset.start)) / 1000 < {span * 0.5} }}",
            timeout=10_000,
        )
        zoomed = _span([shown.get_attribute("data-start"), shown.get_attribute("data-end")])
        assert 0 < zoomed < span * 0.5
        page.click("[data-test=unzoom]")
        page.wait_for_function(
            "() => { const r = document.querySelector('[data-test=range]');"
            " return (Date.parse(r.dataset.end) - Date.parse(r.dataset.start)) / 1000 > 850 }",
            timeout=10_000,
        )
        expect(page.locator("[data-test=unzoom]")).to_have_count(0)
        page.close()


def _span(pair: list[str | None]) -> float:
    start, end = (datetime.fromisoformat(p or "") for p in pair)
    return (end - start).total_seconds()


def test_an_unknown_host_keeps_the_session_and_logout_clears_the_page(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page(viewport=SIZES["390"])
        log_in(page, server.url)
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        page.goto(server.url + "/hosts/nosuchhost")
        expect(page.locator("[data-test=no-such-host]")).to_be_visible(timeout=10_000)
        expect(page).to_have_url(re.compile(r"/hosts/nosuchhost$"))
        assert token_of(page), "the session was dropped"
        shoot(page, "basics-no-such-host-390.png")
        page.click("[data-test=no-such-host] >> text=Back to this instance's host")
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        # On a phone the links and Log out are in the menu.
        page.click("[data-test=menu]")
        shoot(page, "basics-menu-390.png")
        page.click("#menu >> text=Log out")
        expect(page).to_have_url(re.compile(r"/login"))
        page.go_back()
        expect(page).to_have_url(re.compile(r"/login"))
        expect(page.locator("[data-test=login-error]")).to_have_count(0)
        expect(page.locator("[data-test=summary]")).to_have_count(0)
        page.close()


def test_login_warns_before_the_lock_then_counts_the_wait_down(browser, env, tmp_path):
    env = {
        **env,
        "PERFPULSE_LOGIN_MAX_FAILURES": "3",
        "PERFPULSE_LOGIN_FAILURE_WINDOW_SECONDS": "60",
    }
    with serve(tmp_path, "--interval", "1", env=env) as server:
        page = browser.new_page(viewport=SIZES["390"])
        page.goto(server.url + "/login")
        left = []
        for _ in range(3):
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "wrong-password")
            page.click("button[type=submit]")
            expect(page.locator("[data-test=login-error]")).to_have_text(
                "incorrect username or password"
            )
            left.append(page.locator("[data-test=login-attempts]").inner_text())
        assert left[0].startswith("2 attempts left") and left[1].startswith("1 attempt left")
        assert "next failure locks" in left[2]
        page.click("button[type=submit]")
        seconds = page.locator("[data-test=login-wait-seconds]")
        expect(seconds).to_be_visible()
        expect(page.locator("button[type=submit]")).to_be_disabled()
        first = int(seconds.get_attribute("data-seconds") or 0)
        assert 0 < first <= 60
        page.wait_for_timeout(2200)
        second = int(seconds.get_attribute("data-seconds") or 0)
        assert second < first, (first, second)
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            shoot(page, f"basics-login-locked-390-{scheme}.png")
            page.set_viewport_size(SIZES["1440"])
            shoot(page, f"basics-login-locked-1440-{scheme}.png")
            page.set_viewport_size(SIZES["390"])
        page.close()
