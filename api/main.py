"""The FastAPI application factory. Nothing is built at import time: ``citewell serve`` builds
Settings and calls :func:`create_app`; ``uvicorn --factory citewell.api.main:create_app_from_env``
does the same from the environment (for multi-worker deployments)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citewell.agent.factory import backend_from_settings
from citewell.api.asgi import HttpMiddleware
from citewell.api.audit import AuditLog
from citewell.api.auth import Authenticator
from citewell.api.errors import error_content, install_error_handlers
from citewell.api.mcp_server import MCP_PATH, McpTransport
from citewell.api.metrics import ApiMetrics
from citewell.api.operations import Operations
from citewell.api.routes import answer, health, openai, search
from citewell.api.routes.answer import agent_for
from citewell.api.state import ServiceHolder, ServingIndexLike
from citewell.core.logging import log_event
from citewell.core.settings import Settings, apply_process_environment

logger = logging.getLogger(__name__)

DESCRIPTION = """
Search the documents you are allowed to see, with citations.

**Authentication**: send `X-API-Key: <key>` (a principal from the principals file) or
`Authorization: Bearer <jwt>` (claims `sub`, `groups`, `clearance`). Requests without
credentials get 401. Nothing in a request body can add groups or clearance.

**Acting for a user**: a trusted service (`can_act_for: true`) may add `X-Act-For: <user jwt>`;
the request then runs as that user, never with more than the token grants. Audited.
"""


class BodySizeLimitMiddleware(HttpMiddleware):
    """Answers 413 to request bodies over ``max_bytes``. The body is read here (bounded) and
    replayed, because an error raised while FastAPI reads the body would surface as a 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away before sending the body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        content = error_content(str(scope.get("path", "")), 413, "request body too large")
        body = json.dumps(content, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class HeadAsGetMiddleware(HttpMiddleware):
    """Answers HEAD wherever GET is answered (HTTP requires it; FastAPI's GET routes gave 405 to
    ``curl -I`` and HEAD health checks): the request runs as a GET, and the response goes out
    with the GET's status and headers and no body."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        # A copy: the server keeps seeing HEAD, and so sends no body whatever the app writes.
        inner = {**scope, "method": "GET"}

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, headers_only)
        finally:
            if "route" in inner:  # for the metrics' route template
                scope["route"] = inner["route"]


# Methods counted under their own name; any other is "other". h11 accepts any token as a
# method, so the raw value would let callers create unbounded label values, as a raw path would.
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware(HttpMiddleware):
    """Counts requests and observes latency per route template (not raw path, which would let
    callers create unbounded label values) and per method (known methods only, likewise)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            method = method if method in METRIC_METHODS else "other"
            self.metrics.requests.labels(route=template, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=template, method=method).observe(
                time.perf_counter() - started
            )


async def _reload_loop(holder: ServiceHolder, metrics: ApiMetrics, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            if await asyncio.to_thread(holder.tick):
                metrics.reloads.inc()
            ready = await asyncio.to_thread(holder.ready)
            metrics.ready.set(1 if ready else 0)
        except Exception:  # keep refreshing whatever happens; the next tick may succeed
            logger.exception("api.reload_loop_error")


def create_app(settings: Settings, service: ServingIndexLike | None = None) -> FastAPI:
    """Build the API. With ``service`` None the index named by ``settings`` is opened at
    startup (and retried until it opens); a given service is used as is and not closed.
    Raises :class:`ConfigurationError` for a broken LLM setting, which would otherwise surface
    only as a 500 on every answer of a server that says it is ready."""
    backend_from_settings(settings)  # no network: checks the URL and model are usable
    holder = ServiceHolder.for_settings(settings, service)
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # In a thread: opening the stores does file I/O and may wait on a lock.
        await asyncio.to_thread(holder.tick)
        await asyncio.to_thread(holder.warm_up)
        ready = await asyncio.to_thread(holder.ready)
        metrics.ready.set(1 if ready else 0)
        task = asyncio.create_task(_reload_loop(holder, metrics, settings.reload_interval_s))
        log_event(logger, logging.INFO, "api.started", index=settings.index)
        try:
            async with mcp.running():
                yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(holder.close)

    # /docs with Swagger UI served from the fastapi-offline package, not a CDN: the docs work on
    # a machine without internet access and send nothing elsewhere. No ReDoc: its bundle
    # still fetches from cdn.redoc.ly.
    app = FastAPIOffline(
        title="Citewell",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        static_url="/docs/static",
        # Swagger UI's default validator badge would fetch from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.authenticator = Authenticator.from_settings(settings)
    app.state.audit = AuditLog(
        settings.audit_log or settings.data_dir / "audit.jsonl",
        log_queries=settings.audit_log_queries,
    )
    # Every transport (REST, OpenAI-compatible, MCP) searches and answers through this one
    # object, so audit lines and metrics are the same whichever the caller used.
    app.state.operations = Operations(
        settings, holder, lambda: agent_for(app.state), app.state.audit, metrics
    )
    mcp = McpTransport(app.state.operations, app.state.authenticator)
    install_error_handlers(app)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 413s too
    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(answer.router)
    app.include_router(openai.router)
    # MCP's streamable HTTP transport, in this app (not a second server): authentication,
    # audit and metrics are the ones above. A Route, not a Mount, so that "/mcp" itself
    # answers (no redirect) and the metrics see the route template. POST only: stateless MCP
    # has no session, so a GET stream could carry nothing and stayed open for ever (holding
    # shutdown), and DELETE has no session to end; the spec's answer to both is 405.
    app.router.routes.append(Route(MCP_PATH, endpoint=mcp.app, methods=["POST"]))
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory citewell.api.main:create_app_from_env``: settings from the
    environment."""
    settings = Settings()
    apply_process_environment(settings)
    return create_app(settings)
