from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from citewell.core.errors import ConfigurationError
from citewell.retrieval.embedding import bundled_model_path
from citewell.retrieval.rerank import CrossEncoderReranker, resolve_reranker
from tests.retrieval.contracts.reranker_contract import PASSAGES, QUERY, RerankerContract


def build_cross_encoder(path: Path, layers: int | None = None) -> Path:
    """A real CrossEncoder from the bundled MiniLM encoder with a fresh one-logit head (no
    pretrained cross-encoder ships offline); fine for plumbing and export checks."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(bundled_model_path()), num_labels=1, device="cpu")
    if layers is not None:
        model.model.bert.encoder.layer = model.model.bert.encoder.layer[:layers]
        model.model.config.num_hidden_layers = layers
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("ce") / "minilm-ce")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def torch_reranker(ce_dir: Path) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(str(ce_dir), backend="torch", threads=2)
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="module")
def onnx_reranker(ce_dir: Path, export_dir: Path) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(str(ce_dir), backend="onnx", threads=2, export_dir=export_dir)
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="module")
def int8_reranker(ce_dir: Path, export_dir: Path, onnx_reranker) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(
        str(ce_dir), backend="onnx-int8", threads=2, export_dir=export_dir
    )
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="module")
def openvino_reranker(ce_dir: Path, export_dir: Path, onnx_reranker) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(
        str(ce_dir), backend="openvino", threads=2, export_dir=export_dir
    )
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="module")
def openvino_int8_reranker(ce_dir: Path, export_dir: Path, onnx_reranker) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(
        str(ce_dir), backend="openvino-int8", threads=2, export_dir=export_dir
    )
    reranker.warm_up()
    return reranker


@pytest.mark.slow
class TestTorchReranker(RerankerContract):
    @pytest.fixture
    def reranker(self, torch_reranker):
        return torch_reranker


@pytest.mark.slow
class TestOnnxReranker(RerankerContract):
    @pytest.fixture
    def reranker(self, onnx_reranker):
        return onnx_reranker


@pytest.mark.slow
class TestOnnxInt8Reranker(RerankerContract):
    single_atol = 0.05

    @pytest.fixture
    def reranker(self, int8_reranker):
        return int8_reranker


@pytest.mark.slow
class TestOpenVinoReranker(RerankerContract):
    @pytest.fixture
    def reranker(self, openvino_reranker):
        return openvino_reranker


@pytest.mark.slow
class TestOpenVinoInt8Reranker(RerankerContract):
    @pytest.fixture
    def reranker(self, openvino_int8_reranker):
        return openvino_int8_reranker


@pytest.mark.slow
def test_openvino_scores_match_torch(torch_reranker, openvino_reranker, openvino_int8_reranker):
    reference = torch_reranker.score(QUERY, PASSAGES)
    # bf16 (where the CPU has it) keeps ~3 significant digits; int8 as for onnx-int8.
    np.testing.assert_allclose(openvino_reranker.score(QUERY, PASSAGES), reference, atol=0.01)
    np.testing.assert_allclose(openvino_int8_reranker.score(QUERY, PASSAGES), reference, atol=0.05)


@pytest.mark.slow
def test_onnx_scores_match_torch(torch_reranker, onnx_reranker, int8_reranker):
    reference = torch_reranker.score(QUERY, PASSAGES)
    np.testing.assert_allclose(onnx_reranker.score(QUERY, PASSAGES), reference, atol=1e-4)
    # The random head gives logits spread over ~0.1, so int8 is checked on absolute error.
    np.testing.assert_allclose(int8_reranker.score(QUERY, PASSAGES), reference, atol=0.05)


def test_resolve_prefers_configured_then_trained(tmp_path):
    reranker, reason = resolve_reranker("some/model", tmp_path / "trained", "torch")
    assert reranker is not None and reranker.name == "some/model"
    assert "configured" in reason

    none, reason = resolve_reranker(None, tmp_path / "trained", "torch")
    assert none is None and reason == "no reranker configured or trained for this index"
    assert resolve_reranker(None, None, "torch")[0] is None

    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.json").write_text("{}")
    assert resolve_reranker(None, trained, "torch")[0] is None  # no weights: not a model
    (trained / "model.safetensors").write_bytes(b"x")
    found, reason = resolve_reranker(None, trained, "torch")
    assert found is not None and found.name == str(trained) and "trained" in reason


def test_onnx_backend_needs_export_dir():
    with pytest.raises(ConfigurationError):
        resolve_reranker("m", None, "onnx")
    with pytest.raises(ConfigurationError):
        CrossEncoderReranker("m", batch_size=0)
