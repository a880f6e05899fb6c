"""The one place that maps Citewell errors to HTTP responses.

Messages are fixed strings chosen here or by the auth layer: never a store path, a document
name, a chunk or a credential. Unexpected errors become a generic 500 and are logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from citewell.api.auth import MalformedCredentialsError
from citewell.core.errors import (
    AccessViolationError,
    AuditLogError,
    AuthenticationError,
    AuthorizationError,
    CitewellError,
    ConfigurationError,
    IndexIntegrityError,
    InputRejectedError,
    InvalidArgumentError,
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
INDEX_INTEGRITY_MESSAGE = (
    "The search index failed its integrity check; no results were returned. An operator must "
    "repair the index or roll it back."
)
AUDIT_UNAVAILABLE_MESSAGE = "the audit log cannot be written; retry later"
RETRY_AFTER_S = "5"
# Routes whose callers are OpenAI clients: errors also carry OpenAI's {"error": {...}} shape.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")


class NotFoundError(CitewellError):
    """A named thing the caller asked for (e.g. a model) does not exist for them (404)."""


def unavailable_reason(exc: StoreUnavailableError) -> str:
    """The audit reason for a 503: a damaged index version is not a busy store."""
    return "index_integrity_failed" if isinstance(exc, IndexIntegrityError) else "store_unavailable"


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else type(exc).__name__


def _count_denial(request: Request | None, status: int, exc: Exception) -> None:
    if request is None:
        return
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.access_denials.labels(status=str(status), reason=_reason(exc)).inc()


def public_error(exc: Exception, request: Request | None = None) -> tuple[int, str]:
    """The status and fixed message a caller gets for ``exc`` (the most specific mapping wins);
    the same on every transport (REST, OpenAI-compatible, MCP tool errors). Counts denials and
    store failures in the metrics of ``request``'s app when given."""
    if isinstance(exc, MalformedCredentialsError):
        _count_denial(request, 400, exc)
        return 400, str(exc)
    if isinstance(exc, AuthenticationError):
        _count_denial(request, 401, exc)
        return 401, str(exc)
    if isinstance(exc, AuthorizationError):
        _count_denial(request, 403, exc)
        return 403, str(exc)
    if isinstance(exc, UnknownClassificationError):
        # A principal whose clearance no longer exists in the scheme may not search.
        _count_denial(request, 403, exc)
        return 403, "the caller's clearance is not a configured level"
    if isinstance(exc, StoreUnavailableError):
        metrics = getattr(request.app.state, "metrics", None) if request is not None else None
        if metrics is not None:
            metrics.store_unavailable.inc()
        if isinstance(exc, IndexIntegrityError):
            # The version and what failed go to the log (operators), never to the caller.
            log_event(
                logger,
                logging.ERROR,
                "api.index_integrity_failed",
                version=exc.version,
                error=str(exc),
            )
            return 503, INDEX_INTEGRITY_MESSAGE
        log_event(logger, logging.WARNING, "api.store_unavailable", error=type(exc).__name__)
        return 503, STORE_UNAVAILABLE_MESSAGE
    if isinstance(exc, AuditLogError):
        # Fail closed: an answer that cannot be audited is not given.
        log_event(logger, logging.ERROR, "api.audit_unavailable", error=type(exc).__name__)
        return 503, AUDIT_UNAVAILABLE_MESSAGE
    if isinstance(exc, (InputRejectedError, InvalidArgumentError)):
        return 422, str(exc)
    if isinstance(exc, NotFoundError):
        return 404, str(exc)
    if isinstance(exc, LLMError):
        log_event(logger, logging.WARNING, "api.llm_unavailable", error=type(exc).__name__)
        return 502, "the language model backend failed; retry or search instead"
    if isinstance(exc, ModelError):
        log_event(logger, logging.ERROR, "api.model_unavailable", error=type(exc).__name__)
        return 503, "a model needed for this request is unavailable"
    if isinstance(exc, AccessViolationError):
        # Who and which chunks go to the log; the caller learns nothing about them.
        log_event(logger, logging.ERROR, "security.response_withheld", error=str(exc))
        return 500, "internal error"
    if isinstance(exc, ConfigurationError):
        log_event(logger, logging.ERROR, "api.configuration_error", error=type(exc).__name__)
        return 500, "the server is misconfigured"
    logger.error("api.unhandled_error", exc_info=exc)
    return 500, "internal error"


def error_content(
    path: str, status: int, detail: Any, message: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The body of an error response on ``path``: ``{"detail": ...}``, and on the routes OpenAI
    clients call also OpenAI's ``{"error": {...}}``, the only part those clients read
    (``message``, defaulting to ``detail``)."""
    content: dict[str, Any] = {"detail": detail}
    if path.startswith(OPENAI_PATHS):
        content["error"] = _openai_error(status, message if message is not None else detail, param)
    return content


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The response for ``exc`` (see :func:`public_error`)."""
    status, detail = public_error(exc, request)
    headers: dict[str, str] | None = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'}
    elif status == 503 and isinstance(exc, (StoreUnavailableError, AuditLogError)):
        headers = {"Retry-After": RETRY_AFTER_S}
    content = error_content(request.url.path, status, detail)
    return JSONResponse(status_code=status, content=content, headers=headers)


def _openai_error(status: int, message: str, param: str | None = None) -> dict[str, str | None]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
    }.get(status, "api_error")
    return {"message": message, "type": kind, "param": param, "code": None}


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, exc)


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped. FastAPI's 422 echoes the offending input, and a lone
    surrogate (``"\\ud800"`` is valid JSON) cannot be encoded as UTF-8: the default
    response turned that client error into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _validation_summary(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One line for a person (the first error, where and what; never the input) and the field
    it names, e.g. ``("messages: List should have at least 1 item ...", "messages")``."""
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    if param is not None:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message, param


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    message, param = _validation_summary(errors)
    content = error_content(request.url.path, 422, jsonable_encoder(errors), message, param)
    return _AsciiJSONResponse(status_code=422, content=content)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(CitewellError, _handle)
    app.add_exception_handler(Exception, _handle)
