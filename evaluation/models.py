"""Frozen models for evaluation datasets and reports."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import ConfigDict, Field, PositiveInt

from citewell.core.models import Frozen
from citewell.evaluation.metrics import Gain
from citewell.retrieval.reranker_decision import GateDecision

# The retrieval modes evaluation knows, in report order. "hybrid+rerank" is hybrid search with the
# cross-encoder on; it is skipped (with the reason) when the index has no reranker.
RETRIEVAL_MODES: tuple[str, ...] = ("bm25", "dense", "hybrid", "hybrid+rerank")


class BeirDocument(Frozen):
    doc_id: str
    title: str
    text: str


class BeirQuery(Frozen):
    query_id: str
    text: str


class BeirDataset(Frozen):
    """One split of a BEIR-format collection. ``qrels[query_id][doc_id]`` is the graded
    relevance; ``queries`` holds only the queries judged in this split, in file order."""

    name: str
    split: str
    corpus: tuple[BeirDocument, ...]
    queries: tuple[BeirQuery, ...]
    qrels: Mapping[str, Mapping[str, int]]
    corpus_sha256: str  # over ids, titles and texts in file order; identifies the index to build


class LatencySummary(Frozen):
    p50: float
    p95: float


RECALL_CURVE_KS: tuple[int, ...] = (1, 3, 5, 10, 20, 50, 100)


class ModeMetrics(Frozen):
    """Metrics of one retrieval mode, averaged over the split's judged queries. Serialised with
    the CLI's keys (``ndcg@10``, ...) when dumped ``by_alias``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    ndcg_at_10: float = Field(alias="ndcg@10")
    recall_at_10: float = Field(alias="recall@10")
    recall_at_100: float = Field(alias="recall@100")
    mrr_at_10: float = Field(alias="mrr@10")
    latency_ms: LatencySummary
    queries: int  # queries evaluated
    empty_results: int = 0  # queries that returned no document at all
    # recall@k for k in RECALL_CURVE_KS, for the report's recall curves (drawn over log k, so a
    # saved file's k must be positive)
    recall_curve: dict[PositiveInt, float] = Field(default_factory=dict)


class RetrievalEvalReport(Frozen):
    dataset: str
    split: str
    index: str
    index_version: str | None
    documents: int  # corpus size
    queries: int  # judged queries in the split
    gain: Gain  # nDCG gain function used for graded qrels
    depth: int  # chunks requested per query
    modes: dict[str, ModeMetrics]
    skipped: dict[str, str] = Field(default_factory=dict)  # mode → why it was not run
    index_reused: bool  # the index was already built from this corpus (no ingestion this run)
    finished_at: datetime
    # The recorded decision whether this index's reranker helps (None: no gate decided yet).
    reranker_gate: GateDecision | None = None
    fusion: str | None = None  # the hybrid fusion in force, e.g. "weighted dense=0.4 (tuned)"
