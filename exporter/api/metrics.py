"""GET /metrics: the Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from exporter.api.deps import RegistryDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(registry: RegistryDep) -> Response:
    # Text format 0.0.4, as node_exporter serves: understood by every Prometheus release.
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
