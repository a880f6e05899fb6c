"""Prometheus metrics on a per-app registry (the global one would make a second app in the same
process, e.g. in tests, fail with duplicated time series)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from citewell.agent.models import Answer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RESULT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = self.counter(
            "citewell_http_requests",
            "HTTP requests by route template, method and status code.",
            ("route", "method", "status"),
        )
        self.latency = self.histogram(
            "citewell_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
        )
        self.results_per_query = self.histogram(
            "citewell_search_results",
            "Results returned per search, by mode.",
            ("mode",),
            buckets=RESULT_BUCKETS,
        )
        self.search_latency = self.histogram(
            "citewell_search_duration_seconds",
            "Time spent in the search service, by mode and whether results were reranked.",
            ("mode", "reranked"),
            buckets=LATENCY_BUCKETS,
        )
        self.access_denials = self.counter(
            "citewell_access_denials",
            "Requests refused: 401 (no or bad credentials) or 403 (not permitted), by reason.",
            ("status", "reason"),
        )
        self.store_unavailable = self.counter(
            "citewell_store_unavailable",
            "Requests answered 503 because a store could not be queried.",
        )
        self.mcp_tool_calls = self.counter(
            "citewell_mcp_tool_calls",
            "MCP tool calls by tool and outcome (ok, or the HTTP status a REST call would get).",
            ("tool", "outcome"),
        )
        self.chat_completions = self.counter(
            "citewell_chat_completions",
            "OpenAI-compatible chat completions by mode (stream or not) and outcome.",
            ("stream", "outcome"),
        )
        self.reloads = self.counter(
            "citewell_index_reloads", "Index versions switched to while serving."
        )
        self.ready = self.gauge(
            "citewell_index_ready", "1 when the stores are loaded and searches can be served."
        )

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AnswerMetrics:
    """Answer counters on the app's registry, so cost per answered question can be tracked:
    ``citewell_llm_tokens_total / citewell_answers_total{outcome="answered"}``."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.answers = metrics.counter(
            "citewell_answers",
            "Answers by outcome (answered, refused, sources_only) and backend.",
            ("outcome", "backend"),
        )
        self.tokens = metrics.counter(
            "citewell_llm_tokens",
            "LLM tokens used by answers, by kind (prompt, completion) and backend.",
            ("kind", "backend"),
        )
        self.removed_citations = metrics.counter(
            "citewell_answer_removed_citations",
            "Citation markers removed: to no given source, or (LLM answers) to a source that "
            "does not support the sentence.",
        )
        self.unsupported_sentences = metrics.counter(
            "citewell_answer_unsupported_sentences", "Answer sentences without a valid citation."
        )
        self.injection_flags = metrics.counter(
            "citewell_answer_injection_flags", "Retrieved chunks flagged as instruction-like."
        )
        self.latency = metrics.histogram(
            "citewell_answer_duration_seconds",
            "Time to answer, by backend.",
            ("backend",),
            buckets=LATENCY_BUCKETS,
        )

    def observe(self, answer: Answer) -> None:
        outcome = (
            "refused" if answer.refused else "answered" if answer.generated else "sources_only"
        )
        self.answers.labels(outcome=outcome, backend=answer.backend).inc()
        if answer.usage is not None:
            self.tokens.labels(kind="prompt", backend=answer.backend).inc(
                answer.usage.prompt_tokens
            )
            self.tokens.labels(kind="completion", backend=answer.backend).inc(
                answer.usage.completion_tokens
            )
        self.removed_citations.inc(answer.removed_citations)
        self.unsupported_sentences.inc(len(answer.unsupported_sentences))
        self.injection_flags.inc(len(answer.flagged_chunks))
        self.latency.labels(backend=answer.backend).observe(answer.timings.total_ms / 1000)
