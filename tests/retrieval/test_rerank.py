from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from citewell.core.errors import ConfigurationError
from citewell.retrieval.embedding import bundled_model_path
from citewell.retrieval.rerank import CrossEncoderReranker, resolve_reranker
from tests.retrieval.contracts.reranker_contract import PASSAGES, QUERY, RerankerContract
from tests.retrieval.model_backends import ALL_BACKENDS, WarmModels


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
def rerankers(ce_dir: Path, export_dir: Path) -> WarmModels[CrossEncoderReranker]:
    return WarmModels(
        lambda backend: CrossEncoderReranker(
            str(ce_dir), backend=backend, threads=2, export_dir=export_dir
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ALL_BACKENDS)
class TestRerankerBackends(RerankerContract):
    @pytest.fixture
    def reranker(self, backend, rerankers):
        return rerankers(backend)

    @pytest.fixture
    def single_atol(self, backend: str) -> float:
        # Dynamic int8 quantises activations per batch.
        return 0.05 if backend == "onnx-int8" else 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "atol"),
    [
        ("onnx", 1e-4),
        # The random head gives logits spread over ~0.1, so int8 is checked on absolute error.
        ("onnx-int8", 0.05),
        # bf16 (where the CPU has it) keeps ~3 significant digits; int8 as for onnx-int8.
        ("openvino", 0.01),
        ("openvino-int8", 0.05),
    ],
)
def test_scores_match_torch(backend, atol, rerankers):
    reference = rerankers("torch").score(QUERY, PASSAGES)
    scores = rerankers(backend).score(QUERY, PASSAGES)
    np.testing.assert_allclose(scores, reference, atol=atol)


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
