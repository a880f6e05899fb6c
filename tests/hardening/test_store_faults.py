"""Store faults: a missing, corrupt or truncated vector store or BM25 index answers 503 with a
fixed message and a log line, never results (every such damage to a published version is caught
by its integrity check, so the message is the integrity one); a disk that fills up while the
BM25 index is written leaves the published version serving."""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import citewell.retrieval.lexical.storage as bm25_storage
from citewell.api.errors import INDEX_INTEGRITY_MESSAGE, STORE_UNAVAILABLE_MESSAGE
from citewell.api.main import create_app
from citewell.core.errors import StoreUnavailableError
from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex
from tests.hardening import small_index
from tests.hardening.small_index import HEADERS

pytestmark = pytest.mark.slow

ALICE = Principal(name="alice", clearance="internal", groups=frozenset({"engineering"}))
QUERY = "microstructural development of human newborn cerebral white matter"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, embedder: Any) -> Path:
    root = tmp_path_factory.mktemp("hardening-index")
    small_index.build(root, shared_data, embedder)
    return root


def _version_dir(settings: Settings) -> Path:
    layout = IndexLayout(settings)
    version = layout.current_version()
    assert version is not None
    return layout.version_dir(version)


def _bm25_arrays(version: Path) -> Path:
    pointer = (version / "bm25" / "CURRENT").read_text(encoding="utf-8").strip()
    return version / "bm25" / pointer / "arrays.npz"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble_vectors(version: Path) -> None:
    files = [p for p in (version / "vectors").rglob("*") if p.is_file() and p.stat().st_size]
    assert files
    for path in files:
        path.write_bytes(b"\x00garbage" * 64)


CORRUPTIONS: dict[str, Callable[[Path], object]] = {
    "bm25-missing": lambda v: shutil.rmtree(v / "bm25"),
    "bm25-truncated": lambda v: _truncate(_bm25_arrays(v)),
    "bm25-pointer-garbage": lambda v: (v / "bm25" / "CURRENT").write_text("../../etc", "utf-8"),
    "vectors-garbage": _garble_vectors,
    "vectors-missing": lambda v: shutil.rmtree(v / "vectors"),
    "meta-corrupt": lambda v: (v / "meta.json").write_text("{", "utf-8"),
    "manifest-missing": lambda v: (v / "manifest.sqlite").unlink(),
    "version-missing": lambda v: shutil.rmtree(v),
}


@pytest.mark.parametrize("fault", sorted(CORRUPTIONS))
def test_corrupt_or_missing_store_answers_503_and_never_results(
    fault: str,
    template: Path,
    tmp_path: Path,
    embedder: Any,
    caplog: pytest.LogCaptureFixture,
):
    settings = small_index.copy_of(template, tmp_path / "copy")
    version = _version_dir(settings)
    CORRUPTIONS[fault](version)

    service = ServingIndex(settings, embedder=embedder)
    with pytest.raises(StoreUnavailableError):
        service.search(ALICE, SearchRequest(query=QUERY, k=5))

    caplog.set_level(logging.WARNING)
    with TestClient(create_app(settings, service)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "integrity_failed"
        for mode in ("hybrid", "bm25", "dense"):
            response = client.post(
                "/v1/search", json={"query": QUERY, "k": 5, "mode": mode}, headers=HEADERS
            )
            assert response.status_code == 503, (mode, response.text)
            assert response.json() == {"detail": INDEX_INTEGRITY_MESSAGE}
            assert response.headers["retry-after"]
            assert str(tmp_path) not in response.text
    events = [r.getMessage() for r in caplog.records if r.name == "citewell.api.errors"]
    assert "api.index_integrity_failed" in events
    service.close()


@pytest.mark.parametrize("leg", ["vectors", "lexical"])
def test_a_leg_failing_while_serving_answers_503_not_the_other_leg(
    leg: str, template: Path, tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
):
    settings = small_index.copy_of(template, tmp_path / "copy")
    service = ServingIndex(settings, embedder=embedder)
    service.versions.load()
    healthy = service.search(ALICE, SearchRequest(query=QUERY, k=5, rerank=False))
    assert healthy.results

    served = service.versions.served  # the live version
    assert served is not None
    opened = served.opened

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("engine fault")

    monkeypatch.setattr(getattr(opened, leg), "search", broken)
    with TestClient(create_app(settings, service)) as client:
        response = client.post("/v1/search", json={"query": QUERY, "k": 5}, headers=HEADERS)
    assert response.status_code == 503
    assert response.json() == {"detail": STORE_UNAVAILABLE_MESSAGE}
    service.close()


def _fail_meta_write(path: Path, payload: bytes) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def _fail_arrays_write(fh: Any, **arrays: Any) -> None:
    fh.write(b"PK\x03\x04 half an archive")  # the disk filled part-way through
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["arrays", "meta"])
def test_disk_full_while_saving_bm25_keeps_the_published_version_serving(
    where: str,
    template: Path,
    tmp_path: Path,
    shared_data: Path,
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    settings = small_index.copy_of(template, tmp_path / "copy")
    layout = IndexLayout(settings)
    published = layout.current_version()
    service = ServingIndex(settings, embedder=embedder)
    request = SearchRequest(query=QUERY, k=5, mode=SearchMode.HYBRID, rerank=False)
    before = service.search(ALICE, request)
    assert before.results

    more = small_index.scifact_docs(shared_data, 0, 12)  # the same 8 plus 4 new ones
    ingestor = Ingestor(settings, embedder=embedder)
    with monkeypatch.context() as patch:
        if where == "meta":
            patch.setattr(bm25_storage, "write_synced", _fail_meta_write)
        else:
            patch.setattr(bm25_storage.np, "savez", _fail_arrays_write)
        with pytest.raises(StoreUnavailableError, match="No space left on device"):
            ingestor.ingest_texts(more, index=settings.index, source_name="scifact")

    assert layout.current_version() == published
    assert layout.versions() == [published]
    assert not any(layout.staging_dir.iterdir())
    assert service.versions.maybe_reload() is False
    after = service.search(ALICE, request)
    assert [h.chunk.chunk_id for h in after.results] == [h.chunk.chunk_id for h in before.results]
    fresh = ServingIndex(settings, embedder=embedder)
    reopened = fresh.search(ALICE, request)
    assert [h.chunk.chunk_id for h in reopened.results] == [
        h.chunk.chunk_id for h in before.results
    ]
    fresh.close()

    report = ingestor.ingest_texts(more, index=settings.index, source_name="scifact")
    assert report.index_version != published
    assert len(report.added) == 4
    assert service.versions.maybe_reload() is True
    assert service.status().documents == 12
    service.close()
