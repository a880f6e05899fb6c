"""``POST /v1/search``: the best chunks the caller may see, with citations and score breakdowns."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter

from citewell.api.audit import AuditOutcome, AuditRecord, FilterSummary, query_hash
from citewell.api.deps import AuditLogDep, AuthContextDep, MetricsDep, SearchServiceDep, SettingsDep
from citewell.api.schemas import ErrorBody, SearchRequestBody, SearchResponseBody
from citewell.core.errors import InputRejectedError, StoreUnavailableError
from citewell.core.models import SearchFilters, SearchRequest, SearchResult
from citewell.retrieval.access import enforce, scope_for

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["search"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No or invalid credentials"},
    403: {"model": ErrorBody, "description": "Credentials do not permit this request"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    503: {"model": ErrorBody, "description": "The index is unavailable; nothing was returned"},
}


@router.post(
    "/search",
    response_model=SearchResponseBody,
    responses=_ERRORS,
    summary="Search the documents the caller may see",
)
def search(
    auth: AuthContextDep,
    body: SearchRequestBody,
    service: SearchServiceDep,
    settings: SettingsDep,
    audit: AuditLogDep,
    metrics: MetricsDep,
) -> SearchResponseBody:
    """Hybrid (dense + BM25), dense-only or BM25-only search over the chunks the caller's
    credentials allow. Filters narrow that set and can never widen it. Results carry the chunk
    text, citation fields and a score breakdown."""
    # Sync handler: FastAPI runs it in the thread pool, so CPU-bound search does not block the
    # event loop.
    principal = auth.principal
    filters = body.filters.to_filters() if body.filters is not None else SearchFilters()
    mode = body.mode or settings.default_mode
    started = time.perf_counter()

    def record(outcome: AuditOutcome, result: SearchResult | None, reason: str | None) -> None:
        audit.record(
            AuditRecord(
                event="search",
                endpoint="/v1/search",
                outcome=outcome,
                principal=principal.name,
                caller=auth.caller,
                auth_method=auth.method,
                query_sha256=query_hash(body.query),
                query=body.query,  # AuditLog drops it unless audit_log_queries is on
                mode=result.mode if result is not None else mode,
                k=body.k,
                rerank_requested=body.rerank,
                reranked=result.reranked if result is not None else None,
                filters=FilterSummary.of(filters),
                chunk_ids=tuple(h.chunk.chunk_id for h in result.results) if result else (),
                index_version=result.index_version if result is not None else None,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                reason=reason,
            )
        )

    if len(body.query) > settings.max_query_chars:
        record("rejected", None, "query_too_long")
        raise InputRejectedError(f"query longer than {settings.max_query_chars} characters")
    request = SearchRequest(
        query=body.query,
        k=body.k,
        mode=mode,
        rerank=body.rerank,
        filters=filters,
        prefer_recent=body.prefer_recent,
    )
    try:
        result = service.search(principal, request)
        # Defence in depth: nothing leaves the API that the caller's scope does not allow.
        scope = scope_for(principal, settings.scheme, settings.default_groups)
        hits = enforce(scope, result.results)
        if len(hits) != len(result.results):
            result = result.model_copy(update={"results": tuple(hits)})
    except StoreUnavailableError:
        record("unavailable", None, "store_unavailable")
        raise
    except Exception as exc:  # audited whatever failed; api.errors decides the response
        record("error", None, type(exc).__name__)
        raise
    took = time.perf_counter() - started
    metrics.results_per_query.labels(mode=result.mode.value).observe(len(result.results))
    metrics.search_latency.labels(mode=result.mode.value, reranked=str(result.reranked)).observe(
        took
    )
    record("ok", result, None)
    return SearchResponseBody.from_result(result, principal=principal.name, took_ms=took * 1000)
