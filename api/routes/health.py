"""Liveness, readiness and Prometheus metrics. Unauthenticated (probes and scrapers), so they
say nothing about documents."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from citewell.api.deps import MetricsDep, ServiceHolderDep
from citewell.api.schemas import HealthBody, ReadyBody

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthBody, summary="Liveness: the process is up")
def healthz() -> HealthBody:
    return HealthBody()


@router.get(
    "/readyz",
    response_model=ReadyBody,
    responses={503: {"model": ReadyBody, "description": "A search would not succeed now"}},
    summary="Readiness: a search of the configured index would succeed now",
)
def readyz(holder: ServiceHolderDep, metrics: MetricsDep) -> ReadyBody | JSONResponse:
    """Ready means the published version is open and verified, its files are as recorded, the
    stores answer and the query model loads: the same check as ``citewell index ready``."""
    readiness = holder.readiness()
    metrics.ready.set(1 if readiness.ready else 0)
    service = holder.service
    if not readiness.ready or service is None:
        # The reason is a fixed code; the detail (versions, files) goes to operators' logs only.
        body = ReadyBody(ready=False, reason=readiness.reason or "not_loaded")
        return JSONResponse(status_code=503, content=body.model_dump(mode="json"))
    status = service.status()
    return ReadyBody(
        ready=True,
        index=status.index,
        version=status.version,
        # The reranker's field name is not part of the protocol the API relies on.
        reranker=getattr(status, "reranker", None),
        loaded_at=status.loaded_at,
    )


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics_text(metrics: MetricsDep) -> Response:
    return Response(content=metrics.render(), media_type=metrics.content_type)
