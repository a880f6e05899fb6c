"""Dependencies as ``Annotated`` aliases, shared by every router (search, answer, health).

``CurrentPrincipal`` is the only way a route learns who is asking; it comes from credentials
alone (API key, bearer token, and the audited act-for token), never from the request body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from citewell.api.audit import AuditLog, AuditRecord
from citewell.api.auth import (
    ACT_FOR_HEADER,
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    AuthContext,
    Authenticator,
    MalformedCredentialsError,
    credential_headers,
)
from citewell.api.metrics import ApiMetrics
from citewell.api.operations import Operations
from citewell.api.state import ServiceHolder
from citewell.core.errors import AuthenticationError, AuthorizationError, ConfigurationError
from citewell.core.models import Principal
from citewell.core.settings import Settings
from citewell.retrieval.protocols import SearchService

T = TypeVar("T")

api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key issued for a principal in the principals file.",
)
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="Bearer",
    description="A JWT with claims sub, groups (list) and clearance (a level name).",
)
act_for_scheme = APIKeyHeader(
    name="X-Act-For",
    auto_error=False,
    scheme_name="ActFor",
    description="Trusted services only: the end user's JWT; the request runs as that user.",
)


def _app_state(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A dependency returning ``app.state.<name>``, which ``create_app`` sets."""

    def dependency(request: Request) -> T:
        value: T = getattr(request.app.state, name)
        return value

    dependency.__name__ = f"get_{name}"
    return dependency


get_settings = _app_state("settings", Settings)
get_audit_log = _app_state("audit", AuditLog)
get_metrics = _app_state("metrics", ApiMetrics)
get_operations = _app_state("operations", Operations)
get_service_holder = _app_state("holder", ServiceHolder)


def get_search_service(request: Request) -> SearchService:
    """The serving index; searching raises ``StoreUnavailableError`` while none is loaded."""
    return get_service_holder(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
AuditLogDep = Annotated[AuditLog, Depends(get_audit_log)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
ServiceHolderDep = Annotated[ServiceHolder, Depends(get_service_holder)]
SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]
OperationsDep = Annotated[Operations, Depends(get_operations)]


def authenticate_connection(
    connection: HTTPConnection, authenticator: Authenticator, audit: AuditLog
) -> AuthContext:
    """Who is asking, from the request's credential headers alone. Every refusal and every
    act-for is audited. The one path for every route and transport (REST, OpenAI, MCP)."""
    endpoint = connection.url.path
    context: AuthContext | None = None
    headers = None
    try:
        headers = credential_headers(connection.headers)
        context = authenticator.authenticate(headers.api_key, headers.bearer)
        if headers.act_for is not None:
            # On failure ``context`` still names the caller, for the audit line below.
            context = authenticator.act_for(context, headers.act_for)
            audit.record(
                AuditRecord(
                    event="act_for",
                    outcome="ok",
                    principal=context.principal.name,
                    caller=context.caller,
                    auth_method=context.method,
                    endpoint=endpoint,
                )
            )
    except (AuthenticationError, AuthorizationError, MalformedCredentialsError) as exc:
        acting = headers is not None and headers.act_for is not None
        if isinstance(exc, MalformedCredentialsError) and context is None:
            # The headers did not parse: name the caller when its key alone identifies it.
            context = _caller_if_identifiable(connection, authenticator)
            acting = bool(connection.headers.getlist(ACT_FOR_HEADER))
        audit.record(
            AuditRecord(
                event="act_for" if acting and context is not None else "auth",
                outcome="rejected" if isinstance(exc, MalformedCredentialsError) else "denied",
                principal=None,
                caller=context.principal.name if context is not None else None,
                auth_method=context.method if context is not None else None,
                endpoint=endpoint,
                reason=getattr(exc, "reason", type(exc).__name__),
            )
        )
        raise
    return context


def _caller_if_identifiable(
    connection: HTTPConnection, authenticator: Authenticator
) -> AuthContext | None:
    """For the audit line of a rejected request only: the principal of a lone, valid API key
    or bearer token."""
    keys = [k.strip() for k in connection.headers.getlist(API_KEY_HEADER)]
    authorization = [a.strip() for a in connection.headers.getlist(AUTHORIZATION_HEADER)]
    try:
        if len(keys) == 1 and keys[0] and not authorization:
            return authenticator.authenticate(keys[0], None)
        if len(authorization) == 1 and not keys:
            scheme, _, token = authorization[0].partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return authenticator.authenticate(None, token.strip())
    except (AuthenticationError, ConfigurationError):
        return None
    return None


def get_auth_context(
    request: Request,
    audit: AuditLogDep,
    # Declared for the OpenAPI security schemes ("Authorize" in /docs); the values are read from
    # the raw headers, which also sees blank and repeated headers.
    _api_key: Annotated[str | None, Depends(api_key_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    _act_for: Annotated[str | None, Depends(act_for_scheme)],
) -> AuthContext:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticate_connection(request, authenticator, audit)


AuthContextDep = Annotated[AuthContext, Depends(get_auth_context)]


def get_current_principal(context: AuthContextDep) -> Principal:
    return context.principal


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
