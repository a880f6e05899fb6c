"""What a caller can do (search, answer), audited and counted the same way on every transport:
the REST routes, the OpenAI-compatible routes and the MCP tools (HTTP and stdio) are thin
adapters over :class:`Operations`. Who is asking always arrives as an :class:`AuthContext`
built from credentials, never from arguments."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from citewell.agent.agent import Agent
from citewell.agent.models import Answer
from citewell.api.audit import AuditLog, AuditOutcome, AuditRecord, FilterSummary, query_hash
from citewell.api.auth import AuthContext
from citewell.api.errors import unavailable_reason
from citewell.api.metrics import AnswerMetrics, ApiMetrics
from citewell.core.errors import (
    AccessViolationError,
    InputRejectedError,
    StoreUnavailableError,
)
from citewell.core.models import SearchFilters, SearchMode, SearchRequest, SearchResult
from citewell.core.settings import Settings
from citewell.retrieval.access import enforce, scope_for
from citewell.retrieval.protocols import SearchService


class Operations:
    """Search and answer for an authenticated caller; every call writes one audit line (two
    when an answer's sources look like injected instructions) and updates the metrics."""

    def __init__(
        self,
        settings: Settings,
        search: SearchService,
        agent: Callable[[], Agent],
        audit: AuditLog,
        metrics: ApiMetrics,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.metrics = metrics
        self.answer_metrics = AnswerMetrics(metrics)
        self._search = search
        self._agent = agent  # built on first use: it needs the serving index's embedder

    def agent(self) -> Agent:
        return self._agent()

    def _record_request(
        self,
        auth: AuthContext,
        event: str,
        endpoint: str,
        text: str,
        started: float,
        **fields: Any,
    ) -> None:
        """One audit line for a request by ``auth``: who, where, the query's hash (the query
        itself only when audit_log_queries is on: AuditLog drops it otherwise) and how long it
        has taken; ``fields`` say what happened."""
        self.audit.record(
            AuditRecord(
                event=event,
                endpoint=endpoint,
                principal=auth.principal.name,
                caller=auth.caller,
                auth_method=auth.method,
                query_sha256=query_hash(text),
                query=text,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                **fields,
            )
        )

    def search(
        self,
        auth: AuthContext,
        *,
        query: str,
        endpoint: str,
        k: int = 10,
        mode: SearchMode | None = None,
        rerank: bool = True,
        filters: SearchFilters | None = None,
        prefer_recent: bool = False,
    ) -> tuple[SearchResult, float]:
        """The result and the seconds it took."""
        settings = self.settings
        principal = auth.principal
        filters = filters or SearchFilters()
        mode = mode or settings.default_mode
        started = time.perf_counter()

        def record(outcome: AuditOutcome, result: SearchResult | None, reason: str | None) -> None:
            self._record_request(
                auth,
                "search",
                endpoint,
                query,
                started,
                outcome=outcome,
                mode=result.mode if result is not None else mode,
                k=k,
                rerank_requested=rerank,
                reranked=result.reranked if result is not None else None,
                filters=FilterSummary.of(filters),
                chunk_ids=tuple(h.chunk.chunk_id for h in result.results) if result else (),
                index_version=result.index_version if result is not None else None,
                reason=reason,
            )

        if not query.strip():
            # As the agent refuses a blank question; checked here for every transport (an MCP
            # tool argument has no schema minimum).
            record("rejected", None, "query_empty")
            raise InputRejectedError("query is empty")
        if len(query) > settings.max_query_chars:
            record("rejected", None, "query_too_long")
            raise InputRejectedError(f"query longer than {settings.max_query_chars} characters")
        try:
            request = SearchRequest(
                query=query,
                k=k,
                mode=mode,
                rerank=rerank,
                filters=filters,
                prefer_recent=prefer_recent,
            )
            result = self._search.search(principal, request)
            # Defence in depth: nothing leaves the API that the caller's scope does not allow.
            scope = scope_for(principal, settings.scheme, settings.default_groups)
            hits = enforce(scope, result.results)
            if len(hits) != len(result.results):
                result = result.model_copy(update={"results": tuple(hits)})
        except StoreUnavailableError as exc:
            record("unavailable", None, unavailable_reason(exc))
            raise
        except Exception as exc:  # audited whatever failed; api.errors decides the response
            record("error", None, type(exc).__name__)
            raise
        took = time.perf_counter() - started
        self.metrics.results_per_query.labels(mode=result.mode.value).observe(len(result.results))
        self.metrics.search_latency.labels(
            mode=result.mode.value, reranked=str(result.reranked)
        ).observe(took)
        record("ok", result, None)
        return result, took

    def answer(
        self,
        auth: AuthContext,
        *,
        question: str,
        endpoint: str,
        filters: SearchFilters | None = None,
    ) -> Answer:
        settings = self.settings
        principal = auth.principal
        filters = filters or SearchFilters()
        started = time.perf_counter()
        agent: Agent | None = None

        def record(
            event: str,
            outcome: AuditOutcome,
            result: Answer | None,
            reason: str | None,
            chunk_ids: tuple[str, ...] | None = None,
        ) -> None:
            if chunk_ids is None:
                chunk_ids = tuple(s.chunk_id for s in result.sources) if result else ()
            self._record_request(
                auth,
                event,
                endpoint,
                question,
                started,
                outcome=outcome,
                mode=agent.config.mode if agent is not None else None,
                k=agent.config.top_k if agent is not None else None,
                filters=FilterSummary.of(filters),
                chunk_ids=chunk_ids,
                index_version=result.index_version if result else None,
                reason=reason,
            )

        if not question.strip():
            record("answer", "rejected", None, "query_empty")
            raise InputRejectedError("question is empty")
        if len(question) > settings.max_query_chars:
            record("answer", "rejected", None, "query_too_long")
            raise InputRejectedError(f"question longer than {settings.max_query_chars} characters")
        try:
            agent = self._agent()
            result = agent.answer(principal, question, filters)
        except StoreUnavailableError as exc:
            record("answer", "unavailable", None, unavailable_reason(exc))
            raise
        except Exception as exc:  # audited whatever failed (as search is); api.errors decides
            record("answer", "error", None, type(exc).__name__)
            raise
        # Defence in depth, as for search: every source and citation must be one the caller's
        # scope allows. An answer's text may quote a source, so a violation withholds it whole.
        scope = scope_for(principal, settings.scheme, settings.default_groups)
        outside = tuple(
            ref.chunk_id
            for ref in (*result.sources, *result.citations)
            if not scope.allows(ref.classification_rank, ref.groups)
        )
        if outside:
            record("answer", "error", None, "access_violation", chunk_ids=outside)
            raise AccessViolationError(
                f"an answer for {principal.name!r} referred to {len(outside)} chunk(s) outside "
                "their scope; withheld"
            )
        if result.flagged_chunks:
            # A separate line so security tooling can alert on it without parsing answers.
            record(
                "answer.injection_suspected",
                "ok",
                result,
                "instruction_like_text_in_sources",
                chunk_ids=result.flagged_chunks,
            )
        reason = "refused" if result.refused else None if result.generated else "sources_only"
        record("answer", "ok", result, reason)
        self.answer_metrics.observe(result)
        return result
