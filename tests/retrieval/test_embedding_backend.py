"""One inference backend per index: recorded at publish, refused on mismatch when writing and
when serving; versions written before the record existed read as the backend their key names."""

from __future__ import annotations

import hashlib
import json

import pytest

from citewell.core.errors import StoreUnavailableError
from citewell.core.models import AccessLabel, Principal, SearchRequest
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.embedding import backend_of_key, embedding_cache_key
from citewell.retrieval.index import META_FILE, IndexLayout, IndexMeta
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder

INDEX = "kb"
READER = Principal(name="reader", clearance="internal", groups=frozenset({"everyone"}))


class KeyedEmbedder(HashingEmbedder):
    """Deterministic vectors under the cache key a real embedder on ``backend`` would have."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.cache_key = embedding_cache_key("model@0123", backend, 256)


def documents(text: str = "parental leave lasts sixteen weeks") -> list[TextDocument]:
    label = AccessLabel(classification="internal", groups=frozenset({"everyone"}))
    return [TextDocument(doc_id="policy", title="Leave policy", text=text, label=label)]


def write_older_meta(layout: IndexLayout, embedding_key: str) -> str:
    """Rewrite the published meta.json as code before the backend record wrote it (sealed, where
    versions carry a seal, over the fields it had); returns the version."""
    meta_file = layout.version_dir(layout.current_version() or "") / META_FILE
    record = json.loads(meta_file.read_text())
    del record["embedding_backend"]
    record["embedding_key"] = embedding_key
    if "seal" in record:
        # Sealed as publishing seals: over the record as the model reads it.
        record["seal"] = IndexMeta.model_validate({**record, "seal": None}).sealed().seal
    meta_file.write_text(json.dumps(record))
    return str(record["version"])


@pytest.fixture
def torch_index(make_settings):
    settings = make_settings()
    Ingestor(settings, embedder=KeyedEmbedder("torch")).ingest_texts(
        documents(), index=INDEX, source_name="kb"
    )
    return settings


def test_the_backend_is_recorded_in_the_published_version(torch_index):
    layout = IndexLayout(torch_index, INDEX)
    meta = layout.read_meta(layout.current_version() or "")
    assert meta.embedding_backend == "torch"
    assert json.loads((layout.version_dir(meta.version) / META_FILE).read_text())[
        "embedding_backend"
    ] == ("torch")


def test_a_refresh_with_another_backend_is_refused(torch_index):
    layout = IndexLayout(torch_index, INDEX)
    before = layout.current_version()
    other = Ingestor(torch_index, embedder=KeyedEmbedder("openvino-int8"))
    with pytest.raises(StoreUnavailableError) as raised:
        other.ingest_texts(
            documents("parental leave lasts twenty weeks"), index=INDEX, source_name="kb"
        )
    message = str(raised.value)
    assert "'torch'" in message and "openvino-int8:w8-dyn-a8" in message
    assert "CITEWELL_EMBEDDING_BACKEND=torch" in message and "--fresh" in message
    assert layout.current_version() == before  # nothing published
    # A rebuild starts empty, so the other backend may write it.
    other.ingest_texts(documents(), index=INDEX, source_name="kb", fresh=True)
    meta = layout.read_meta(layout.current_version() or "")
    assert meta.embedding_backend == "openvino-int8:w8-dyn-a8"


def test_serving_refuses_a_query_embedder_on_another_backend(torch_index):
    mismatched = ServingIndex(torch_index, INDEX, embedder=KeyedEmbedder("openvino-int8"))
    with pytest.raises(StoreUnavailableError, match="embedded with backend 'torch'"):
        mismatched.versions.load()
    assert not mismatched.ready()
    matching = ServingIndex(torch_index, INDEX, embedder=KeyedEmbedder("torch"))
    result = matching.search(READER, SearchRequest(query="parental leave", k=3))
    assert [hit.chunk.doc_id for hit in result.results] == ["policy"]
    matching.close()


def test_a_switch_to_a_version_of_another_backend_keeps_the_old_one_serving(torch_index):
    serving = ServingIndex(torch_index, INDEX, embedder=KeyedEmbedder("torch"))
    serving.versions.load()
    version = serving.status().version
    Ingestor(torch_index, embedder=KeyedEmbedder("openvino-int8")).ingest_texts(
        documents(), index=INDEX, source_name="kb", fresh=True
    )
    assert serving.versions.maybe_reload() is False
    assert serving.status().version == version
    assert serving.search(READER, SearchRequest(query="parental leave", k=3)).results
    serving.close()


@pytest.mark.parametrize(
    ("key", "backend"),
    [
        # Every version before the record was written by a torch embedder unless its key says
        # otherwise (an explicit CITEWELL_EMBEDDING_BACKEND opt-in).
        ("hashing-256", "torch"),
        (embedding_cache_key("model@0123", "torch", 256), "torch"),
        (embedding_cache_key("model@0123", "openvino-int8", 256), "openvino-int8:w8-dyn-a8"),
    ],
)
def test_versions_without_the_record_read_as_the_backend_their_key_names(torch_index, key, backend):
    layout = IndexLayout(torch_index, INDEX)
    meta = layout.read_meta(write_older_meta(layout, key))
    assert meta.embedding_backend is None and meta.vectors_backend == backend


def test_an_older_version_refuses_the_new_default_and_takes_torch(torch_index):
    write_older_meta(IndexLayout(torch_index, INDEX), "st:all-MiniLM-L6-v2@0123|torch|len=256")
    with pytest.raises(StoreUnavailableError, match="CITEWELL_EMBEDDING_BACKEND=torch"):
        Ingestor(torch_index, embedder=KeyedEmbedder("openvino-int8")).ingest_texts(
            documents("changed"), index=INDEX, source_name="kb"
        )
    report = Ingestor(torch_index, embedder=KeyedEmbedder("torch")).ingest_texts(
        documents("changed"), index=INDEX, source_name="kb"
    )
    assert report.chunks_written >= 1


def test_backend_of_key():
    assert backend_of_key(embedding_cache_key("m@1", "onnx-int8", 128)) == "onnx-int8"
    assert backend_of_key("hashing-256") == "hashing-256"
    assert backend_of_key("st:x|torch") == "st:x|torch"


def test_a_version_sealed_before_the_backend_record_still_verifies(torch_index):
    # Sealed as the code before the record sealed: over every field it had, which did not
    # include embedding_backend or the later replaces (not even as null).
    layout = IndexLayout(torch_index, INDEX)
    meta_file = layout.version_dir(layout.current_version() or "") / META_FILE
    record = json.loads(meta_file.read_text())
    del record["embedding_backend"]
    record.pop("replaces", None)
    older = IndexMeta.model_validate({**record, "seal": None})
    material = older.model_dump_json(exclude={"seal", "embedding_backend", "replaces"})
    record["seal"] = hashlib.sha256(material.encode("utf-8")).hexdigest()
    meta_file.write_text(json.dumps(record))
    meta = layout.read_meta(record["version"])
    assert meta.embedding_backend is None and meta.vectors_backend == "torch"
    assert meta.seal_problem() is None
