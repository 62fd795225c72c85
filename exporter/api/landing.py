"""GET /: a small landing page pointing at what the exporter serves."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from exporter import __version__

router = APIRouter(tags=["landing"])

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>perfpulse</title></head>
<body>
<h1>perfpulse {__version__}</h1>
<p>Host-performance exporter.</p>
<ul>
<li><a href="metrics">/metrics</a> &mdash; Prometheus metrics</li>
<li><a href="healthz">/healthz</a> &mdash; liveness</li>
<li><a href="docs">/docs</a> &mdash; API reference</li>
</ul>
</body></html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def landing() -> str:
    return PAGE
