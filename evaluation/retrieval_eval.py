"""Retrieval evaluation on a BEIR-format collection through the real ingestion and search code.

The corpus is ingested once into a throwaway index whose default name carries a fingerprint of
the corpus and of the settings that shape the index, so a re-run with the same inputs reuses the
built index and only runs the queries. Every mode is then queried through
``ServingIndex.search`` exactly as the API would, with a principal that sees the whole index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError
from tqdm import tqdm

from citewell.core.errors import EvaluationError, IndexNotFoundError
from citewell.core.logging import log_event
from citewell.core.models import (
    AccessLabel,
    Frozen,
    IngestReport,
    Principal,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir
from citewell.evaluation.metrics import Gain, mean, mrr_at_k, ndcg_at_k, percentile, recall_at_k
from citewell.evaluation.models import (
    RECALL_CURVE_KS,
    RETRIEVAL_MODES,
    BeirDataset,
    BeirDocument,
    BeirQuery,
    LatencySummary,
    ModeMetrics,
    RetrievalEvalReport,
)
from citewell.retrieval.access import maintenance_principal, scope_for
from citewell.retrieval.embedding import backend_tag
from citewell.retrieval.fusion import describe_fusion
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.reranker_decision import load_gate

logger = logging.getLogger(__name__)

# SearchRequest caps k at 100; BEIR's recall@100 needs exactly that depth. Results are chunks, so
# a document split into several chunks can leave slightly fewer than 100 distinct documents.
SEARCH_DEPTH = 100
EVAL_GROUP = "citewell-evaluation"
EVAL_PRINCIPAL = "citewell-evaluation"

_MODE_REQUESTS: dict[str, tuple[SearchMode, bool]] = {
    "bm25": (SearchMode.BM25, False),
    "dense": (SearchMode.DENSE, False),
    "hybrid": (SearchMode.HYBRID, False),
    "hybrid+rerank": (SearchMode.HYBRID, True),
}


class EvalSearchIndex(Protocol):
    """The part of ``retrieval.service.ServingIndex`` evaluation uses."""

    def ready(self) -> bool: ...

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult: ...

    def close(self) -> None: ...


class CorpusWriter(Protocol):
    """Writes BEIR documents into a named index as public documents."""

    def __call__(
        self, documents: Iterable[BeirDocument], index: str, source_name: str
    ) -> IngestReport: ...


IndexOpener = Callable[[str], EvalSearchIndex]


class EvalIndexMarker(Frozen):
    """Written next to the index once ingestion succeeded; a matching fingerprint means the
    index holds exactly this corpus, built with these settings."""

    index: str
    dataset: str
    fingerprint: str
    documents: int
    index_version: str | None
    built_at: datetime


def eval_label(settings: Settings) -> AccessLabel:
    """Public (least sensitive level), visible to the default groups and the evaluation group."""
    return AccessLabel(
        classification=settings.scheme.levels[0],
        groups=frozenset({EVAL_GROUP, *settings.default_groups}),
    )


def eval_principal(settings: Settings) -> Principal:
    return maintenance_principal(EVAL_PRINCIPAL, settings.scheme, {EVAL_GROUP})


def index_fingerprint(settings: Settings, dataset: BeirDataset) -> str:
    """Changes whenever the corpus or a setting that changes what gets indexed changes."""
    from citewell.ingestion.pipeline import Ingestor  # lazily, as in IngestorCorpusWriter

    label = eval_label(settings)
    material = {
        "corpus": dataset.corpus_sha256,
        "embedding_model": settings.embedding_model,
        "embedding_backend": backend_tag(settings.embedding_backend),
        "embedding_max_seq_length": settings.embedding_max_seq_length,
        # Sizes, overlap, headers, recipe version: a differently chunked index is another one.
        "chunk_recipe": Ingestor(settings).chunk_recipe,
        "bm25_stemming": settings.bm25_stemming,
        # Groups sorted: a frozenset dumps in hash order, which changes from process to process.
        "label": [label.classification, sorted(label.groups)],
    }
    blob = json.dumps(material, sort_keys=True, default=sorted)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def default_index_name(dataset: BeirDataset, fingerprint: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset.name).strip("-.")[:40] or "dataset"
    return f"eval-{slug}-{fingerprint[:10]}"


class IngestorCorpusWriter:
    """Ingests through ``ingestion.pipeline.Ingestor.ingest_texts`` (imported lazily so that
    evaluation's pure parts load without the model stack)."""

    def __init__(self, settings: Settings, progress: bool = False) -> None:
        self._settings = settings
        self._progress = progress

    def __call__(
        self, documents: Iterable[BeirDocument], index: str, source_name: str
    ) -> IngestReport:
        from citewell.ingestion.pipeline import Ingestor, TextDocument

        label = eval_label(self._settings)
        texts = (
            TextDocument(doc_id=doc.doc_id, title=doc.title, text=doc.text, label=label)
            for doc in documents
        )
        report: IngestReport = Ingestor(self._settings).ingest_texts(
            texts, index=index, source_name=source_name, progress=self._progress
        )
        return report


def _open_serving_index(settings: Settings) -> IndexOpener:
    def opener(index: str) -> EvalSearchIndex:
        from citewell.retrieval.service import open_search_service

        service: EvalSearchIndex = open_search_service(settings, index)
        return service

    return opener


def _marker_path(settings: Settings, index: str) -> Path:
    return settings.data_dir / "evaluation" / f"{index}.json"


def _read_marker(settings: Settings, index: str) -> EvalIndexMarker | None:
    path = _marker_path(settings, index)
    if not path.is_file():
        return None
    try:
        return EvalIndexMarker.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        log_event(logger, logging.WARNING, "evaluation.marker_unreadable", path=str(path))
        del exc  # an unreadable marker only means "not known to be built": rebuild
        return None


def _write_marker(settings: Settings, marker: EvalIndexMarker) -> None:
    path = _marker_path(settings, marker.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(marker.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)


def _index_exists(opener: IndexOpener, index: str) -> bool:
    try:
        service = opener(index)
    except IndexNotFoundError:
        return False
    try:
        return service.ready()
    finally:
        service.close()


def validate_modes(modes: Sequence[str] | None) -> tuple[str, ...]:
    """Modes in report order; ``None`` or empty means all. Unknown names raise."""
    if not modes:
        return RETRIEVAL_MODES
    unknown = sorted(set(modes) - set(RETRIEVAL_MODES))
    if unknown:
        raise EvaluationError(
            f"unknown retrieval mode(s) {', '.join(unknown)}; known: {', '.join(RETRIEVAL_MODES)}"
        )
    return tuple(mode for mode in RETRIEVAL_MODES if mode in set(modes))


def document_ranking(result: SearchResult) -> list[str]:
    """Chunk results → documents ranked by their best chunk, since BEIR judges documents.

    Uses result order rather than comparing ``score`` values: after reranking, the head carries
    cross-encoder scores and the tail fused scores, which are not on one scale."""
    return list(dict.fromkeys(scored.chunk.doc_id for scored in result.results))


def judged_queries(
    queries: Sequence[BeirQuery], qrels: Mapping[str, Mapping[str, int]], purpose: str
) -> list[BeirQuery]:
    """The queries with at least one relevant judgement; none is an error naming ``purpose``."""
    judged = [q for q in queries if any(g > 0 for g in qrels.get(q.query_id, {}).values())]
    if not judged:
        raise EvaluationError(f"{purpose} needs at least one judged validation query")
    return judged


def judged_in_index(
    settings: Settings,
    index: str,
    queries: Sequence[BeirQuery],
    qrels: Mapping[str, Mapping[str, int]],
    purpose: str,
) -> list[BeirQuery]:
    """:func:`judged_queries`, refusing judgements none of whose relevant documents the
    published ``index`` holds where the evaluation principal can see them: every candidate would
    score 0 (judgements for another corpus, an index of files rather than the dataset's ids) and
    the decision recorded for every caller would rest on nothing."""
    from citewell.evaluation.published import read_published_manifest

    judged = judged_queries(queries, qrels, purpose)
    published = read_published_manifest(settings, index)
    if published is None:
        raise EvaluationError(f"index {index!r} has no published version; ingest it first")
    scope = scope_for(eval_principal(settings), settings.scheme, settings.default_groups)
    visible = {
        doc.doc_id
        for doc in published.documents
        if doc.labelled and scope.allows(doc.classification_rank, doc.groups)
    }
    relevant = {doc for q in judged for doc, grade in qrels[q.query_id].items() if grade > 0}
    if not relevant & visible:
        raise EvaluationError(
            f"{purpose}: none of the {len(relevant)} documents the judgements call relevant is "
            f"in index {index!r} where evaluation can see it (judgements for another corpus, or "
            "an index not built from this dataset by `citewell eval retrieval`?)"
        )
    return judged


def hybrid_ndcg_at_10(
    service: EvalSearchIndex,
    settings: Settings,
    query: BeirQuery,
    judged: Mapping[str, int],
    *,
    rerank: bool = False,
) -> tuple[float, SearchResult]:
    """nDCG@10 of one hybrid search at the evaluation's depth, and the result it scored."""
    request = SearchRequest(
        query=query.text[: settings.max_query_chars],
        k=SEARCH_DEPTH,
        mode=SearchMode.HYBRID,
        rerank=rerank,
    )
    result = service.search(eval_principal(settings), request)
    return ndcg_at_k(document_ranking(result), judged, 10), result


def _ensure_index(
    settings: Settings,
    dataset: BeirDataset,
    index_name: str | None,
    writer: CorpusWriter,
    opener: IndexOpener,
) -> tuple[str, bool]:
    """Build the evaluation index unless a matching one exists. Returns (index, reused)."""
    fingerprint = index_fingerprint(settings, dataset)
    default_name = default_index_name(dataset, fingerprint)
    index = index_name or default_name
    marker = _read_marker(settings, index)
    if marker is not None and marker.fingerprint == fingerprint:
        log_event(logger, logging.INFO, "evaluation.index_reused", index=index)
        return index, True
    if marker is not None:
        raise EvaluationError(
            f"index {index!r} was built from another corpus or with other settings; "
            "choose another --index or leave it out"
        )
    # Never write BEIR documents into an index evaluation did not create. A default-named index
    # without a marker is an interrupted evaluation build; ingesting again resumes it.
    if index != default_name and _index_exists(opener, index):
        raise EvaluationError(
            f"index {index!r} already exists and was not built by evaluation; "
            "refusing to add evaluation documents to it"
        )
    started = time.perf_counter()
    report = writer(dataset.corpus, index, f"beir-{dataset.name}")
    log_event(
        logger,
        logging.INFO,
        "evaluation.index_built",
        index=index,
        documents=len(dataset.corpus),
        failed=len(report.failed),
        chunks=report.chunks_written,
        seconds=round(time.perf_counter() - started, 1),
    )
    indexed = len(report.added) + len(report.updated) + len(report.unchanged)
    if indexed == 0:
        raise EvaluationError(f"ingesting {dataset.name} indexed no document")
    _write_marker(
        settings,
        EvalIndexMarker(
            index=index,
            dataset=dataset.name,
            fingerprint=fingerprint,
            documents=indexed,
            index_version=report.index_version,
            built_at=datetime.now(UTC),
        ),
    )
    return index, False


def _run_mode(
    settings: Settings,
    service: EvalSearchIndex,
    dataset: BeirDataset,
    mode: str,
    gain: Gain,
    progress: bool,
) -> tuple[ModeMetrics | None, str | None, str | None]:
    """Metrics for one mode, or the reason it was skipped; plus the index version seen."""
    search_mode, rerank = _MODE_REQUESTS[mode]
    principal = eval_principal(settings)
    ndcg: list[float] = []
    recall10: list[float] = []
    recall100: list[float] = []
    mrr: list[float] = []
    latencies: list[float] = []
    empty = 0
    version: str | None = None
    queries = tqdm(
        dataset.queries, desc=mode, unit="q", file=sys.stderr, disable=not progress, leave=True
    )
    curve: dict[int, list[float]] = {k: [] for k in RECALL_CURVE_KS}
    for query in queries:
        request = SearchRequest(
            query=query.text[: settings.max_query_chars],
            k=SEARCH_DEPTH,
            mode=search_mode,
            rerank=rerank,
        )
        started = time.perf_counter()
        result = service.search(principal, request)
        latencies.append((time.perf_counter() - started) * 1000.0)
        if rerank and not result.reranked:
            # Reranking is off for the whole index (no model): nothing to measure for this mode.
            return None, result.rerank_note or "no reranker available for this index", version
        version = version or result.index_version
        ranked = document_ranking(result)
        empty += not ranked
        judged = dataset.qrels[query.query_id]
        ndcg.append(ndcg_at_k(ranked, judged, 10, gain))
        recall10.append(recall_at_k(ranked, judged, 10))
        recall100.append(recall_at_k(ranked, judged, 100))
        for k in RECALL_CURVE_KS:
            curve[k].append(recall_at_k(ranked, judged, k))
        mrr.append(mrr_at_k(ranked, judged, 10))
    if not latencies:
        return None, "the split has no judged queries", version
    metrics = ModeMetrics(
        ndcg_at_10=mean(ndcg),
        recall_at_10=mean(recall10),
        recall_at_100=mean(recall100),
        mrr_at_10=mean(mrr),
        latency_ms=LatencySummary(p50=percentile(latencies, 50), p95=percentile(latencies, 95)),
        queries=len(latencies),
        empty_results=empty,
        recall_curve={k: mean(values) for k, values in curve.items()},
    )
    return metrics, None, version


def evaluate_retrieval(
    settings: Settings,
    dataset_dir: Path,
    split: str,
    modes: Sequence[str] | None = None,
    index_name: str | None = None,
    progress: bool = False,
    *,
    gain: Gain = "exponential",
    writer: CorpusWriter | None = None,
    opener: IndexOpener | None = None,
) -> RetrievalEvalReport:
    """Evaluate every requested mode on one split of a BEIR folder.

    ``writer`` and ``opener`` default to the real ``Ingestor`` and ``open_search_service``; tests
    pass doubles. Raises ``EvaluationError`` for malformed datasets or unusable index names and
    lets ``StoreUnavailableError`` through (an evaluation must not report partial results).
    """
    selected = validate_modes(modes)
    dataset = load_beir(dataset_dir, split)
    writer = writer or IngestorCorpusWriter(settings, progress=progress)
    opener = opener or _open_serving_index(settings)
    index, reused = _ensure_index(settings, dataset, index_name, writer, opener)

    results: dict[str, ModeMetrics] = {}
    skipped: dict[str, str] = {}
    version: str | None = None
    service = opener(index)
    try:
        for mode in selected:
            metrics, reason, seen_version = _run_mode(
                settings, service, dataset, mode, gain, progress
            )
            version = version or seen_version
            if metrics is not None:
                results[mode] = metrics
                log_event(
                    logger,
                    logging.INFO,
                    "evaluation.mode_done",
                    dataset=dataset.name,
                    mode=mode,
                    ndcg_at_10=round(metrics.ndcg_at_10, 4),
                    p50_ms=round(metrics.latency_ms.p50, 1),
                )
            else:
                skipped[mode] = reason or "skipped"
                log_event(logger, logging.INFO, "evaluation.mode_skipped", mode=mode, reason=reason)
    finally:
        service.close()

    return RetrievalEvalReport(
        dataset=dataset.name,
        split=split,
        index=index,
        index_version=version,
        documents=len(dataset.corpus),
        queries=len(dataset.queries),
        gain=gain,
        depth=SEARCH_DEPTH,
        modes=results,
        skipped=skipped,
        index_reused=reused,
        finished_at=datetime.now(UTC),
        reranker_gate=load_gate(IndexLayout(settings, index).rerankers_dir),
        fusion=describe_fusion(settings, IndexLayout(settings, index).root),
    )
