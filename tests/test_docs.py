"""The manual: every setting documented with its default, and every link going somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.config import Settings

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _settings_table() -> dict[str, str]:
    """variable -> default, from docs/configuration.md's Settings table."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `PERFPULSE_"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_every_setting_is_documented_with_its_default():
    documented = _settings_table()
    assert set(documented) == {f"PERFPULSE_{name.upper()}" for name in Settings.model_fields}
    assert [name for name, default in documented.items() if not default] == []


@pytest.mark.parametrize("name", ["ws_max_streams_per_user", "history_timeout_seconds", "port"])
def test_a_documented_default_is_the_real_one(name):
    default = _settings_table()[f"PERFPULSE_{name.upper()}"]
    assert default.strip("`") == f"{Settings.model_fields[name].default:g}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for target in LINK.findall(page.read_text())
        if not re.match(r"^[a-z]+:", target)  # http:, https:, mailto:
    ]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page, target in _links():
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []
    assert len(_links()) >= 20  # the check looked at the manual's links
