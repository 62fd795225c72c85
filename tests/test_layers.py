"""The package's layers (shared/ARCHITECTURE.md): each imports only from below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "exporter"
# What each layer must never import: the layers above it.
FORBIDDEN = {
    "collectors": ("sampler", "sinks", "storage", "fleet", "auth", "api", "runtime"),
    "storage": ("sampler", "sinks", "fleet", "auth", "api", "runtime"),
    "sinks": ("fleet", "auth", "api", "runtime"),
    "auth": ("sinks", "fleet", "api", "runtime"),
    "fleet": ("auth", "api", "runtime"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("exporter.")}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in sorted(_imports(path))
        if name.split(".")[1] in FORBIDDEN[layer]
    ]
    assert wrong == []
