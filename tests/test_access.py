# ruff: noqa: F811  (the browser and env fixtures come from tests/test_browser.py)
"""Access for teams and programs, against real `perfpulse serve` processes and a real
PostgreSQL: roles (403 for a viewer on every admin route), host scopes over a fleet of
three instances (hidden hosts answer byte for byte as hosts that do not exist), API
tokens (stream, read, revoked mid-stream, expired, stored only hashed), single sign-on
through a trusted proxy (and ignored from anyone else), and the audit lines."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi.routing import APIRoute, APIWebSocketRoute
from websockets.exceptions import ConnectionClosed

from tests.aio import run
from tests.db import fetchval
from tests.servers import serve
from tests.test_browser import browser, env  # noqa: F401
from tests.test_fleet import close_of, host_snapshots, instance_env, wait_for_hosts
from tests.test_ws import add_user

pytestmark = pytest.mark.e2e

INTERVAL = 0.5


def login(base: str, username: str, password: str = "password1") -> dict[str, str]:
    response = httpx.post(
        base + "/api/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


# Every route that changes who may do what, or what exists: (method, path, JSON body).
ADMIN_ROUTES = [
    ("GET", "/api/users", None),
    ("POST", "/api/users", {"username": "eve", "password": "password9"}),
    ("PATCH", "/api/users/alice", {"role": "viewer"}),
    ("DELETE", "/api/users/alice", None),
    ("POST", "/api/tokens", {"name": "mine"}),
    ("DELETE", "/api/hosts/db-c", None),
]
# Every read a viewer makes.
READS = [
    "/api/auth/me",
    "/api/hosts",
    "/api/metrics/history?metric_type=cpu&start=now-5m",
    "/api/metrics/latest",
    "/api/alerts",
    "/api/alerts?host=*",
    "/api/alerts/history",
    "/api/alerts/rules",
    "/api/tokens",
    "/api/processes",
    "/metrics",
]


def test_every_route_states_the_role_it_needs(make_settings):
    """Each API route depends on the admin check, on a logged-in user, or is one of the
    few public ones (login, health, the dashboard's files): none is left to chance."""
    from exporter.api import deps
    from exporter.api.app import create_app

    public = {
        "/api/auth/login",
        "/api/auth/proxy",
        "/healthz",
        "/readyz",
        "/metrics",  # guarded by PERFPULSE_WEB_CONFIG_FILE's basic auth, as node_exporter
        "/",
        "/{path:path}",  # the dashboard's files (the page logs in by itself)
    }
    admin_paths = {(m, p) for m, p, _ in ADMIN_ROUTES}

    def needs(dependant, target) -> bool:  # type: ignore[no-untyped-def]
        return any(d.call is target or needs(d, target) for d in dependant.dependencies)

    def flat(routes):  # type: ignore[no-untyped-def]
        for route in routes:
            included = getattr(route, "original_router", None)  # an include_router()
            yield from flat(included.routes) if included is not None else [route]

    app = create_app(make_settings())
    checked = 0
    for route in flat(app.routes):
        if isinstance(route, APIWebSocketRoute):
            continue  # the stream checks its token itself (tests/test_ws.py)
        if not isinstance(route, APIRoute) or route.path in public:
            continue
        checked += 1
        admin = needs(route.dependant, deps._admin_user)
        user = needs(route.dependant, deps._current_user) or needs(
            route.dependant, deps._current_session
        )
        assert admin or user, f"{route.methods} {route.path} states no role"
        for method in route.methods:
            generic = re.sub(r"\{[^}]+\}", "x", route.path)
            listed = {(m, re.sub(r"/(alice|db-c)$", "/x", p)) for m, p in admin_paths}
            assert admin == ((method, generic) in listed), f"{method} {route.path}"
    assert checked >= 15


def test_viewers_read_admins_manage_and_scopes_hide_hosts_as_if_absent(tmp_path, server_env):
    url = server_env["PERFPULSE_DATABASE_URL"]
    for name, role, hosts in (
        ("alice", "admin", None),
        ("victor", "viewer", None),
        ("webby", "viewer", ["web-*"]),
        ("dora", "viewer", ["db-*"]),
    ):
        asyncio.run(add_user(url, name, role=role, hosts=hosts))
    envs = {
        name: instance_env(server_env, tmp_path, name, url) for name in ("web-a", "web-b", "db-c")
    }
    for agent in ("web-b", "db-c"):
        envs[agent]["PERFPULSE_DASHBOARD"] = "false"
    with ExitStack() as stack:
        served = {
            name: stack.enter_context(serve(tmp_path, "--interval", str(INTERVAL), env=env))
            for name, env in envs.items()
        }
        base = served["web-a"].url
        admin, viewer, webby, dora = (
            login(base, name) for name in ("alice", "victor", "webby", "dora")
        )
        wait_for_hosts(base, admin["Authorization"][7:], {"web-a", "web-b", "db-c"})
        deadline = time.monotonic() + 20  # the writer's first batch
        while httpx.get(base + "/api/metrics/latest", headers=admin).status_code != 200:
            assert time.monotonic() < deadline, "nothing stored in 20 s"
            time.sleep(0.3)

        # Roles: a viewer reads everything and manages nothing.
        for path in READS:
            response = httpx.get(base + path, headers=viewer)
            assert response.status_code == 200, (path, response.text)
        for method, path, body in ADMIN_ROUTES:
            response = httpx.request(method, base + path, headers=viewer, json=body)
            assert (response.status_code, response.json()) == (
                403,
                {"detail": "this needs the admin role"},
            ), (method, path)
        me = httpx.get(base + "/api/auth/me", headers=webby).json()
        assert (me["role"], me["hosts"], me["via"]) == ("viewer", ["web-*"], "token")

        # Scopes: webby sees web-*, in the list and in the fleet stream.
        listed = httpx.get(base + "/api/hosts", headers=webby).json()
        assert sorted(h["host"] for h in listed) == ["web-a", "web-b"]
        ws = base.replace("http", "ws") + "/api/ws/metrics"

        async def fleet_stream(token: str) -> set[str]:
            async with websockets.connect(f"{ws}?token={token}&host=*") as stream:
                seen = {h["host"] for h in json.loads(await stream.recv())["hosts"]}
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    try:
                        message = json.loads(await asyncio.wait_for(stream.recv(), 1))
                    except TimeoutError:
                        continue
                    seen.add(message["host"])
                return seen

        assert asyncio.run(fleet_stream(webby["Authorization"][7:])) == {"web-a", "web-b"}
        assert asyncio.run(fleet_stream(admin["Authorization"][7:])) == {"web-a", "web-b", "db-c"}
        snapshots = asyncio.run(host_snapshots(ws, webby["Authorization"][7:], "web-b", 1))
        assert snapshots[0]["host"] == "web-b"

        # A hidden host answers exactly as one that does not exist.
        for path in (
            "/api/metrics/history?metric_type=cpu&start=now-5m&host={}",
            "/api/metrics/latest?host={}",
            "/api/alerts?host={}",
            "/api/alerts/history?host={}",
        ):
            hidden = httpx.get(base + path.format("db-c"), headers=webby)
            absent = httpx.get(base + path.format("nosuch"), headers=webby)
            assert hidden.status_code == 404, path
            assert (hidden.status_code, hidden.content) == (absent.status_code, absent.content)
            assert httpx.get(base + path.format("db-c"), headers=viewer).status_code == 200
        token = webby["Authorization"][7:]
        assert (
            asyncio.run(close_of(f"{ws}?token={token}&host=db-c"))
            == asyncio.run(close_of(f"{ws}?token={token}&host=nosuch"))
            == (1008, "unknown host")
        )
        # This instance's own host outside dora's scope: sent to the fleet, not streamed.
        assert asyncio.run(close_of(f"{ws}?token={dora['Authorization'][7:]}")) == (
            1008,
            "this instance collects no host you may see: pass host=NAME or host=*",
        )
        assert httpx.get(base + "/api/processes", headers=dora).status_code == 404

        # Admins manage: a scope change closes the user's open stream at once.
        async def scope_change_closes() -> tuple[int, str]:
            async with websockets.connect(f"{ws}?token={token}&host=web-b") as stream:
                await asyncio.wait_for(stream.recv(), 5)
                changed = await asyncio.to_thread(
                    httpx.patch,
                    base + "/api/users/webby",
                    headers=admin,
                    json={"hosts": ["web-a"]},
                )
                assert changed.json()["hosts"] == ["web-a"]
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(stream.recv(), 5)
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code, closed.value.rcvd.reason

        assert asyncio.run(scope_change_closes()) == (1008, "access changed")
        assert [h["host"] for h in httpx.get(base + "/api/hosts", headers=webby).json()] == [
            "web-a"
        ]
        last_admin = httpx.patch(base + "/api/users/alice", headers=admin, json={"role": "viewer"})
        assert last_admin.status_code == 409
        made = httpx.post(
            base + "/api/users",
            headers=admin,
            json={"username": "olga", "password": "password2", "hosts": ["db-*"]},
        )
        assert (made.status_code, made.json()["role"]) == (201, "viewer")
        bad = httpx.post(
            base + "/api/users",
            headers=admin,
            json={"username": "x", "password": "password2", "role": "root"},
        )
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "role"]
        served.pop("db-c").stop()
        removed = httpx.delete(base + "/api/hosts/db-c", headers=admin)
        assert removed.status_code == 204
        assert "db-c" not in {
            h["host"] for h in httpx.get(base + "/api/hosts", headers=admin).json()
        }
        log = served["web-a"].log()
    assert "audit event=login outcome=success user=webby address=127.0.0.1" in log
    assert (
        "audit event=user_changed user=webby changed=hosts role=viewer hosts=web-a by=alice" in log
    )
    assert "audit event=user_created user=olga role=viewer hosts=db-* by=alice" in log
    assert "audit event=host_removed host=db-c by=alice" in log


def test_api_tokens_read_stream_are_revoked_mid_stream_expire_and_stay_hashed(tmp_path, server_env):
    url = server_env["PERFPULSE_DATABASE_URL"]
    asyncio.run(add_user(url, "victor"))
    env = {**server_env, "PERFPULSE_SESSION_RECHECK_SECONDS": "1", "PERFPULSE_HOSTNAME": "tok"}
    made = cli(env, "tokens", "create", "grafana-sync", "--user", "victor", "--expires", "90d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"pp_[A-Za-z0-9_-]{43}", token), made.stdout
    assert (
        "audit event=token_created token=grafana-sync user=victor expires=90d by=cli" in made.stderr
    )
    assert token not in made.stderr
    # Only the SHA-256 is stored: the token itself is nowhere in the table.
    digest = hashlib.sha256(token.encode()).digest()
    assert (
        asyncio.run(fetchval(url, "SELECT count(*) FROM api_tokens WHERE digest = $1", digest)) == 1
    )
    dump = asyncio.run(fetchval(url, "SELECT string_agg(t::text, '|') FROM api_tokens t"))
    assert token not in dump and token[3:] not in dump
    duplicate = cli(env, "tokens", "create", "grafana-sync", "--user", "victor")
    assert (duplicate.returncode, duplicate.stderr.strip().splitlines()[-1]) == (
        1,
        "perfpulse: a token named 'grafana-sync' exists",
    )
    nobody = cli(env, "tokens", "create", "x", "--user", "nobody")
    assert nobody.stderr.strip().splitlines()[-1] == "perfpulse: no user 'nobody'"

    bearer = {"Authorization": f"Bearer {token}"}
    with serve(tmp_path, "--interval", str(INTERVAL), env=env) as server:
        base = server.url
        ws = base.replace("http", "ws") + "/api/ws/metrics"
        me = httpx.get(base + "/api/auth/me", headers=bearer).json()
        assert (me["username"], me["via"]) == ("victor", "api_token")
        history = httpx.get(
            base + "/api/metrics/history",
            params={"metric_type": "cpu", "start": "now-5m"},
            headers=bearer,
        )
        assert history.status_code == 200, history.text
        assert (
            httpx.post(base + "/api/tokens", headers=bearer, json={"name": "more"}).status_code
            == 403
        )

        async def stream_then_revoke() -> tuple[int, str, float]:
            async with websockets.connect(ws, subprotocols=["bearer", token]) as stream:
                first = json.loads(await asyncio.wait_for(stream.recv(), 5))
                assert first["host"] == "tok"
                revoked = await asyncio.to_thread(cli, env, "tokens", "revoke", "grafana-sync")
                assert revoked.returncode == 0, revoked.stderr
                started = time.monotonic()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(stream.recv(), 10)
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - started

        code, reason, after = asyncio.run(stream_then_revoke())
        # Revoked from another process (the CLI): this instance's recheck closes it (1 s).
        assert (code, reason) == (1008, "token revoked or expired") and after < 5, after
        refused = httpx.get(base + "/api/auth/me", headers=bearer)
        assert (refused.status_code, refused.json()["detail"]) == (401, "invalid token")
        assert asyncio.run(close_of(f"{ws}?token={token}")) == (1008, "invalid token")

        # Expiry: a token whose time has passed is refused, as expired.
        second = cli(env, "tokens", "create", "short", "--user", "victor", "--expires", "1h")
        late = second.stdout.strip()
        assert (
            httpx.get(
                base + "/api/auth/me", headers={"Authorization": f"Bearer {late}"}
            ).status_code
            == 200
        )
        asyncio.run(
            fetchval(
                url,
                "UPDATE api_tokens SET expires_at = now() - interval '1 s' WHERE name = 'short'",
            )
        )
        expired = httpx.get(base + "/api/auth/me", headers={"Authorization": f"Bearer {late}"})
        assert (expired.status_code, expired.json()["detail"]) == (401, "token expired")
        # Logging out with an API token revokes it for good.
        bye = cli(env, "tokens", "create", "bye", "--user", "victor").stdout.strip()
        out = httpx.post(base + "/api/auth/logout", headers={"Authorization": f"Bearer {bye}"})
        assert out.status_code == 204
        after = httpx.get(base + "/api/auth/me", headers={"Authorization": f"Bearer {bye}"})
        assert after.status_code == 401
        listed = cli(env, "tokens", "list")
        header, *rows = listed.stdout.splitlines()
        assert header.split("\t") == ["NAME", "USER", "CREATED", "EXPIRES", "LAST USED"]
        assert [r.split("\t")[:2] for r in rows] == [["short", "victor"]]
        assert rows[0].split("\t")[4] != "never"  # it was used
        log = server.log()
    assert "audit event=token_first_used token=grafana-sync user=victor" in log
    assert "audit event=token_first_used token=short user=victor" in log
    assert token not in log and late not in log


def test_the_proxy_header_logs_in_from_a_trusted_proxy_and_is_ignored_from_others(
    tmp_path, server_env
):
    url = server_env["PERFPULSE_DATABASE_URL"]
    asyncio.run(add_user(url, "victor"))
    sso = {**server_env, "PERFPULSE_AUTH_PROXY_HEADER": "X-Forwarded-User"}
    named = {"X-Forwarded-User": "victor"}
    trusted = {
        **sso,
        "PERFPULSE_TRUSTED_PROXIES": "127.0.0.1",
        "PERFPULSE_AUTH_PROXY_AUTO_CREATE": "true",
    }
    with serve(tmp_path, "--interval", str(INTERVAL), env=trusted) as server:
        me = httpx.get(server.url + "/api/auth/me", headers=named)
        assert (me.status_code, me.json()["username"], me.json()["via"]) == (200, "victor", "proxy")
        # The dashboard's way in: a token for the named user, no password.
        issued = httpx.post(server.url + "/api/auth/proxy", headers=named)
        assert issued.status_code == 200
        bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        assert httpx.get(server.url + "/api/auth/me", headers=bearer).json()["username"] == "victor"
        ws = server.url.replace("http", "ws") + "/api/ws/metrics"

        async def first_with_header() -> dict:
            async with websockets.connect(ws, additional_headers=named) as stream:
                return json.loads(await asyncio.wait_for(stream.recv(), 5))

        assert "cpu" in asyncio.run(first_with_header())
        # Signing out is the proxy's: nothing is revoked here, the header still works.
        assert httpx.post(server.url + "/api/auth/logout", headers=named).status_code == 204
        assert httpx.get(server.url + "/api/auth/me", headers=named).status_code == 200
        # An unknown user is created as a viewer, with no password to log in with.
        new = httpx.get(server.url + "/api/auth/me", headers={"X-Forwarded-User": "sso-only"})
        assert (new.status_code, new.json()["role"]) == (200, "viewer")
        no_password = httpx.post(
            server.url + "/api/auth/login", json={"username": "sso-only", "password": "!sso"}
        )
        assert no_password.status_code == 401
        log = server.log()
    assert "audit event=login outcome=success user=victor address=127.0.0.1 via=proxy" in log
    assert "audit event=user_created user=sso-only role=viewer by=proxy" in log

    # The same header from an address that is not a trusted proxy: ignored, logged once,
    # even with an X-Forwarded-For naming the trusted proxy.
    elsewhere = {**sso, "PERFPULSE_TRUSTED_PROXIES": "10.9.9.9"}
    with serve(tmp_path, "--interval", str(INTERVAL), env=elsewhere) as server:
        for extra in ({}, {"X-Forwarded-For": "10.9.9.9"}):
            refused = httpx.get(server.url + "/api/auth/me", headers={**named, **extra})
            assert refused.status_code == 401
        assert httpx.post(server.url + "/api/auth/proxy", headers=named).status_code == 401
        ws = server.url.replace("http", "ws") + "/api/ws/metrics"

        async def refused_stream() -> tuple[int, str]:
            async with websockets.connect(ws, additional_headers=named) as stream:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(stream.recv(), 5)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

        assert asyncio.run(refused_stream()) == (1008, "missing token")
        log = server.log()
    assert log.count("ignored X-Forwarded-User from 127.0.0.1") == 1, log
    assert "via=proxy" not in log


def test_watch_follows_the_stream_with_a_token_file(tmp_path, server_env):
    url = server_env["PERFPULSE_DATABASE_URL"]
    asyncio.run(add_user(url, "victor"))
    made = cli(server_env, "tokens", "create", "watcher", "--user", "victor", "--expires", "never")
    token_file = tmp_path / "token"
    token_file.write_text(made.stdout)
    with serve(tmp_path, "--interval", str(INTERVAL), env=server_env) as server:
        watched = cli(
            server_env,
            "watch",
            "--url",
            server.url,
            "--token-file",
            str(token_file),
            "--count",
            "2",
        )
    assert watched.returncode == 0, watched.stderr
    assert len(watched.stdout.strip().splitlines()) == 2
    missing = cli(server_env, "watch", "--token-file", str(Path(tmp_path / "none")))
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_an_admin_makes_a_viewer_and_a_token_in_the_dashboard_and_the_viewer_has_no_users_page(
    browser, env, tmp_path
):
    from playwright.sync_api import expect

    from tests.test_browser import shoot

    run(add_user(env["PERFPULSE_DATABASE_URL"], "ada", role="admin"))

    def log_in_as(page, base: str, name: str, password: str) -> None:  # type: ignore[no-untyped-def]
        page.goto(base + "/login")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        expect(page.locator("[data-test=who]")).to_contain_text(name)

    with serve(tmp_path, "--interval", str(INTERVAL), env=env) as server:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        log_in_as(page, server.url, "ada", "password1")
        expect(page.locator("[data-test=who]")).to_have_text("ada (admin)")
        page.click("header.top > nav >> text=Users")
        form = page.locator("[data-test=new-user]")
        form.locator("input[name=username]").fill("vic")
        form.locator("input[name=password]").fill("password7")
        form.locator("input[name=hosts]").fill("*")
        form.locator("button[type=submit]").click()
        row = page.locator("[data-test=users] tr[data-user=vic]")
        expect(row).to_be_visible()
        expect(row.locator("select[name=role]")).to_have_value("viewer")
        shoot(page, "access-users-1440.png")

        page.click("header.top > nav >> text=Tokens")
        made = page.locator("[data-test=new-token-form]")
        made.locator("input[name=name]").fill("ci-bot")
        made.locator("select[name=user]").select_option("vic")
        made.locator("button[type=submit]").click()
        value = page.locator("[data-test=token-value]")
        expect(value).to_have_text(re.compile(r"^pp_[A-Za-z0-9_-]{43}$"))
        token = value.inner_text()
        expect(page.locator("[data-test=tokens] tr[data-token=ci-bot] td").first).to_have_text(
            "vic"
        )
        shoot(page, "access-tokens-1440.png")
        me = httpx.get(server.url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert (me.json()["username"], me.json()["role"], me.json()["via"]) == (
            "vic",
            "viewer",
            "api_token",
        )

        viewer = browser.new_page(viewport={"width": 1440, "height": 900})
        log_in_as(viewer, server.url, "vic", "password7")
        expect(viewer.locator("[data-test=who]")).to_have_text("vic (viewer)")
        expect(viewer.locator("header.top >> text=Users")).to_have_count(0)
        viewer.goto(server.url + "/users")
        expect(viewer).not_to_have_url(re.compile(r"/users$"))
        viewer.click("header.top > nav >> text=Tokens")
        expect(viewer.locator("[data-test=tokens] tr[data-token=ci-bot]")).to_be_visible()
        expect(viewer.locator("[data-test=new-token-form]")).to_have_count(0)
        page.close()
        viewer.close()
