"""Dependencies as ``Annotated`` aliases, shared by every router (search, answer, health).

``CurrentPrincipal`` is the only way a route learns who is asking; it comes from credentials
alone (API key, bearer token, and the audited act-for token), never from the request body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from citewell.api.audit import AuditLog, AuditRecord
from citewell.api.auth import AuthContext, Authenticator
from citewell.api.metrics import ApiMetrics
from citewell.api.state import ServiceHolder
from citewell.core.errors import AuthenticationError, AuthorizationError
from citewell.core.models import Principal
from citewell.core.settings import Settings
from citewell.retrieval.protocols import SearchService

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


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_audit_log(request: Request) -> AuditLog:
    audit: AuditLog = request.app.state.audit
    return audit


def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def get_service_holder(request: Request) -> ServiceHolder:
    holder: ServiceHolder = request.app.state.holder
    return holder


def get_search_service(request: Request) -> SearchService:
    """The serving index; searching raises ``StoreUnavailableError`` while none is loaded."""
    return get_service_holder(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
AuditLogDep = Annotated[AuditLog, Depends(get_audit_log)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
ServiceHolderDep = Annotated[ServiceHolder, Depends(get_service_holder)]
SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]


def get_auth_context(
    request: Request,
    audit: AuditLogDep,
    api_key: Annotated[str | None, Depends(api_key_scheme)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    act_for: Annotated[str | None, Depends(act_for_scheme)],
) -> AuthContext:
    authenticator: Authenticator = request.app.state.authenticator
    endpoint = request.url.path
    context: AuthContext | None = None
    try:
        context = authenticator.authenticate(api_key, bearer.credentials if bearer else None)
        if act_for is not None:
            # On failure ``context`` still names the caller, for the audit line below.
            context = authenticator.act_for(context, act_for)
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
    except (AuthenticationError, AuthorizationError) as exc:
        audit.record(
            AuditRecord(
                event="act_for" if act_for is not None and context is not None else "auth",
                outcome="denied",
                principal=None,
                caller=context.principal.name if context is not None else None,
                auth_method=context.method if context is not None else None,
                endpoint=endpoint,
                reason=getattr(exc, "reason", type(exc).__name__),
            )
        )
        raise
    return context


AuthContextDep = Annotated[AuthContext, Depends(get_auth_context)]


def get_current_principal(context: AuthContextDep) -> Principal:
    return context.principal


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
