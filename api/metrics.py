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

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RESULT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "citewell_http_requests",
            "HTTP requests by route template, method and status code.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "citewell_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.results_per_query = Histogram(
            "citewell_search_results",
            "Results returned per search, by mode.",
            ("mode",),
            buckets=RESULT_BUCKETS,
            registry=self.registry,
        )
        self.search_latency = Histogram(
            "citewell_search_duration_seconds",
            "Time spent in the search service, by mode and whether results were reranked.",
            ("mode", "reranked"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.access_denials = Counter(
            "citewell_access_denials",
            "Requests refused: 401 (no or bad credentials) or 403 (not permitted), by reason.",
            ("status", "reason"),
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "citewell_store_unavailable",
            "Requests answered 503 because a store could not be queried.",
            registry=self.registry,
        )
        self.reloads = Counter(
            "citewell_index_reloads",
            "Index versions switched to while serving.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "citewell_index_ready",
            "1 when the stores are loaded and searches can be served.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
