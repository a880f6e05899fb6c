"""The API over a real small index (SciFact abstracts, real MiniLM embedder and stores), including
a refresh published by an ingest while the API serves."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citewell.api.main import create_app
from citewell.core.models import AccessLabel
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.service import ServingIndex
from tests.api.conftest import KEYS

pytestmark = pytest.mark.slow

ALICE = {"X-API-Key": KEYS["alice"]}  # internal, engineering
HR = {"X-API-Key": KEYS["hrbot"]}  # restricted, hr
LABELS = [
    AccessLabel(classification="public", groups=frozenset({"everyone"})),
    AccessLabel(classification="internal", groups=frozenset({"engineering"})),
    AccessLabel(classification="confidential", groups=frozenset({"hr"})),
]


def scifact_docs(shared_data: Path, n: int) -> list[TextDocument]:
    docs = []
    with gzip.open(shared_data / "ir" / "scifact" / "corpus.jsonl.gz", "rt") as fh:
        for i, line in zip(range(n), fh, strict=False):
            raw = json.loads(line)
            docs.append(
                TextDocument(
                    doc_id=f"scifact-{raw['_id']}",
                    title=raw["title"],
                    text=raw["text"],
                    label=LABELS[i % len(LABELS)],
                )
            )
    return docs


def _search(client: TestClient, query: str, headers: dict[str, str], **options):
    return client.post("/v1/search", json={"query": query, "k": 5, **options}, headers=headers)


def test_search_and_refresh_against_a_real_index(
    make_settings, principals_file, shared_data, embedder
):
    settings = make_settings(principals_file=principals_file, reload_interval_s=0.1)
    docs = scifact_docs(shared_data, 16)
    ingestor = Ingestor(settings, embedder=embedder)
    ingestor.ingest_texts(docs[:12], index=settings.index, source_name="scifact")
    service = ServingIndex(settings, embedder=embedder)
    try:
        with TestClient(create_app(settings, service)) as client:
            assert client.get("/readyz").status_code == 200
            internal, confidential = docs[1], docs[2]

            found = _search(client, internal.title, ALICE)
            assert found.status_code == 200, found.text
            body = found.json()
            assert body["results"][0]["doc_id"] == internal.doc_id
            assert {h["classification"] for h in body["results"]} <= {"public", "internal"}
            first_version = body["index_version"]

            hidden = _search(client, confidential.title, ALICE).json()["results"]
            assert confidential.doc_id not in {h["doc_id"] for h in hidden}
            seen = _search(client, confidential.title, HR).json()["results"]
            assert seen[0]["doc_id"] == confidential.doc_id
            assert seen[0]["scores"]["fused"] is not None

            narrowed = _search(
                client, internal.title, ALICE, mode="bm25", filters={"doc_ids": [docs[0].doc_id]}
            ).json()["results"]
            assert {h["doc_id"] for h in narrowed} <= {docs[0].doc_id}

            # Publish a new version while searches run: none may fail, and the API switches.
            statuses: list[int] = []
            stop = threading.Event()

            def keep_searching() -> None:
                while not stop.is_set():
                    statuses.append(_search(client, internal.title, ALICE).status_code)

            searcher = threading.Thread(target=keep_searching)
            searcher.start()
            try:
                ingestor.ingest_texts(docs, index=settings.index, source_name="scifact")
                new_doc = docs[13]  # internal, only in the new version
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    latest = _search(client, new_doc.title, ALICE).json()
                    if latest["index_version"] != first_version:
                        break
                    time.sleep(0.1)
            finally:
                stop.set()
                searcher.join()
            assert latest["index_version"] != first_version
            assert latest["results"][0]["doc_id"] == new_doc.doc_id
            assert statuses and set(statuses) == {200}
            assert client.get("/readyz").json()["version"] == latest["index_version"]
    finally:
        service.close()


def test_default_service_opens_the_published_index(
    make_settings, principals_file, shared_data, embedder
):
    settings = make_settings(principals_file=principals_file)
    docs = scifact_docs(shared_data, 3)
    Ingestor(settings, embedder=embedder).ingest_texts(
        docs, index=settings.index, source_name="scifact"
    )
    with TestClient(create_app(settings)) as client:  # opens via open_search_service
        assert client.get("/readyz").status_code == 200
        response = _search(client, docs[0].title, ALICE, mode="bm25")
        assert response.status_code == 200
        assert response.json()["results"][0]["doc_id"] == docs[0].doc_id
