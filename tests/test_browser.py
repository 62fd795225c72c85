"""The dashboard in a real headless Chromium (Debian's), driven by Playwright, against a
real `perfpulse serve`. Screenshots go to artifacts/ (not committed)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.aio import run
from tests.servers import free_port, serve
from tests.test_ws import add_user

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parent.parent
DIST = ROOT / "exporter" / "dashboard"
ARTIFACTS = ROOT / "artifacts"
PANELS = ("cpu", "memory", "network", "disk", "perf_events", "memory_bandwidth")
# As the machine's notes say: without these, Chromium keeps trying hosts this closed
# network refuses.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs Debian's chromium"
    assert (DIST / "index.html").is_file(), "the dashboard is not built: `make test` builds it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def env(server_env) -> dict[str, str]:
    run(add_user(server_env["PERFPULSE_DATABASE_URL"], "alice", "password1"))
    return {
        **server_env,
        "PERFPULSE_DASHBOARD_DIR": str(DIST),
        "PERFPULSE_BATCH_MAX_AGE_SECONDS": "0.5",
    }


def log_in(page: Page, url: str, password: str = "password1") -> None:
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def points(page: Page, panel: str) -> int:
    return int(page.get_attribute(f"[data-panel={panel}]", "data-points") or 0)


def wait_for_points(page: Page, minimum: int = 2, timeout: float = 15.0) -> None:
    """Every panel has drawn at least `minimum` points; says which did not otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        drawn = {panel: points(page, panel) for panel in PANELS}
        if all(count >= minimum for count in drawn.values()):
            return
        if time.monotonic() > deadline:
            shoot(page, "failed-wait.png")
            raise AssertionError(f"panels with fewer than {minimum} points: {drawn}")
        page.wait_for_timeout(200)


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_login_then_all_six_panels_draw_live_data_and_both_tables_follow(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log_in(page, server.url)
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        titles = page.locator("section.panel h2").all_inner_texts()
        assert titles == [
            "CPU",
            "Memory",
            "Network",
            "Disk",
            "Hardware counters",
            "Memory bandwidth",
            "Filesystems",
            "Processes",
            "Services and containers",
        ]
        wait_for_points(page)
        assert all(points(page, panel) >= 2 for panel in PANELS)
        # This machine has no hardware counters, and no DRAM bandwidth source: both say so
        # in words, and paging (the disk's traffic seen from memory) is one line, not a
        # second copy of the Disk chart.
        hardware = page.locator("[data-test=hardware-unavailable]")
        expect(hardware).to_contain_text("Hardware counters are not exposed on this machine")
        if " hypervisor" in Path("/proc/cpuinfo").read_text():
            expect(hardware).to_contain_text("(virtual machine)")
        expect(page.locator("[data-test=paging-only]")).to_contain_text(
            "DRAM bandwidth cannot be measured on this machine"
        )
        assert page.locator("section.panel .chart svg").count() == len(PANELS) - 1
        shoot(page, "dashboard.png")
        page.close()


def test_wrong_password_is_shown_inline(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page()
        log_in(page, server.url, password="not-the-password")
        expect(page.locator("[data-test=login-error]")).to_have_text(
            "incorrect username or password"
        )
        expect(page).to_have_url(re.compile(r"/login"))
        page.close()


def test_server_restart_reconnecting_then_connected_and_data_flows(browser, env, tmp_path):
    port = free_port()
    page = browser.new_page()
    with serve(tmp_path, "--interval", "0.5", env=env, port=port) as server:
        log_in(page, server.url)
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        wait_for_points(page)
        server.stop()
        expect(page.locator("[data-test=connection]")).to_have_text("Disconnected", timeout=10_000)
    before = points(page, "cpu")
    with serve(tmp_path, "--interval", "0.5", env=env, port=port):
        expect(page.locator("[data-test=connection]")).to_have_text("Connected", timeout=40_000)
        page.wait_for_function(
            f"() => Number(document.querySelector('[data-panel=cpu]').dataset.points) > {before + 2}",
            timeout=15_000,
        )
    page.close()


def test_a_bad_token_leads_to_the_login_page(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page()
        page.goto(server.url + "/login")
        page.evaluate("() => sessionStorage.setItem('perfpulse.token', 'not-a-token')")
        page.goto(server.url + "/")
        expect(page).to_have_url(re.compile(r"/login\?reason=invalid"), timeout=10_000)
        expect(page.locator("[data-test=login-error]")).to_have_text("invalid token")
        assert page.evaluate("() => sessionStorage.getItem('perfpulse.token')") is None
        page.close()


def test_history_page_draws_stored_data(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log_in(page, server.url)
        wait_for_points(page, minimum=6)  # three seconds of snapshots, flushed every 0.5 s
        page.click("text=History")
        expect(page).to_have_url(re.compile(r"/history$"))
        wait_for_points(page, minimum=1)
        page.select_option("select[name=range]", "6 h")
        wait_for_points(page, minimum=1)
        shoot(page, "history.png")
        page.close()


def lines(page: Page, panel: str) -> list[str]:
    """The lines a panel draws (its legend), from the panel's data-lines attribute."""
    text = page.get_attribute(f"[data-panel={panel}]", "data-lines") or ""
    return text.split("|") if text else []


def test_the_dashboard_opens_full_and_draws_what_this_machine_has(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "1", env=env) as server:
        started = time.monotonic()
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(server.url + "/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "password1")
        # The server has run 30 s: its resume buffer holds about 30 snapshots.
        page.wait_for_timeout(max(0.0, 30.0 - (time.monotonic() - started)) * 1000)
        before = httpx.get(server.url + "/healthz").json()["seq"]
        clicked = time.monotonic()
        page.click("button[type=submit]")
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        wait_for_points(page, minimum=20, timeout=30.0)
        opened_in = time.monotonic() - clicked
        ticks = httpx.get(server.url + "/healthz").json()["seq"] - before
        # Fewer ticks passed than there are points: the rest came from the server's kept
        # snapshots, whatever the machine's speed.
        assert ticks < 20, f"{ticks} ticks passed before the panels held 20 points"
        print(f"panels full {opened_in * 1000:.0f} ms after login ({ticks} ticks)")
        # No hardware counters here: the software event rates instead, and no DRAM lines.
        expect(page.locator("[data-test=hardware-unavailable]")).to_be_visible()
        assert lines(page, "perf_events") == [
            "context switches/s",
            "CPU migrations/s",
            "page faults/s",
        ]
        assert lines(page, "memory_bandwidth") == ["paging in", "paging out"]
        assert "stalled (PSI)" in lines(page, "cpu")
        expect(page.locator("[data-panel=cpu] .current")).to_contain_text("load 1m")
        expect(page.locator("[data-test=warming-up]")).to_have_count(0)
        # The breakdowns follow what the machine has: one strip cell per CPU, one row per
        # disk device and per interface.
        for panel in ("cpu", "disk", "network"):
            page.click(f"[data-details={panel}] button")
        expect(page.locator("[data-details=cpu] .core")).to_have_count(os.cpu_count() or 1)
        devices = page.locator("[data-details=disk] tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.name)"
        )
        interfaces = page.locator("[data-details=network] tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.name)"
        )
        diskstats = {line.split()[2] for line in Path("/proc/diskstats").read_text().splitlines()}
        net_dev = {
            line.split(":")[0].strip()
            for line in Path("/proc/net/dev").read_text().splitlines()[2:]
        }
        assert devices and set(devices) <= diskstats, devices
        assert interfaces and set(interfaces) <= net_dev, interfaces
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.set_viewport_size({"width": 1440, "height": 900})
            page.wait_for_timeout(300)
            shoot(page, f"dashboard-1440x900-{scheme}.png")
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)
            shoot(page, f"dashboard-390x844-{scheme}.png")
            # One column, nothing wider than the screen.
            lefts = page.eval_on_selector_all(
                "section.panel", "els => els.map(e => Math.round(e.getBoundingClientRect().left))"
            )
            assert len(set(lefts)) == 1, lefts
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.close()


def test_the_fleet_page_lists_three_hosts_and_opens_one_live_and_in_history(browser, env, tmp_path):
    """alpha serves the dashboard; bravo and charlie are agents on the same database."""
    agents = [
        {
            **env,
            "PERFPULSE_HOSTNAME": name,
            "PERFPULSE_DASHBOARD": "false",
            "PERFPULSE_DATA_DIR": str(tmp_path / name),
        }
        for name in ("bravo", "charlie")
    ]
    alpha = {**env, "PERFPULSE_HOSTNAME": "alpha", "PERFPULSE_DATA_DIR": str(tmp_path / "alpha")}
    with (
        serve(tmp_path, "--interval", "0.5", env=agents[0]),
        serve(tmp_path, "--interval", "0.5", env=agents[1]),
        serve(tmp_path, "--interval", "0.5", env=alpha) as server,
    ):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log_in(page, server.url)
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        page.click("nav >> text=Fleet")
        expect(page).to_have_url(re.compile(r"/fleet$"))
        rows = page.locator(".row.host")
        expect(rows).to_have_count(3)
        # Needs attention first (no host is stale or alerting: the busiest first); by
        # name once the Host column is chosen.
        expect(page.locator("[data-test=attention]")).to_have_attribute("aria-pressed", "true")
        page.click("[role=columnheader] >> text=Host")
        assert rows.evaluate_all("rows => rows.map(r => r.dataset.host)") == [
            "alpha",
            "bravo",
            "charlie",
        ]
        expect(page.locator("[data-host=bravo] .cell.figure").first).to_contain_text("%")
        # The busiest process and service columns: a name with its CPU, or a dash where
        # the host has none (this machine has no systemd: its groups are not services).
        expect(page.locator("[role=columnheader] >> text=Busiest service")).to_be_visible()
        for column in ("top_process", "top_group"):
            expect(page.locator(f"[data-host=bravo] [data-column={column}]")).to_have_text(
                re.compile("^(\u2013|\\S+|\\S.* \\d+ %)$")
            )
        page.fill("input[name=filter]", "rav")
        expect(rows).to_have_count(1)
        shoot(page, "fleet.png")
        page.click("[data-host=bravo]")
        expect(page).to_have_url(re.compile(r"/hosts/bravo$"))
        expect(page.locator(".toolbar .host")).to_have_text("bravo")
        expect(page.locator("select[name=host]")).to_have_value("bravo")
        wait_for_points(page, minimum=3)
        shoot(page, "host-bravo.png")
        page.click("nav >> text=History")
        expect(page).to_have_url(re.compile(r"/hosts/bravo/history$"))
        wait_for_points(page, minimum=1)
        page.select_option("select[name=host]", "charlie")
        expect(page).to_have_url(re.compile(r"/hosts/charlie/history$"))
        expect(page.locator(".toolbar .host")).to_have_text("charlie")
        wait_for_points(page, minimum=1)
        page.close()


def test_with_one_host_there_is_no_fleet_page_or_picker(browser, env, tmp_path):
    with serve(tmp_path, "--interval", "0.5", env=env) as server:
        page = browser.new_page()
        log_in(page, server.url)
        expect(page.locator("[data-test=connection]")).to_have_text("Connected")
        wait_for_points(page)
        links = page.locator("header.top > nav a").all_inner_texts()
        assert links == ["Live", "History", "Alerts", "Tokens"]  # a viewer: no Users
        assert page.locator("select[name=host]").count() == 0
        page.close()


def test_the_processes_panel_names_the_burner_and_history_its_minute(browser, env, tmp_path):
    """The burner is first in the Processes panel, sorting by memory changes the order,
    and the History page shows who was on top in a picked minute: by a click on the CPU
    chart, and by the minute in the address."""
    from tests.test_who_is_busy import BURNER, running

    env = {**env, "PERFPULSE_PROCESSES_SCAN_SECONDS": "2"}
    with running(BURNER), serve(tmp_path, "--interval", "1", env=env) as server:
        started = time.time()
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        log_in(page, server.url)
        first = page.locator("[data-table=processes] tbody tr").first
        expect(first).to_have_attribute("data-name", "ppburner", timeout=15_000)
        page.click("[data-table=processes] button[data-sort=memory]")
        expect(first).not_to_have_attribute("data-name", "ppburner")
        rss = page.locator("[data-table=processes] tbody tr td:nth-child(4)").all_inner_texts()
        assert len(rss) >= 2
        shoot(page, "processes-1440.png")
        # A minute the burner ran 15 s of at least, once its account is stored.
        minute = int(started // 60) * 60
        if minute + 60 - started < 15:
            minute += 60
        page.wait_for_timeout(max(0.0, minute + 64 - time.time()) * 1000)
        at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(minute))
        page.goto(server.url + "/history?at=" + at)
        picked = page.locator("[data-test=picked] [data-table=processes] tbody tr").first
        expect(picked).to_have_attribute("data-name", "ppburner", timeout=15_000)
        # A click on the CPU chart picks a minute (and puts it in the address).
        wait_for_points(page, minimum=1)
        page.click("[data-panel=cpu] .chart svg", position={"x": 300, "y": 100})
        expect(page).to_have_url(re.compile(r"at=\d{4}-"), timeout=5_000)
        expect(page.locator("[data-test=picked-title]")).to_contain_text("Who was on top")
        shoot(page, "history-picked-1440.png")
        page.close()
