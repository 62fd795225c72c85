"""GET /metrics: the Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from exporter.api.deps import RegistryDep, WebConfigDep
from exporter.api.webconfig import ScrapeRefused
from exporter.sinks.prometheus import CONTENT_TYPE, render

router = APIRouter(tags=["metrics"])


async def _require_scrape_credentials(request: Request, web: WebConfigDep) -> None:
    """Basic auth from PERFPULSE_WEB_CONFIG_FILE's basic_auth_users, when it has any."""
    client = request.client.host if request.client else ""
    try:
        ok = await web.check(request.headers.get("authorization"), client)
    except ScrapeRefused as exc:
        raise HTTPException(exc.status, str(exc), headers={"Retry-After": "5"}) from None
    if not ok:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "valid basic auth credentials required",
            headers={"WWW-Authenticate": 'Basic realm="perfpulse"'},
        )


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    dependencies=[Depends(_require_scrape_credentials)],
)
async def metrics(registry: RegistryDep) -> Response:
    return Response(render(registry), media_type=CONTENT_TYPE)
