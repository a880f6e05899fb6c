"""The one place that maps Citewell errors to HTTP responses.

Messages are fixed strings chosen here or by the auth layer: never a store path, a document
name, a chunk or a credential. Unexpected errors become a generic 500 and are logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from citewell.core.errors import (
    AuthenticationError,
    AuthorizationError,
    CitewellError,
    ConfigurationError,
    InputRejectedError,
    LLMError,
    ModelError,
    StoreUnavailableError,
    UnknownClassificationError,
)
from citewell.core.logging import log_event

logger = logging.getLogger(__name__)

STORE_UNAVAILABLE_MESSAGE = (
    "The search index is temporarily unavailable; no results were returned. Retry shortly."
)
RETRY_AFTER_S = "5"


def _body(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else type(exc).__name__


def _count_denial(request: Request, status: int, exc: Exception) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.access_denials.labels(status=str(status), reason=_reason(exc)).inc()


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The response for ``exc``; the most specific mapping wins."""
    if isinstance(exc, AuthenticationError):
        _count_denial(request, 401, exc)
        return _body(401, str(exc), {"WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'})
    if isinstance(exc, AuthorizationError):
        _count_denial(request, 403, exc)
        return _body(403, str(exc))
    if isinstance(exc, UnknownClassificationError):
        # A principal whose clearance no longer exists in the scheme may not search.
        _count_denial(request, 403, exc)
        return _body(403, "the caller's clearance is not a configured level")
    if isinstance(exc, StoreUnavailableError):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.store_unavailable.inc()
        log_event(logger, logging.WARNING, "api.store_unavailable", error=type(exc).__name__)
        return _body(503, STORE_UNAVAILABLE_MESSAGE, {"Retry-After": RETRY_AFTER_S})
    if isinstance(exc, InputRejectedError):
        return _body(422, str(exc))
    if isinstance(exc, LLMError):
        log_event(logger, logging.WARNING, "api.llm_unavailable", error=type(exc).__name__)
        return _body(502, "the language model backend failed; retry or search instead")
    if isinstance(exc, ModelError):
        log_event(logger, logging.ERROR, "api.model_unavailable", error=type(exc).__name__)
        return _body(503, "a model needed for this request is unavailable")
    if isinstance(exc, ConfigurationError):
        log_event(logger, logging.ERROR, "api.configuration_error", error=type(exc).__name__)
        return _body(500, "the server is misconfigured")
    logger.error("api.unhandled_error", exc_info=exc)
    return _body(500, "internal error")


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, exc)


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped. FastAPI's 422 echoes the offending input, and a lone
    surrogate (``"\\ud800"`` is valid JSON) cannot be encoded as UTF-8: the default
    response turned that client error into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return _AsciiJSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(CitewellError, _handle)
    app.add_exception_handler(Exception, _handle)
