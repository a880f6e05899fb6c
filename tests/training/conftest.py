"""The training tests' data: a tiny SciFact train slice with a BM25 index built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.settings import Settings
from citewell.evaluation.retrieval_eval import evaluate_retrieval
from tests.evaluation.beir_files import write_slice


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Settings, str, Path]:
    """Settings, the index name and the dataset folder of 15 train queries over 40 documents;
    one per test module (each trains into its own index)."""
    scifact = shared_data / "ir" / "scifact"
    if not scifact.exists():
        pytest.skip("SciFact not available")
    root = tmp_path_factory.mktemp("train")
    dataset = write_slice(scifact, root / "scifact", n_queries=15, n_docs=40, split="train")
    settings = Settings(data_dir=root / "data")
    report = evaluate_retrieval(settings, dataset, "train", ["bm25"])  # builds the index
    return settings, report.index, dataset
