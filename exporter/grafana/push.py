"""`perfpulse grafana push`: put the dashboards into a running Grafana (grafana-client)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.grafana.dashboards import FOLDER_UID, all_dashboards

FOLDER_TITLE = "perfpulse"


class PushError(Exception):
    """One line saying what went wrong and what to do."""


@dataclass(frozen=True, slots=True)
class Plan:
    url: str
    folder_uid: str
    folder_title: str
    dashboards: dict[str, dict[str, Any]]

    def describe(self) -> list[str]:
        lines = [f"would ensure folder {self.folder_title!r} (uid {self.folder_uid}) on {self.url}"]
        for name, dashboard in self.dashboards.items():
            lines.append(
                f"would push {name}: {dashboard['title']!r} (uid {dashboard['uid']}), "
                "overwriting any existing version"
            )
        return lines


def plan(url: str, folder: str | None) -> Plan:
    title = folder or FOLDER_TITLE
    uid = FOLDER_UID if folder is None else _slug(folder)
    return Plan(url.rstrip("/"), uid, title, all_dashboards())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower())[:40] or FOLDER_UID


def push(
    target: Plan,
    credential: str | tuple[str, str],
    *,
    say: Callable[[str], None] = print,
) -> None:
    """Create the folder if missing, then overwrite each dashboard in it."""
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(target.url, credential=credential, timeout=10)
    try:
        try:
            api.folder.get_folder(target.folder_uid)
        except GrafanaClientError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            api.folder.create_folder(target.folder_title, uid=target.folder_uid)
            say(f"created folder {target.folder_title!r} (uid {target.folder_uid})")
        for name, dashboard in target.dashboards.items():
            api.dashboard.update_dashboard(
                {"dashboard": dashboard, "folderUid": target.folder_uid, "overwrite": True}
            )
            say(f"pushed {name} -> {target.url}/d/{dashboard['uid']}")
    except GrafanaException as exc:
        raise PushError(_explain(target.url, exc)) from None
    except Exception as exc:  # the HTTP library's connection errors
        if type(exc).__module__.startswith(("niquests", "urllib3", "requests")):
            raise PushError(f"cannot reach Grafana at {target.url}: {_first_line(exc)}") from None
        raise


def _explain(url: str, exc: Exception) -> str:
    status = getattr(exc, "status_code", 0)
    if status == 401:
        return f"Grafana at {url} refused the credentials (401): check --token or --user"
    if status == 403:
        return (
            f"Grafana at {url} denied access (403): the token or user needs the Editor role "
            "(dashboards:write, folders:create)"
        )
    if status == 0:
        return f"cannot reach Grafana at {url}: {_first_line(exc)}"
    return f"Grafana at {url} answered {status}: {_first_line(exc)}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    errno = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    if errno:
        return errno[1].strip()
    lines = text.splitlines()
    return lines[0][:200] if lines else type(exc).__name__
