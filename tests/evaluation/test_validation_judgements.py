"""Fusion tuning and the reranker gate decide for every caller of an index, on judgements the
operator names: judgements whose relevant documents the index does not hold (another corpus, an
index built from files rather than the BEIR ids, documents the evaluation cannot see) scored
every candidate 0 and recorded a decision made on nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import citewell.evaluation.fusion_tuning
from citewell.core.errors import EvaluationError
from citewell.core.models import AccessLabel
from citewell.core.settings import Settings
from citewell.evaluation.fusion_tuning import tune_fusion
from citewell.evaluation.models import BeirQuery
from citewell.evaluation.retrieval_eval import eval_label
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.fusion import FUSION_FILE
from citewell.retrieval.index import IndexLayout
from tests.agent.fakes import HashingEmbedder

QUERIES = (
    BeirQuery(query_id="q1", text="tidal energy output"),
    BeirQuery(query_id="q2", text="glacier retreat rate"),
)


def _index(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", index="kb")
    public = eval_label(settings)
    hidden = AccessLabel(classification="public", groups=frozenset({"finance"}))
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        [
            TextDocument(
                doc_id="tides", title="Tides", text="Tidal energy output rises.", label=public
            ),
            TextDocument(
                doc_id="ice", title="Ice", text="Glacier retreat rate doubled.", label=public
            ),
            TextDocument(
                doc_id="ledger", title="Ledger", text="Glacier fund ledger.", label=hidden
            ),
        ],
        index="kb",
        source_name="t",
    )
    return settings


@pytest.mark.parametrize(
    "qrels",
    [
        pytest.param({"q1": {"ghost-1": 1}, "q2": {"ghost-2": 1}}, id="not-in-the-index"),
        pytest.param({"q1": {"ledger": 1}, "q2": {"ledger": 2}}, id="hidden-from-evaluation"),
    ],
)
def test_tuning_on_judgements_naming_no_document_of_the_index_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qrels: dict[str, dict[str, int]]
) -> None:
    settings = _index(tmp_path)
    monkeypatch.setattr(
        citewell.evaluation.fusion_tuning, "build_embedder", lambda settings: HashingEmbedder()
    )
    with pytest.raises(EvaluationError, match=r"none of the .* relevant"):
        tune_fusion(settings, "kb", QUERIES, qrels, judgements="other corpus")
    assert not (IndexLayout(settings, "kb").root / FUSION_FILE).exists()
