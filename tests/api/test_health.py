"""Health, readiness, metrics, OpenAPI docs, and the background reload loop."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from citewell.api.main import create_app
from citewell.core.models import AccessLabel
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder
from tests.api.conftest import KEYS, FakeServingIndex, load_chunks

ALICE = {"X-API-Key": KEYS["alice"]}
PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_follows_the_service(client, fake_index):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["version"] == "v1"
    fake_index.unavailable = True
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["ready"] is False


def test_metrics_expose_requests_latency_results_and_denials(client):
    client.post("/v1/search", json={"query": "white matter", "k": 3}, headers=ALICE)
    client.post("/v1/search", json={"query": "white matter"})
    client.post("/v1/search", json={"query": "white matter"}, headers={"X-API-Key": "nope"})
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'citewell_http_requests_total{method="POST",route="/v1/search",status="200"} 1.0' in text
    assert 'citewell_http_requests_total{method="POST",route="/v1/search",status="401"} 2.0' in text
    assert 'route="unmatched"' in text and "/no/such/path" not in text
    assert 'citewell_http_request_duration_seconds_count{method="POST",route="/v1/search"}' in text
    assert 'citewell_search_results_count{mode="hybrid"} 1.0' in text
    assert 'citewell_search_results_sum{mode="hybrid"} 3.0' in text
    assert 'citewell_access_denials_total{reason="missing",status="401"} 1.0' in text
    assert 'citewell_access_denials_total{reason="api_key_invalid",status="401"} 1.0' in text


def test_metrics_method_label_is_bounded(client):
    """Any token is an HTTP method to h11 (uvicorn's HTTP implementation without httptools):
    the method label took whatever a caller without credentials sent, one new time series per
    request, without limit."""
    for i in range(3):
        assert client.request(f"PROBE{i}", "/healthz").status_code == 405
    client.request("PROPFIND", "/v1/search")
    client.get("/healthz")
    text = client.get("/metrics").text
    assert "PROBE" not in text and "PROPFIND" not in text
    requests = "citewell_http_requests_total"
    assert f'{requests}{{method="other",route="/healthz",status="405"}} 3.0' in text
    assert f'{requests}{{method="other",route="/v1/search",status="405"}} 1.0' in text
    assert f'{requests}{{method="GET",route="/healthz",status="200"}} 1.0' in text


def test_two_apps_in_one_process_have_separate_metrics(api_settings, fake_index):
    first = TestClient(create_app(api_settings, fake_index))
    second = TestClient(create_app(api_settings, fake_index))
    first.get("/healthz")
    assert 'route="/healthz"' in first.get("/metrics").text
    assert 'route="/healthz"' not in second.get("/metrics").text


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    search = spec["paths"]["/v1/search"]["post"]
    assert {"401", "403", "422", "503"} <= set(search["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["SearchRequestBody"]["examples"][0]["query"]
    assert schemas["SearchResponseBody"]["examples"][0]["results"][0]["scores"]
    assert {"ApiKey", "Bearer", "ActFor"} <= set(spec["components"]["securitySchemes"])
    assert {"/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_reload_loop_switches_version_without_restart(make_settings, principals_file, shared_data):
    settings = make_settings(principals_file=principals_file, reload_interval_s=0.05)
    index = FakeServingIndex(load_chunks(shared_data), settings)
    with TestClient(create_app(settings, index)) as client:
        first = client.post("/v1/search", json={"query": "white matter"}, headers=ALICE)
        assert first.json()["index_version"] == "v1"
        index.pending_version = "v2"
        deadline = time.monotonic() + 5
        while index.pending_version is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        second = client.post("/v1/search", json={"query": "white matter"}, headers=ALICE)
        assert second.json()["index_version"] == "v2"
        assert client.get("/readyz").json()["version"] == "v2"
        assert "citewell_index_reloads_total 1.0" in client.get("/metrics").text
    assert index.reload_calls >= 2
    assert not index.closed  # a service passed in belongs to the caller


def test_startup_warms_models_before_the_first_request(make_settings, principals_file, shared_data):
    settings = make_settings(principals_file=principals_file)
    index = FakeServingIndex(load_chunks(shared_data), settings)
    assert index.warmed_up is False
    with TestClient(create_app(settings, index)):
        assert index.warmed_up is True


def test_an_unreadable_current_pointer_does_not_stop_the_api(make_settings, principals_file):
    """CURRENT written by hand as UTF-16 (PowerShell's ``echo v000001 > CURRENT``) cannot be
    decoded: the warm-up at startup raised UnicodeDecodeError and the app never started, where
    the API must start, answer /readyz 503, and serve once the pointer is repaired."""
    settings = make_settings(principals_file=principals_file)
    text = "Parental leave is sixteen weeks."
    docs = [TextDocument(doc_id="leave", title="Leave", text=text, label=PUBLIC)]
    embedder = HashingEmbedder()
    Ingestor(settings, embedder=embedder).ingest_texts(docs, index=settings.index, source_name="kb")
    layout = IndexLayout(settings, settings.index)
    version = layout.current_version()
    layout.current_file.write_bytes(f"{version}\r\n".encode("utf-16"))
    service = ServingIndex(settings, embedder=embedder)
    try:
        with TestClient(create_app(settings, service), raise_server_exceptions=False) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            search = client.post("/v1/search", json={"query": "parental leave"}, headers=ALICE)
            assert search.status_code == 503, search.text  # was a bare 500
            assert ready.json()["reason"] == "integrity_failed"
            assert str(settings.data_dir) not in search.text and "Traceback" not in search.text
            layout.current_file.write_text(f"{version}\n", encoding="utf-8")
            assert client.get("/readyz").status_code == 200
            found = client.post("/v1/search", json={"query": "parental leave"}, headers=ALICE)
            assert found.status_code == 200
            assert [h["doc_id"] for h in found.json()["results"]] == ["leave"]
    finally:
        service.close()


def test_head_is_answered_wherever_get_is(api_settings, fake_index):
    """HTTP requires HEAD wherever GET is served; ``curl -I`` and HEAD health checks got 405
    from every GET route. A HEAD answers as the GET would (status, headers, auth), without a
    body; it never reaches a POST-only route."""
    import httpx

    from tests.api.live import live_server

    with live_server(create_app(api_settings, fake_index)) as base:
        for path in ("/healthz", "/readyz", "/metrics"):
            got, head = httpx.get(f"{base}{path}"), httpx.head(f"{base}{path}")
            assert (path, head.status_code) == (path, got.status_code)
            assert head.content == b""
            assert head.headers["content-type"] == got.headers["content-type"]
        assert httpx.head(f"{base}/v1/models", headers=ALICE).status_code == 200
        assert httpx.head(f"{base}/v1/models").status_code == 401
        assert httpx.head(f"{base}/v1/search", headers=ALICE).status_code == 405
        counted = 'citewell_http_requests_total{method="HEAD",route="/healthz",status="200"}'
        assert counted in httpx.get(f"{base}/metrics").text
