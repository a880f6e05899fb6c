"""evaluate_retrieval through the real Ingestor and ServingIndex on small slices of SciFact and
Cranfield (the bundled MiniLM model, CPU)."""

import time

import pytest

from citewell.core.settings import Settings
from citewell.evaluation.retrieval_eval import evaluate_retrieval
from tests.evaluation.beir_files import write_slice

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_scifact_slice_all_modes_then_reuse(tmp_path, shared_data):
    dataset = write_slice(
        shared_data / "ir" / "scifact", tmp_path / "scifact", n_queries=12, n_docs=60
    )
    settings = Settings(data_dir=tmp_path / "data")

    first = evaluate_retrieval(settings, dataset, "test", None)
    assert not first.index_reused
    assert set(first.modes) | set(first.skipped) == {"bm25", "dense", "hybrid", "hybrid+rerank"}
    assert {"bm25", "dense", "hybrid"} <= set(first.modes)
    for mode in ("bm25", "dense", "hybrid"):
        metrics = first.modes[mode]
        assert metrics.queries == 12 and metrics.empty_results == 0
        # 60 documents, every judged one present: a working retriever ranks most relevant
        # documents near the top, a broken one (wrong ids, no aggregation) scores near zero.
        assert metrics.ndcg_at_10 > 0.55, mode
        assert metrics.recall_at_100 >= metrics.recall_at_10
        assert metrics.recall_at_100 > 0.9, mode
    assert first.index_version is not None

    started = time.perf_counter()
    again = evaluate_retrieval(settings, dataset, "test", ["bm25", "dense"])
    assert again.index_reused and again.index == first.index
    assert time.perf_counter() - started < 30
    for mode in ("bm25", "dense"):
        assert again.modes[mode].ndcg_at_10 == pytest.approx(first.modes[mode].ndcg_at_10)


def test_cranfield_slice_with_empty_documents(tmp_path, shared_data):
    cranfield = shared_data / "ir" / "cranfield" / "beir"
    dataset = write_slice(cranfield, tmp_path / "cranfield", n_queries=6, n_docs=30)
    corpus = (dataset / "corpus.jsonl").read_text(encoding="utf-8")
    if '"_id": "471"' not in corpus:  # make sure an empty-text document is part of the slice
        corpus += '{"_id": "471", "title": "", "text": ""}\n'
        (dataset / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data")
    report = evaluate_retrieval(settings, dataset, "test", ["bm25"], gain="linear")
    assert report.modes["bm25"].queries == 6
    assert report.modes["bm25"].ndcg_at_10 > 0.3
    assert report.gain == "linear"
