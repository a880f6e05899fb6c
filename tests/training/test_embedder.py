"""Embedder adaptation: batches without repeated texts (hard-negative columns included), mined
negatives that are never a positive of their query, the validation metric on hand-made vectors,
and training with a hard negative on a tiny SciFact train slice producing a model an index can
be built with and searched through."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from citewell.core.models import SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir
from citewell.evaluation.retrieval_eval import eval_principal, evaluate_retrieval
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex
from citewell.training.data import (
    Candidate,
    TrainingGroup,
    ValidationQuery,
    build_index_training_data,
    passage_text,
)
from citewell.training.embedder import (
    TrainedEmbedder,
    _batches,
    _examples,
    _relevant,
    dense_rescoring_ndcg,
    train_embedder,
)


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


def test_batches_with_hard_negatives_never_repeat_a_text_in_any_column() -> None:
    examples = [
        ("q1", "p1", "n1"),
        ("q2", "p2", "p1"),  # its negative is q1's positive
        ("q3", "p3", "n1"),  # shares q1's negative
        ("q4", "p4", "n4"),
        ("q5", "n4", "n5"),  # its positive is q4's negative
        ("q6", "p6", "n6"),
    ]
    batches = _batches(examples, 4)
    for batch in batches:
        texts = [t for example in batch for t in example]
        assert len(texts) == len(set(texts))
        assert {len(example) for example in batch} == {3}
    assert sorted(e for b in batches for e in b) == sorted(examples)


def test_batches_keep_a_querys_other_positives_out_of_its_batch() -> None:
    # q1 is judged relevant to p1 and p1b: p1b as q2's negative (or positive) in q1's batch
    # would train q1 away from a relevant passage.
    examples = [("q1", "p1", "n1"), ("q2", "p2", "p1b"), ("q3", "p3", "n3")]
    relevant = {"q1": frozenset({"p1", "p1b"})}
    batches = _batches(examples, 3, relevant)
    for batch in batches:
        queries = {example[0] for example in batch}
        assert not ("q1" in queries and "q2" in queries)
    assert len(_batches(examples, 3)) == 1  # without the judgements they would share one


def _group(query: str, positive: str, *negatives: str) -> TrainingGroup:
    return TrainingGroup(query=query, positive=positive, negatives=negatives, source="judged")


def test_examples_never_use_a_positive_of_the_query_as_its_negative() -> None:
    groups = [
        _group("q1", "p1", "p2", "n1"),  # p2 is another judged positive of q1
        _group("q1", "p2", "p1"),  # only positives mined: no negative left
        _group("q2", "p3", "n2", "n3"),
        _group("q2", "p3", "n4"),  # the same pair again
    ]
    relevant = _relevant(groups)
    with_one = _examples(groups, 1, seed=1)
    assert sorted(with_one) == [("q1", "p1", "n1"), ("q2", "p3", "n2")]
    # With two columns q1 has one clean negative only and is left out.
    assert _examples(groups, 2, seed=1) == [("q2", "p3", "n2", "n3")]
    for query, _, *negatives in with_one:
        assert relevant[query].isdisjoint(negatives)
    assert sorted(_examples(groups, 0, seed=1)) == [("q1", "p1"), ("q1", "p2"), ("q2", "p3")]


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
def trained(tiny: tuple[Settings, str, Path]) -> TrainedEmbedder:
    settings, index, dataset = tiny
    return train_embedder(
        settings,
        index,
        dataset,
        epochs=1,
        batch_size=4,
        hard_negatives=1,
        max_length=32,
        max_pseudo=8,
        device="cpu",
    )


@pytest.mark.slow
def test_mined_negatives_are_hybrid_candidates_from_unjudged_documents(
    tiny: tuple[Settings, str, Path],
) -> None:
    settings, index, dataset_dir = tiny
    dataset = load_beir(dataset_dir, "train")
    data = build_index_training_data(
        settings, index, dataset, negatives=2, max_pseudo=0, indexed_text=True
    )
    texts = {q.text: q.query_id for q in dataset.queries}
    examples = _examples(data.groups, 1, seed=13)
    assert examples
    service = ServingIndex(settings, index)
    try:
        for query, _, negative in examples:
            request = SearchRequest(query=query, k=30, mode=SearchMode.HYBRID, rerank=False)
            result = service.search(eval_principal(settings), request)
            doc_of = {passage_text(s.chunk, True): s.chunk.doc_id for s in result.results}
            judged = {d for d, grade in dataset.qrels[texts[query]].items() if grade > 0}
            assert doc_of[negative] not in judged
    finally:
        service.close()


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
    assert card["parameters"]["hard_negatives"] == 1
    text = (model_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "CITEWELL_EMBEDDING_MODEL" in text and "## Validation" in text
    assert "1 mined hard negative" in text


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
