"""POST /v1/search: filters narrow, limits, 503 without leaks, audit lines, response shape."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from citewell.api.audit import AuditLog, AuditRecord
from citewell.api.errors import STORE_UNAVAILABLE_MESSAGE
from citewell.api.main import create_app
from tests.api.conftest import KEYS, FakeServingIndex, audit_lines, hs256_token, load_chunks

HR = {"X-API-Key": KEYS["hrbot"]}  # restricted clearance, group hr
ALICE = {"X-API-Key": KEYS["alice"]}
QUERY = "cerebral white matter development in newborn infants"


def test_response_carries_citation_fields_and_scores(client):
    response = client.post("/v1/search", json={"query": QUERY, "k": 2}, headers=ALICE)
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"]) == 2
    hit = body["results"][0]
    for field in ("text", "doc_id", "title", "source_uri", "page", "char_start", "char_end"):
        assert field in hit
    assert hit["classification"] in {"public", "internal"}
    assert set(hit["scores"]) == {
        "dense_rank",
        "dense_score",
        "bm25_rank",
        "bm25_score",
        "fused",
        "rerank",
    }
    assert hit["scores"]["bm25_rank"] == 1
    assert body["mode"] == "hybrid"
    assert body["reranked"] is False
    assert body["rerank_note"] == "no reranker model configured"
    assert body["index_version"] == "v1"


def test_request_options_reach_the_service(client, fake_index):
    body = {"query": QUERY, "k": 3, "mode": "bm25", "rerank": False}
    response = client.post("/v1/search", json=body, headers=ALICE)
    assert response.status_code == 200
    assert response.json()["rerank_note"] is None
    _, request = fake_index.seen[-1]
    assert (request.k, request.mode.value, request.rerank) == (3, "bm25", False)


def test_filters_narrow_and_never_widen(client, fake_index):
    everything = client.post("/v1/search", json={"query": QUERY}, headers=HR).json()["results"]
    assert {h["classification"] for h in everything} == {"public", "confidential", "restricted"}

    pdf = client.post(
        "/v1/search", json={"query": QUERY, "filters": {"doc_types": ["pdf"]}}, headers=HR
    ).json()["results"]
    assert pdf and {h["doc_type"] for h in pdf} == {"pdf"}
    assert {h["chunk_id"] for h in pdf} < {h["chunk_id"] for h in everything}

    dated = client.post(
        "/v1/search",
        json={"query": QUERY, "filters": {"modified_from": "2023-06-01T00:00:00Z"}},
        headers=HR,
    ).json()["results"]
    assert dated and all(h["modified_at"] >= "2023-06-01" for h in dated)
    assert fake_index.seen[-1][1].filters.modified_from == datetime(2023, 6, 1, tzinfo=UTC)

    # alice asks for the hr source by name: a filter cannot open documents she may not see.
    hr_only = client.post(
        "/v1/search", json={"query": QUERY, "filters": {"sources": ["hr-share"]}}, headers=ALICE
    )
    assert hr_only.status_code == 200
    assert hr_only.json()["results"] == []


@pytest.mark.parametrize(
    "filters",
    [
        {"modified_from": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC
        {"modified_to": "9999-12-31T23:59:59-14:00"},  # after year 9999 in UTC
    ],
)
def test_filter_dates_outside_the_utc_range_are_422_not_503(client, fake_index, filters):
    """The stores compare dates in UTC; a date that cannot be converted raised OverflowError
    inside the vector store, which answered 503 "temporarily unavailable, retry" (and counted a
    store outage) for what is the caller's bad input."""
    for path, body in (
        ("/v1/search", {"query": QUERY, "filters": filters}),
        ("/v1/answer", {"question": QUERY, "filters": filters}),
    ):
        response = client.post(path, json=body, headers=ALICE)
        assert response.status_code == 422, (path, response.text)
        assert "out of range" in response.text
    assert fake_index.seen == []
    assert "citewell_store_unavailable_total 0.0" in client.get("/metrics").text


@pytest.mark.parametrize(
    "filters",
    [
        {"modified_from": "2024-03-01T00:00:00Z", "modified_to": "2024-02-01T00:00:00Z"},
        # The same instant written in two offsets is not reversed; one second later in UTC is.
        {"modified_from": "2024-03-01T10:00:01+01:00", "modified_to": "2024-03-01T09:00:00Z"},
        {"modified_from": "2024-03-01T00:00:01", "modified_to": "2024-03-01T00:00:00Z"},
    ],
    ids=["a-month", "offsets", "naive-and-aware"],
)
def test_a_date_range_that_ends_before_it_starts_is_422(client, fake_index, filters):
    """Swapped dates matched nothing and answered 200 with no results: the caller could not
    tell a reversed range from "no document was modified then"."""
    for path, body in (
        ("/v1/search", {"query": QUERY, "filters": filters}),
        ("/v1/answer", {"question": QUERY, "filters": filters}),
    ):
        response = client.post(path, json=body, headers=ALICE)
        assert response.status_code == 422, (path, response.text)
        assert "modified_from is after modified_to" in response.text
    assert fake_index.seen == []


def test_a_date_range_of_one_instant_is_searched(client, fake_index):
    filters = {"modified_from": "2024-03-01T10:00:00+01:00", "modified_to": "2024-03-01T09:00:00"}
    body = {"query": QUERY, "filters": filters}
    assert client.post("/v1/search", json=body, headers=ALICE).status_code == 200
    ((_, request),) = fake_index.seen
    assert request.filters.modified_from == request.filters.modified_to


def test_filter_dates_reach_the_service_in_utc(client, fake_index):
    body = {"query": QUERY, "filters": {"modified_from": "2023-06-01T02:00:00+02:00"}}
    assert client.post("/v1/search", json=body, headers=ALICE).status_code == 200
    body = {"query": QUERY, "filters": {"modified_to": "2023-06-01T00:00:00"}}  # naive: UTC
    assert client.post("/v1/search", json=body, headers=ALICE).status_code == 200
    (_, first), (_, second) = fake_index.seen
    assert first.filters.modified_from == datetime(2023, 6, 1, tzinfo=UTC)
    assert first.filters.modified_from.utcoffset() is not None
    assert second.filters.modified_to == datetime(2023, 6, 1, tzinfo=UTC)


def test_store_unavailable_is_503_and_reveals_nothing(client, fake_index, api_settings):
    fake_index.unavailable = True
    response = client.post("/v1/search", json={"query": QUERY}, headers=HR)
    assert response.status_code == 503
    assert response.json() == {"detail": STORE_UNAVAILABLE_MESSAGE}
    assert response.headers["retry-after"]
    for secret in ("/srv", "scifact", "WouldBlock", "shard"):
        assert secret not in response.text
    last = audit_lines(api_settings)[-1]
    assert (last["event"], last["outcome"], last.get("chunk_ids", [])) == (
        "search",
        "unavailable",
        [],
    )
    metrics = client.get("/metrics").text
    assert "citewell_store_unavailable_total 1.0" in metrics


def test_no_index_loaded_yet_is_503(make_settings, principals_file):
    from citewell.core.errors import IndexNotFoundError

    def opener():
        raise IndexNotFoundError("index 'default' has no published version")

    settings = make_settings(principals_file=principals_file)
    app = create_app(settings)
    app.state.holder._opener = opener  # the default opener would look for a real index
    with TestClient(app) as client:
        response = client.post("/v1/search", json={"query": QUERY}, headers=ALICE)
        assert response.status_code == 503
        assert response.json() == {"detail": STORE_UNAVAILABLE_MESSAGE}
        assert client.get("/readyz").status_code == 503


def test_unauthenticated_gets_401_even_when_store_is_down(client, fake_index):
    fake_index.unavailable = True
    assert client.post("/v1/search", json={"query": QUERY}).status_code == 401


def test_query_and_body_limits(make_settings, principals_file, shared_data):
    settings = make_settings(
        principals_file=principals_file, max_query_chars=40, max_request_bytes=2048
    )
    index = FakeServingIndex(load_chunks(shared_data), settings)
    with TestClient(create_app(settings, index)) as client:
        long_query = client.post("/v1/search", json={"query": "x " * 30}, headers=ALICE)
        assert long_query.status_code == 422
        assert "40 characters" in long_query.json()["detail"]
        huge = client.post("/v1/search", json={"query": "x", "pad": "y" * 4096}, headers=ALICE)
        assert huge.status_code == 413
        # Without a Content-Length (chunked), the limit still holds.
        chunks = iter([b'{"query": "', b"y" * 3000, b'"}'])
        streamed = client.post(
            "/v1/search",
            content=chunks,
            headers={**ALICE, "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        assert index.seen == []


def test_empty_query_and_bad_k_are_422(client, fake_index):
    assert client.post("/v1/search", json={"query": ""}, headers=ALICE).status_code == 422
    assert client.post("/v1/search", json={"query": "a", "k": 0}, headers=ALICE).status_code == 422
    assert (
        client.post("/v1/search", json={"query": "a", "k": 101}, headers=ALICE).status_code == 422
    )
    assert fake_index.seen == []


@pytest.mark.parametrize("query", [" ", "\t\n", "\u3000"])
def test_blank_query_is_422_and_audited_as_rejected(client, fake_index, api_settings, query):
    """A query of whitespace only searched for nothing in particular and returned whatever the
    dense leg ranked first; /v1/answer already refused a blank question."""
    response = client.post("/v1/search", json={"query": query}, headers=ALICE)
    assert response.status_code == 422
    assert response.json() == {"detail": "query is empty"}
    assert fake_index.seen == []
    line = audit_lines(api_settings)[-1]
    assert (line["event"], line["outcome"], line["reason"]) == ("search", "rejected", "query_empty")


def test_audit_line_has_hash_ids_and_no_text_or_credentials(client, api_settings, fake_index):
    token = hs256_token(sub="ivan", clearance="restricted", groups=["hr"])
    body = {"query": QUERY, "k": 3, "filters": {"sources": ["hr-share", "drive"]}}
    response = client.post("/v1/search", json=body, headers={"Authorization": f"Bearer {token}"})
    client.post("/v1/search", json={"query": QUERY}, headers=ALICE)
    assert response.status_code == 200
    hits = response.json()["results"]
    raw = (api_settings.data_dir / "audit.jsonl").read_text(encoding="utf-8")
    line = json.loads(raw.splitlines()[0])
    assert line["principal"] == "ivan"
    assert line["auth_method"] == "jwt"
    assert line["query_sha256"] == hashlib.sha256(QUERY.encode()).hexdigest()
    assert "query" not in line
    assert line["mode"] == "hybrid"
    assert line["filters"]["sources"] == ["drive", "hr-share"]
    assert line["chunk_ids"] == [h["chunk_id"] for h in hits]
    assert line["latency_ms"] >= 0
    assert datetime.fromisoformat(line["time"])
    for hit in hits:
        assert hit["text"][:40] not in raw
    for secret in (token, KEYS["alice"], QUERY):
        assert secret not in raw


def test_audit_can_record_query_text_when_configured(make_settings, principals_file, shared_data):
    settings = make_settings(principals_file=principals_file, audit_log_queries=True)
    index = FakeServingIndex(load_chunks(shared_data), settings)
    with TestClient(create_app(settings, index)) as client:
        client.post("/v1/search", json={"query": QUERY}, headers=ALICE)
    assert audit_lines(settings)[-1]["query"] == QUERY


def test_audit_log_is_thread_safe(tmp_path):
    audit = AuditLog(tmp_path / "a" / "audit.jsonl")

    def write(n: int) -> None:
        for i in range(50):
            audit.record(
                AuditRecord(
                    event="search",
                    outcome="ok",
                    principal=f"p{n}",
                    chunk_ids=tuple(f"{n}-{i}-{j}" for j in range(20)),
                    query="dropped",
                )
            )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / "a" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 400
    parsed = [json.loads(line) for line in lines]
    assert all(len(p["chunk_ids"]) == 20 and "query" not in p for p in parsed)


def test_unexpected_error_is_a_generic_500(api_settings, fake_index):
    def broken(principal, request):
        raise RuntimeError("segfault near chunk 'merger plan' at /srv/citewell")

    fake_index.search = broken
    app = create_app(api_settings, fake_index)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/search", json={"query": QUERY}, headers=ALICE)
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error"}
        metrics = client.get("/metrics").text
        assert 'route="/v1/search",status="500"' in metrics
    last = audit_lines(api_settings)[-1]
    assert (last["outcome"], last["reason"]) == ("error", "RuntimeError")


def test_prefer_recent_reaches_the_service_and_dates_come_back(client, fake_index):
    body = {"query": QUERY, "k": 3, "prefer_recent": True}
    response = client.post("/v1/search", json=body, headers=ALICE)
    assert response.status_code == 200
    assert fake_index.seen[-1][1].prefer_recent is True
    assert all("document_date" in hit for hit in response.json()["results"])
    client.post("/v1/search", json={"query": QUERY}, headers=ALICE)
    assert fake_index.seen[-1][1].prefer_recent is False


def test_hit_body_carries_the_stated_date_apart_from_mtime(shared_data):
    from citewell.api.schemas import SearchHitBody
    from citewell.core.models import ScoreBreakdown, ScoredChunk

    stated = datetime(2023, 8, 4, 10, 2, 23, tzinfo=UTC)
    chunk = load_chunks(shared_data)[0].model_copy(update={"document_date": stated})
    hit = SearchHitBody.from_scored(ScoredChunk(chunk=chunk, score=1.0, scores=ScoreBreakdown()))
    wire = json.loads(hit.model_dump_json())
    assert wire["document_date"] == "2023-08-04T10:02:23Z"
    assert wire["modified_at"] == "2022-01-10T00:00:00Z"
