"""The rebuild smoke test: a source's golden questions asked of a staged version before it is
published (``ingestion.refresh.rebuild`` runs the check it is given; the entry points give this
one), and the check of a source's golden files before any work (the DAGs' ``check_inputs``).
"""

from __future__ import annotations

from pathlib import Path

from citewell.core.models import ClassificationScheme, SearchFilters
from citewell.core.settings import Settings
from citewell.evaluation.golden_set import (
    GoldenQuestion,
    load_retrieval_questions,
    matches_relative_path,
)
from citewell.ingestion.refresh import RebuildReport, RebuildValidationError, rebuild
from citewell.ingestion.sources import S3Access
from citewell.ingestion.sources_config import SourceConfig
from citewell.retrieval.access import maintenance_principal, scope_for
from citewell.retrieval.index import IndexWriter
from citewell.retrieval.protocols import Embedder

SMOKE_PRINCIPAL = "citewell-rebuild-smoke"


class GoldenSmokeTest:
    """Implements ``ingestion.refresh.StagedVersionCheck``: ask each golden question of the
    staged version (dense and BM25 legs, a scope that sees every labelled document) and count
    those whose expected document is in either top ``k``; fewer than ``min_hit_rate`` refuses
    the version."""

    def __init__(
        self,
        questions: tuple[GoldenQuestion, ...],
        k: int,
        min_hit_rate: float,
        scheme: ClassificationScheme,
    ) -> None:
        self.questions, self.k, self.min_hit_rate, self.scheme = questions, k, min_hit_rate, scheme

    def __call__(self, writer: IndexWriter, embedder: Embedder) -> tuple[int, int]:
        documents = writer.manifest.documents()
        groups = frozenset(g for doc in documents.values() for g in doc.groups)
        principal = maintenance_principal(SMOKE_PRINCIPAL, self.scheme, groups)
        scope = scope_for(principal, self.scheme, ())
        path_of = {doc_id: doc.relative_path for doc_id, doc in documents.items()}
        hits = 0
        for question in self.questions:
            found: set[str] = set()
            vector = embedder.embed_query(question.question)
            for chunk, _ in writer.vectors.search(vector, scope, SearchFilters(), self.k):
                found.add(path_of.get(chunk.doc_id, ""))
            lexical = writer.lexical.search(question.question, scope, SearchFilters(), self.k)
            for chunk in writer.vectors.get_chunks([chunk_id for chunk_id, _ in lexical]):
                found.add(path_of.get(chunk.doc_id, ""))
            if any(matches_relative_path(question, path) for path in found):
                hits += 1
        total = len(self.questions)
        if not total or hits / total < self.min_hit_rate:
            raise RebuildValidationError(
                f"retrieval smoke test: {hits} of {total} golden questions found their "
                f"document in the top {self.k} (need {self.min_hit_rate:.0%})"
            )
        return hits, total


def rebuild_smoke_test(
    settings: Settings, source: SourceConfig, golden: Path | None = None
) -> GoldenSmokeTest | None:
    """The smoke test for a rebuild of ``source``: on ``golden``, else the source's rebuild (or
    evaluation) golden set; None when it names none. Reads the golden set now, so a bad file
    fails before the rebuild starts (``GoldenSetError`` naming file and line)."""
    golden = golden or source.smoke_golden
    if golden is None:
        return None
    questions = load_retrieval_questions(golden)
    rules = source.rebuild
    return GoldenSmokeTest(questions, rules.k, rules.min_hit_rate, settings.scheme)


def smoke_tested_rebuild(
    settings: Settings,
    source: SourceConfig,
    plan_path: Path,
    *,
    embedder: Embedder | None = None,
    access: S3Access | None = None,
) -> RebuildReport:
    """``ingestion.refresh.rebuild`` with the source's golden-set smoke test (the rebuild DAG's
    step): a version that fails it is not published."""
    smoke_test = rebuild_smoke_test(settings, source)
    return rebuild(settings, source, plan_path, smoke_test, embedder=embedder, access=access)


def check_golden_sets(source: SourceConfig) -> None:
    """Read the golden sets ``source`` names (rebuild and evaluation); a bad one raises
    ``GoldenSetError`` naming the file and the line."""
    for golden in {source.smoke_golden, source.evaluation.golden if source.evaluation else None}:
        if golden is not None:
            load_retrieval_questions(golden)
