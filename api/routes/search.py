"""``POST /v1/search``: the best chunks the caller may see, with citations and score breakdowns."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from citewell.api.deps import (
    AuthContextDep,
    OperationsDep,
)
from citewell.api.schemas import SearchRequestBody, SearchResponseBody, error_responses

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["search"])

_ERRORS = error_responses(401, 403, 413, 503)


@router.post(
    "/search",
    response_model=SearchResponseBody,
    responses=_ERRORS,
    summary="Search the documents the caller may see",
)
def search(
    auth: AuthContextDep,
    body: SearchRequestBody,
    operations: OperationsDep,
) -> SearchResponseBody:
    """Hybrid (dense + BM25), dense-only or BM25-only search over the chunks the caller's
    credentials allow. Filters narrow that set and can never widen it. Results carry the chunk
    text, citation fields and a score breakdown."""
    # Sync handler: FastAPI runs it in the thread pool, so CPU-bound search does not block the
    # event loop.
    result, took = operations.search(
        auth,
        query=body.query,
        endpoint="/v1/search",
        k=body.k,
        mode=body.mode,
        rerank=body.rerank,
        filters=body.filters.to_filters() if body.filters is not None else None,
        prefer_recent=body.prefer_recent,
    )
    return SearchResponseBody.from_result(
        result, principal=auth.principal.name, took_ms=took * 1000 if auth.operator else None
    )
