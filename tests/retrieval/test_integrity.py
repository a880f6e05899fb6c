"""Index integrity: a published version records its files and counts; a version that no longer
matches is refused wherever it would be opened (serving, switching, rolling back, refreshing on
top of it), with a log event naming it, and a BM25 hit the vector store cannot hydrate is an
integrity error, never a silently shorter answer."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from citewell.api.errors import INDEX_INTEGRITY_MESSAGE
from citewell.api.main import create_app
from citewell.cli.main import main as cli_main
from citewell.core.errors import IndexIntegrityError, StoreUnavailableError
from citewell.core.models import AccessLabel, Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.index import (
    IndexLayout,
    IndexMeta,
    IndexWriter,
    open_version,
    rollback,
    verify_version,
)
from citewell.retrieval.integrity import content_digest
from citewell.retrieval.principals import hash_api_key
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder
from tests.api.refusals import assert_every_mode_refused, assert_not_ready

API_KEY = "integrity-key-51ab"
HEADERS = {"X-API-Key": API_KEY}
PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
READER = Principal(name="reader", clearance="public", groups=frozenset())
QUERY = "white matter development in newborn infants"


def documents(start: int, count: int) -> list[TextDocument]:
    return [
        TextDocument(
            doc_id=f"doc-{i}",
            title=f"Report {i}",
            text=f"White matter development {i} in newborn infants, measured at week {i}.",
            label=PUBLIC,
        )
        for i in range(start, start + count)
    ]


def settings_for(root: Path) -> Settings:
    return Settings(
        data_dir=root / "data", principals_file=root / "principals.yaml", reload_interval_s=60.0
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    body = {
        "principals": {
            "reader": {"clearance": "public", "api_key_sha256": hash_api_key(API_KEY)},
        }
    }
    (root / "principals.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
    settings = settings_for(root)
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        documents(0, 6), index=settings.index, source_name="reports"
    )
    return root


@pytest.fixture
def settings(template: Path, tmp_path: Path) -> Settings:
    shutil.copytree(template, tmp_path / "copy")
    return settings_for(tmp_path / "copy")


def current_dir(settings: Settings) -> Path:
    layout = IndexLayout(settings)
    version = layout.current_version()
    assert version is not None
    return layout.version_dir(version)


def _one(version: Path, pattern: str) -> Path:
    found = sorted(p for p in version.glob(pattern) if p.is_file())
    assert found, pattern
    return found[0]


def _flip_byte(path: Path) -> None:
    """Change one byte of the content, keeping the size (only a digest can see it)."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x5A
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bm25_version(version: Path) -> Path:
    return version / "bm25" / (version / "bm25" / "CURRENT").read_text().strip()


def _edit_meta(version: Path) -> None:
    meta = json.loads((version / "meta.json").read_text())
    meta["chunks"] += 1  # valid JSON, plausible value: only the seal shows it
    (version / "meta.json").write_text(json.dumps(meta))


def _plant_manifest_row(version: Path) -> None:
    """A same-size edit is not possible with SQLite's API; overwrite a page in place."""
    _flip_byte(version / "manifest.sqlite")


DAMAGE: dict[str, Callable[[Path], object]] = {
    # The reported fault: one shard file of the published version deleted.
    "shard-id-tracker-deleted": lambda v: _one(
        v, "vectors/**/mutable_id_tracker.mappings"
    ).unlink(),
    "shard-vectors-truncated": lambda v: _truncate(_one(v, "vectors/**/vectors/chunk_0.mmap")),
    "shard-payload-byte-flipped": lambda v: _flip_byte(
        _one(v, "vectors/**/payload_storage/page_0.dat")
    ),
    "shard-config-deleted": lambda v: (v / "vectors" / "edge_config.json").unlink(),
    "shard-extra-segment-file": lambda v: (
        _one(v, "vectors/**/segment.json").parent / "planted.dat"
    ).write_bytes(b"\x01" * 64),
    "bm25-arrays-byte-flipped": lambda v: _flip_byte(_bm25_version(v) / "arrays.npz"),
    "bm25-meta-deleted": lambda v: (_bm25_version(v) / "meta.json").unlink(),
    "bm25-pointer-garbage": lambda v: (v / "bm25" / "CURRENT").write_text("v-" + "0" * 32),
    "manifest-byte-flipped": _plant_manifest_row,
    "manifest-deleted": lambda v: (v / "manifest.sqlite").unlink(),
    "meta-field-edited": _edit_meta,
    "meta-garbage": lambda v: (v / "meta.json").write_text("{", "utf-8"),
}


def test_publish_records_every_file_with_size_and_digest(settings: Settings) -> None:
    version = current_dir(settings)
    meta = IndexLayout(settings).read_meta(version.name)
    assert meta.files is not None and meta.seal is not None and meta.seal_problem() is None
    assert meta.points == meta.chunks == 6
    recorded = {f.path: f for f in meta.files}
    on_disk = {p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()} - {
        "meta.json"
    }
    assert set(recorded) == on_disk
    assert any(path.endswith("mutable_id_tracker.mappings") for path in recorded)
    for path, record in recorded.items():
        assert record.size == (version / path).stat().st_size
        assert record.digest == content_digest(version / path)


def test_a_verified_version_stays_verified_after_it_was_served(settings: Settings) -> None:
    # qdrant-edge rewrites files on the first load after writing; publish settles that, so
    # serving (and closing) must leave every recorded file as it was.
    service = ServingIndex(settings, embedder=HashingEmbedder())
    assert service.search(READER, SearchRequest(query=QUERY, k=3)).results
    service.close()
    assert verify_version(settings).version == current_dir(settings).name
    opened = open_version(settings)
    assert opened.damage() == []
    opened.close()


def test_content_digest_reads_holes_as_zeros(tmp_path: Path) -> None:
    sparse, dense = tmp_path / "sparse", tmp_path / "dense"
    with open(sparse, "wb") as fh:
        fh.truncate(1 << 20)
        fh.seek(300_000)
        fh.write(b"data")
    content = bytearray(1 << 20)
    content[300_000:300_004] = b"data"
    dense.write_bytes(bytes(content))
    assert content_digest(sparse) == content_digest(dense)
    content[5] = 1
    dense.write_bytes(bytes(content))
    assert content_digest(sparse) != content_digest(dense)


@pytest.mark.parametrize("fault", sorted(DAMAGE))
def test_a_damaged_version_is_refused_not_ready_and_searches_answer_503(
    fault: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    version = current_dir(settings)
    DAMAGE[fault](version)
    caplog.set_level(logging.INFO)

    with pytest.raises(IndexIntegrityError) as refused:
        open_version(settings)
    assert refused.value.version == version.name

    service = ServingIndex(settings, embedder=HashingEmbedder())
    readiness = service.versions.readiness()
    assert (readiness.ready, readiness.reason) == (False, "integrity_failed")
    with TestClient(create_app(settings, service)) as client:
        assert_not_ready(client, "integrity_failed")
        assert_every_mode_refused(
            client, QUERY, HEADERS, INDEX_INTEGRITY_MESSAGE, str(settings.data_dir)
        )
    audit = [
        json.loads(line)
        for line in (settings.data_dir / "audit.jsonl").read_text().splitlines()
        if '"search"' in line
    ]
    assert [(a["outcome"], a["reason"]) for a in audit] == [
        ("unavailable", "index_integrity_failed")
    ] * 3
    refusals = [r for r in caplog.records if r.getMessage() == "index.version_refused"]
    assert refusals and all(r.fields["version"] == version.name for r in refusals)  # type: ignore[attr-defined]
    service.close()


def _publish_more(settings: Settings) -> str:
    report = Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        documents(0, 9), index=settings.index, source_name="reports"
    )
    assert report.index_version is not None
    return report.index_version


@pytest.mark.parametrize("fault", ["shard-id-tracker-deleted", "bm25-arrays-byte-flipped"])
def test_a_damaged_new_version_is_not_switched_to_and_the_old_one_keeps_serving(
    fault: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    service = ServingIndex(settings, embedder=HashingEmbedder())
    request = SearchRequest(query=QUERY, k=10, mode=SearchMode.HYBRID, rerank=False)
    before = service.search(READER, request)
    served = before.index_version
    assert len(before.results) == 6

    newer = _publish_more(settings)
    DAMAGE[fault](IndexLayout(settings).version_dir(newer))
    caplog.set_level(logging.INFO)
    assert service.versions.maybe_reload() is False
    after = service.search(READER, request)
    assert after.index_version == served
    assert [h.chunk.chunk_id for h in after.results] == [h.chunk.chunk_id for h in before.results]
    assert service.ready() is True
    events = {(r.getMessage(), getattr(r, "fields", {}).get("version")) for r in caplog.records}
    assert ("index.version_refused", newer) in events
    assert ("index.reload_failed", newer) in events
    # The reload loop does not re-read the refused version (or log it again) on every tick.
    caplog.clear()
    assert service.versions.maybe_reload() is False
    assert service.ready() is True
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    service.close()


def test_a_version_damaged_while_served_stops_serving_until_rolled_back(
    settings: Settings,
) -> None:
    service = ServingIndex(settings, embedder=HashingEmbedder())
    first = service.search(READER, SearchRequest(query=QUERY, k=3)).index_version
    newer = _publish_more(settings)
    assert service.versions.maybe_reload() is True
    DAMAGE["shard-id-tracker-deleted"](IndexLayout(settings).version_dir(newer))

    readiness = service.versions.readiness()
    assert (readiness.ready, readiness.reason, readiness.version) == (
        False,
        "integrity_failed",
        newer,
    )
    with pytest.raises(IndexIntegrityError):
        service.search(READER, SearchRequest(query=QUERY, k=3))
    assert service.versions.maybe_reload() is False  # the current version still fails

    assert rollback(settings) == first
    assert service.versions.maybe_reload() is True
    assert service.ready() is True
    assert service.search(READER, SearchRequest(query=QUERY, k=3)).index_version == first
    service.close()


def test_rollback_to_a_damaged_version_is_refused(settings: Settings) -> None:
    layout = IndexLayout(settings)
    older = layout.current_version()
    assert older is not None
    newer = _publish_more(settings)
    DAMAGE["shard-vectors-truncated"](layout.version_dir(older))
    with pytest.raises(IndexIntegrityError):
        rollback(settings, to_version=older)
    assert layout.current_version() == newer


def test_a_refresh_does_not_build_on_a_damaged_version(settings: Settings) -> None:
    layout = IndexLayout(settings)
    published = layout.current_version()
    DAMAGE["shard-id-tracker-deleted"](current_dir(settings))
    with pytest.raises(IndexIntegrityError):
        _publish_more(settings)
    assert layout.current_version() == published
    assert layout.versions() == [published]


def test_a_version_without_records_is_checked_by_its_counts(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Versions published before file records existed still open, with a warning, unless their
    # stores disagree with the counts they state.
    version = current_dir(settings)
    meta = json.loads((version / "meta.json").read_text())
    for key in ("files", "seal", "points", "digest_algorithm"):
        meta.pop(key)
    (version / "meta.json").write_text(json.dumps(meta))
    caplog.set_level(logging.WARNING)
    open_version(settings).close()
    assert "index.version_unrecorded" in [r.getMessage() for r in caplog.records]

    meta["chunks"] += 1
    (version / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexIntegrityError, match="points"):
        open_version(settings)


def test_an_unhydratable_bm25_hit_is_an_integrity_error_not_a_dropped_result(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    service = ServingIndex(settings, embedder=HashingEmbedder())
    # Each report's own number is its one rare term, so every report is a BM25 hit.
    numbers = "report 0 1 2 3 4 5"
    request = SearchRequest(query=numbers, k=10, mode=SearchMode.BM25, rerank=False)
    assert len(service.search(READER, request).results) == 6
    with service.versions.lease() as opened:
        # The vector store loses one document's points behind the BM25 index's back.
        opened.vectors.delete_documents(["doc-2"])
    caplog.set_level(logging.ERROR)
    with pytest.raises(IndexIntegrityError, match="BM25 hit"):
        service.search(READER, request)
    assert "index.unhydratable_hits" in [r.getMessage() for r in caplog.records]
    with TestClient(create_app(settings, service)) as client:
        response = client.post(
            "/v1/search", json={"query": numbers, "k": 10, "mode": "bm25"}, headers=HEADERS
        )
    assert response.status_code == 503
    assert response.json() == {"detail": INDEX_INTEGRITY_MESSAGE}
    service.close()


class _BrokenModel(HashingEmbedder):
    def warm_up(self) -> None:
        from citewell.core.errors import ModelError

        raise ModelError("model files missing")


def test_ready_means_the_query_model_loads(settings: Settings) -> None:
    service = ServingIndex(settings, embedder=_BrokenModel())
    readiness = service.versions.readiness()
    assert (readiness.ready, readiness.reason) == (False, "model_unavailable")
    with TestClient(create_app(settings, service)) as client:
        assert_not_ready(client, "model_unavailable")
    service.close()


def _cli(settings: Settings, *args: str) -> list[str]:
    return ["index", *args, "--data-dir", str(settings.data_dir), "--index", settings.index]


def test_cli_verify_and_ready(settings: Settings, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("CITEWELL_PRINCIPALS_FILE", str(settings.principals_file))
    version = current_dir(settings).name
    assert cli_main(_cli(settings, "verify", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["version"] == version and report["files"] > 10

    DAMAGE["shard-id-tracker-deleted"](current_dir(settings))
    assert cli_main(_cli(settings, "verify")) == 1
    out = capsys.readouterr()
    assert version in out.err and "mutable_id_tracker.mappings: missing" in out.err
    assert cli_main(_cli(settings, "ready", "--json")) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "integrity_failed"


def test_cli_ready_uses_the_serving_check(
    settings: Settings, capsys: Any, monkeypatch: Any
) -> None:
    # A real embedder would load here; the hashing one keeps the test fast, so the check the
    # CLI runs is asked to use it through the same ServingIndex the API uses.
    monkeypatch.setattr(
        "citewell.cli.index_admin._serving_index",
        lambda s: ServingIndex(s, embedder=HashingEmbedder()),
    )
    assert cli_main(_cli(settings, "ready", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ready": True,
        "reason": None,
        "detail": None,
        "version": current_dir(settings).name,
    }


def test_manifest_counts_are_checked(settings: Settings) -> None:
    # A manifest row removed (a consistent SQLite file, so only the counts can tell).
    version = current_dir(settings)
    db = sqlite3.connect(version / "manifest.sqlite")
    db.execute("DELETE FROM documents WHERE doc_id = (SELECT MIN(doc_id) FROM documents)")
    db.commit()
    db.close()
    with pytest.raises(IndexIntegrityError):
        open_version(settings)


def test_writer_publishes_only_consistent_counts(settings: Settings) -> None:
    # A writer whose vector store lost a point that the manifest still lists must not publish.
    layout = IndexLayout(settings)
    published = layout.current_version()
    meta = layout.read_meta(published or "")
    with (
        IndexWriter(
            settings,
            embedding_model=meta.embedding_model,
            embedding_key=meta.embedding_key,
            dimension=meta.dimension,
        ) as writer,
        pytest.raises(IndexIntegrityError, match="points"),
    ):
        writer.vectors.delete_documents(["doc-1"])
        writer.commit()
    assert layout.current_version() == published


@pytest.fixture
def qdrant_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Indexes on a remote Qdrant: a qdrant-client in-memory engine stands in for the server
    (one client shared by every store, as one server is)."""
    from qdrant_client import QdrantClient

    from citewell.retrieval.stores.qdrant import QdrantVectorStore

    server = QdrantClient(location=":memory:")

    class OnTheServer(QdrantVectorStore):
        def close(self) -> None:  # closes this handle, not the server
            pass

    def remote_store(
        settings: Settings, collection: str, dimension: int, *, create: bool = False
    ) -> QdrantVectorStore:
        return OnTheServer(server, collection, dimension, create=create)

    monkeypatch.setattr("citewell.retrieval.index._remote_store", remote_store)
    return server


def _remote_index(tmp_path: Path) -> tuple[Settings, IndexMeta]:
    remote = Settings(data_dir=tmp_path / "data", qdrant_url="http://qdrant.invalid:6333")
    Ingestor(remote, embedder=HashingEmbedder()).ingest_texts(
        documents(0, 6), index=remote.index, source_name="reports"
    )
    layout = IndexLayout(remote)
    return remote, layout.read_meta(layout.current_version() or "")


def test_a_remote_collection_is_checked_by_its_point_count(
    tmp_path: Path, qdrant_server: Any
) -> None:
    # The remote-Qdrant backend has no vector files: its version records the BM25 index and the
    # manifest, and the collection is checked by its point count.
    import citewell.retrieval.index as index_module

    remote, meta = _remote_index(tmp_path)
    assert meta.vector_backend == "qdrant" and meta.points == 6
    assert meta.files is not None and not any(f.path.startswith("vectors/") for f in meta.files)
    open_version(remote).close()

    store = index_module._remote_store(remote, meta.collection or "", meta.dimension)
    store.delete_documents(["doc-1"])
    with pytest.raises(IndexIntegrityError, match="5 points, 6 were published"):
        open_version(remote)
    service = ServingIndex(remote, embedder=HashingEmbedder())
    assert service.versions.readiness().reason == "integrity_failed"
    service.close()


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def test_a_remote_refresh_that_dies_leaves_the_published_version_servable(
    tmp_path: Path, qdrant_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refreshes wrote their upserts and deletes into the published collection: one that died
    # before publishing left the served version's vectors changed under its manifest and BM25,
    # and every reader opening it (an API reload, a new replica) refused it.
    from citewell.retrieval.lexical.bm25 import BM25Index

    remote, meta = _remote_index(tmp_path)

    def killed(self: BM25Index, path: Path) -> None:
        raise _Killed

    with monkeypatch.context() as patch, pytest.raises(_Killed):
        patch.setattr(BM25Index, "save", killed)
        Ingestor(remote, embedder=HashingEmbedder()).ingest_texts(
            documents(0, 9), index=remote.index, source_name="reports"
        )
    open_version(remote).close()
    # The next refresh publishes the change, and the version it replaced still serves as
    # published: rollback returns to vectors that match it.
    Ingestor(remote, embedder=HashingEmbedder()).ingest_texts(
        documents(0, 9), index=remote.index, source_name="reports"
    )
    assert verify_version(remote).points == 9
    assert rollback(remote) == meta.version
    assert verify_version(remote).points == 6


def test_a_deleted_remote_collection_is_refused_not_recreated_empty(
    tmp_path: Path, qdrant_server: Any
) -> None:
    # Opening the version created an empty collection in its place on the server: served
    # readers then saw an integrity failure, and a refresh wrote its few changed documents
    # into the empty collection.
    remote, meta = _remote_index(tmp_path)
    qdrant_server.delete_collection(meta.collection)
    with pytest.raises(StoreUnavailableError, match="does not exist on the server"):
        open_version(remote)
    with pytest.raises(StoreUnavailableError, match="does not exist on the server"):
        Ingestor(remote, embedder=HashingEmbedder()).ingest_texts(
            documents(5, 7), index=remote.index, source_name="reports"
        )
    assert not qdrant_server.collection_exists(meta.collection)
    # A fresh build makes a new collection and serves again.
    Ingestor(remote, embedder=HashingEmbedder()).ingest_texts(
        documents(0, 6), index=remote.index, source_name="reports", fresh=True
    )
    open_version(remote).close()
