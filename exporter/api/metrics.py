"""GET /metrics: the Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from exporter.api.deps import RegistryDep, WebConfigDep
from exporter.api.webconfig import ScrapeRefused

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
    # Text format 0.0.4, as node_exporter serves: understood by every Prometheus release.
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
