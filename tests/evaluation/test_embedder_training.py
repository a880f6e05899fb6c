"""Embedder adaptation: batches without repeated texts, the validation metric on hand-made
vectors, and training on a tiny SciFact train slice producing a model an index can be built
with and searched through."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from evaluation.embedder_training import (
    TrainedEmbedder,
    _batches,
    dense_rescoring_ndcg,
    train_embedder,
)
from evaluation.retrieval_eval import evaluate_retrieval
from evaluation.training_data import Candidate, ValidationQuery
from retrieval.index import IndexLayout
from tests.evaluation.beir_files import write_slice

SCIFACT = Path("/work/shared/data/ir/scifact")


def test_batches_never_repeat_a_text_and_keep_every_pair_they_can() -> None:
    pairs = [("q1", "p1"), ("q2", "p1"), ("q3", "p2"), ("q1", "p3"), ("q4", "p4"), ("q5", "p5")]
    batches = _batches(pairs, 3)
    for batch in batches:
        texts = [t for pair in batch for t in pair]
        assert len(texts) == len(set(texts))
        assert 2 <= len(batch) <= 3
    assert sorted(p for b in batches for p in b) == sorted(pairs)


def test_batches_drop_a_lone_pair_that_has_no_negatives() -> None:
    assert _batches([("q", "p"), ("q", "p2")], 4) == []


class _Vectors:
    """A stand-in SentenceTransformer: fixed unit vectors per text."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = table

    def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
        rows = np.asarray([self.table[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_dense_rescoring_ndcg_reorders_the_candidates_by_the_model() -> None:
    query = ValidationQuery(
        query_id="1",
        text="q",
        qrels={"good": 1},
        candidates=(Candidate(doc_id="bad", text="b"), Candidate(doc_id="good", text="g")),
    )
    agrees = _Vectors({"q": [1, 0], "g": [1, 0.1], "b": [0, 1]})
    disagrees = _Vectors({"q": [1, 0], "g": [0, 1], "b": [1, 0.1]})
    assert dense_rescoring_ndcg([query], agrees, candidates=2) == pytest.approx(1.0)
    # Good document second: DCG 1/log2(3).
    assert dense_rescoring_ndcg([query], disagrees, candidates=2) == pytest.approx(1 / np.log2(3))
    # Only the first candidate is rescored: the order stays as retrieved.
    assert dense_rescoring_ndcg([query], agrees, candidates=1) == pytest.approx(1 / np.log2(3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str, Path]:
    if not SCIFACT.exists():
        pytest.skip("SciFact not available")
    root = tmp_path_factory.mktemp("embedder-train")
    dataset = write_slice(SCIFACT, root / "scifact", n_queries=15, n_docs=40, split="train")
    settings = Settings(data_dir=root / "data")
    report = evaluate_retrieval(settings, dataset, "train", ["bm25"])  # builds the index
    return settings, report.index, dataset


@pytest.fixture(scope="module")
def trained(tiny: tuple[Settings, str, Path]) -> TrainedEmbedder:
    settings, index, dataset = tiny
    return train_embedder(
        settings, index, dataset, epochs=1, batch_size=4, max_length=32, max_pseudo=8, device="cpu"
    )


@pytest.mark.slow
def test_tiny_training_writes_a_model_with_its_card(
    tiny: tuple[Settings, str, Path], trained: TrainedEmbedder
) -> None:
    settings, index, _ = tiny
    model_dir = trained.model_dir
    assert model_dir.parent == settings.data_dir / "models"
    assert (model_dir / "modules.json").is_file() and (model_dir / "model.safetensors").is_file()
    card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    assert card["index"] == index and card["data"]["judged"] > 0
    assert card["validation_queries"] >= 1 and card["history"] and card["steps"] >= 1
    assert 0.0 <= card["base_ndcg_at_10"] <= 1.0
    text = (model_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "CITEWELL_EMBEDDING_MODEL" in text and "## Validation" in text


@pytest.mark.slow
def test_an_index_built_with_the_adapted_model_uses_it(
    tiny: tuple[Settings, str, Path], trained: TrainedEmbedder
) -> None:
    settings, base_index, dataset = tiny
    adapted = settings.model_copy(update={"embedding_model": str(trained.model_dir)})
    report = evaluate_retrieval(adapted, dataset, "train", ["dense"])
    # Another model is another vector space: a separate index, never the base one reused.
    assert report.index != base_index
    assert report.modes["dense"].ndcg_at_10 > 0.0
    layout = IndexLayout(adapted, report.index)
    version = layout.current_version()
    assert version is not None
    assert layout.read_meta(version).embedding_model == str(trained.model_dir)
