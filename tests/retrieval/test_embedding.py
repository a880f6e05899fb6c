from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.errors import ConfigurationError, ModelError
from retrieval.embedding import BACKENDS, SentenceTransformerEmbedder, bundled_model_path
from retrieval.onnx_export import calibration_texts
from tests.retrieval.contracts.embedder_contract import EmbedderContract

SCIFACT = Path("/work/shared/data/ir/scifact/corpus.jsonl.gz")


def scifact_docs(n: int) -> list[str]:
    docs: list[str] = []
    with gzip.open(SCIFACT, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            docs.append(f"{record['title']}\n{record['text']}")
            if len(docs) == n:
                break
    return docs


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(backend="torch", threads=2)
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="module")
def onnx_embedder(export_dir: Path) -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(backend="onnx", threads=2, export_dir=export_dir)
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="module")
def int8_embedder(export_dir: Path, onnx_embedder: SentenceTransformerEmbedder):
    embedder = SentenceTransformerEmbedder(backend="onnx-int8", threads=2, export_dir=export_dir)
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="module")
def openvino_embedder(export_dir: Path, onnx_embedder: SentenceTransformerEmbedder):
    embedder = SentenceTransformerEmbedder(backend="openvino", threads=2, export_dir=export_dir)
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="module")
def openvino_int8_embedder(export_dir: Path, onnx_embedder: SentenceTransformerEmbedder):
    embedder = SentenceTransformerEmbedder(
        backend="openvino-int8", threads=2, export_dir=export_dir
    )
    embedder.warm_up()
    return embedder


@pytest.mark.slow
class TestTorchEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self, torch_embedder):
        return torch_embedder


@pytest.mark.slow
class TestOnnxEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self, onnx_embedder):
        return onnx_embedder


@pytest.mark.slow
class TestOnnxInt8Embedder(EmbedderContract):
    single_min_cosine = 0.99

    @pytest.fixture
    def embedder(self, int8_embedder):
        return int8_embedder


@pytest.mark.slow
class TestOpenVinoEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self, openvino_embedder):
        return openvino_embedder


@pytest.mark.slow
class TestOpenVinoInt8Embedder(EmbedderContract):
    # Static quantisation: fixed scales, so batching changes nothing (measured cosine 1.0).
    @pytest.fixture
    def embedder(self, openvino_int8_embedder):
        return openvino_int8_embedder


@pytest.mark.slow
def test_openvino_vectors_match_torch(torch_embedder, openvino_embedder, openvino_int8_embedder):
    # openvino computes in bf16 on CPUs that have it: measured min cosine 0.99997 on SciFact
    # (fp32 elsewhere, closer still). Static int8 measured min 0.992 / mean 0.994.
    docs = scifact_docs(24)
    reference = torch_embedder.embed_documents(docs)
    plain = np.sum(openvino_embedder.embed_documents(docs) * reference, axis=1)
    int8 = np.sum(openvino_int8_embedder.embed_documents(docs) * reference, axis=1)
    assert plain.min() >= 0.9995
    assert int8.min() >= 0.98
    assert int8.mean() >= 0.99


@pytest.mark.slow
def test_onnx_vectors_match_torch(torch_embedder, onnx_embedder, int8_embedder):
    # Tolerances: fp32 ONNX is the same arithmetic reordered (measured cosine > 0.99999);
    # dynamic int8 measured min 0.992 / mean 0.995 on SciFact, so 0.98 / 0.99 leaves margin.
    docs = scifact_docs(24)
    reference = torch_embedder.embed_documents(docs)
    fp32 = np.sum(onnx_embedder.embed_documents(docs) * reference, axis=1)
    int8 = np.sum(int8_embedder.embed_documents(docs) * reference, axis=1)
    assert fp32.min() >= 0.999
    assert int8.min() >= 0.98
    assert int8.mean() >= 0.99


@pytest.mark.slow
def test_export_is_offline_cached_and_reused(onnx_embedder, export_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    markers = list(export_dir.glob("*-embedding/export.json"))
    assert len(markers) == 1
    meta = json.loads(markers[0].read_text())
    assert meta["task"] == "embedding"
    onnx_file = markers[0].parent / "model.onnx"
    assert (markers[0].parent / "model_int8.onnx").is_file()
    assert (markers[0].parent / "model_raw.onnx").is_file()
    qdq = onnx.load(str(markers[0].parent / "model_qdq.onnx"), load_external_data=False)
    quantized = {n.name for n in qdq.graph.node if n.op_type == "MatMul"} & {
        consumer.name
        for consumer in qdq.graph.node
        for producer in qdq.graph.node
        if producer.op_type == "DequantizeLinear" and producer.output[0] in consumer.input
    }
    # Q/K/V and FFN-in of each of the 6 layers; never the outlier-prone output projections.
    assert len(quantized) == 6 * 4
    assert not any("/output/dense" in name for name in quantized)
    before = onnx_file.stat().st_mtime_ns
    again = SentenceTransformerEmbedder(backend="onnx", threads=1, export_dir=export_dir)
    again.warm_up()
    assert onnx_file.stat().st_mtime_ns == before  # reused, not re-exported
    np.testing.assert_allclose(
        again.embed_query("reuse"), onnx_embedder.embed_query("reuse"), atol=1e-5
    )


def test_cache_key_names_model_backend_and_length(tmp_path):
    keys = {SentenceTransformerEmbedder(backend=b, export_dir=tmp_path).cache_key for b in BACKENDS}
    assert len(keys) == len(BACKENDS) == 5
    short = SentenceTransformerEmbedder(max_seq_length=128).cache_key
    assert short not in keys and "len=128" in short
    assert bundled_model_path().exists()


def test_length_is_capped_at_the_model_limit():
    # all-MiniLM-L6-v2 was trained with 256 word pieces (sentence_bert_config.json).
    assert SentenceTransformerEmbedder(max_seq_length=4096).max_seq_length == 256


def test_constructor_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigurationError):
        SentenceTransformerEmbedder(backend="onnx")  # no export_dir
    with pytest.raises(ConfigurationError):
        SentenceTransformerEmbedder(backend="tensorrt", export_dir=tmp_path)
    with pytest.raises(ConfigurationError):
        SentenceTransformerEmbedder(batch_size=0)
    with pytest.raises(ConfigurationError):
        SentenceTransformerEmbedder(threads=0)


def test_calibration_texts_come_from_the_sample_kb(tmp_path):
    texts = calibration_texts()
    assert len(texts) >= 200
    assert max(len(t) for t in texts) > 1000  # long inputs are calibrated too
    (tmp_path / "note.md").write_text("too little text to calibrate on, surely")
    with pytest.raises(ModelError):
        calibration_texts(tmp_path)
