"""The built Vue dashboard (exporter/dashboard, built by Vite from frontend/), served with a
single-page-app fallback."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

# Paths the API owns: never answered with the dashboard's index.html.
RESERVED = ("api/", "metrics", "healthz", "docs", "redoc", "openapi.json")


def default_directory() -> Path:
    """The dashboard inside the package: where `make run` builds it in a checkout, and
    what the wheel carries when installed."""
    return Path(__file__).resolve().parent.parent / "dashboard"


def mount_dashboard(app: FastAPI, directory: Path) -> bool:
    """Serve the dashboard at / when it has been built; False (landing page stays) if not."""
    index = directory / "index.html"
    if not index.is_file():
        return False
    root = directory.resolve()
    if (root / "assets").is_dir():
        # Hashed file names: cacheable for ever.
        app.mount("/assets", StaticFiles(directory=root / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False)
    async def spa(path: str) -> FileResponse:
        if path.startswith(RESERVED) or "\x00" in path:
            raise HTTPException(404)
        candidate = (root / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(root):
            return FileResponse(candidate)
        # Any other path is a route of the app (/history, /login): the app decides.
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    return True
