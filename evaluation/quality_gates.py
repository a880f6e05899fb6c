"""Quality gates on a published index: a source's golden questions, scored and held to floors.

Each golden question names the document(s) that answer it (paths or globs relative to the source
folder, see ``evaluation.golden_set``). The questions are asked through ``ServingIndex.search``
as the API would, by a principal that sees every labelled document of the index; a question
scores a hit when an expected document is among the top k documents, and its reciprocal rank
(``evaluation.metrics``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import unquote

from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.core.models import Frozen, Principal, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.golden_set import (
    load_retrieval_questions,
    matches_relative_path,
)
from citewell.evaluation.metrics import mean, mrr_at_k, recall_at_k
from citewell.ingestion.sources_config import EvaluationConfig, SourceConfig
from citewell.retrieval.access import maintenance_principal
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.manifest import Manifest
from citewell.retrieval.protocols import Embedder, SearchService
from citewell.retrieval.service import ServingIndex

logger = logging.getLogger(__name__)

_EVAL_PRINCIPAL = "citewell-quality-gate"


class FloorBreach(Frozen):
    metric: str
    value: float
    floor: float


class EvaluationOutcome(Frozen):
    source: str
    index: str
    index_version: str | None
    questions: int
    k: int
    metrics: dict[str, float]  # "hit_rate", "mrr"
    floors: dict[str, float]
    breaches: tuple[FloorBreach, ...] = ()
    finished_at: datetime

    @property
    def passed(self) -> bool:
        return not self.breaches


class MetricFloorError(EvaluationError):
    """A metric fell below its configured floor; ``outcome`` holds every metric."""

    def __init__(self, outcome: EvaluationOutcome) -> None:
        failing = ", ".join(f"{b.metric}={b.value:.3f} < {b.floor:.3f}" for b in outcome.breaches)
        super().__init__(f"index {outcome.index!r}: metric below floor: {failing}")
        self.outcome = outcome


def _principal(settings: Settings, index: str) -> tuple[Principal, str | None]:
    """Top clearance and every group the published version's documents carry."""
    layout = IndexLayout(settings, index)
    version = layout.current_version()
    if version is None:
        return maintenance_principal(_EVAL_PRINCIPAL, settings.scheme, ()), None
    manifest = Manifest(layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        groups = frozenset(g for doc in manifest.iter_documents() for g in doc.groups)
    finally:
        manifest.close()
    return maintenance_principal(_EVAL_PRINCIPAL, settings.scheme, groups), version


def score_golden(
    service: SearchService,
    principal: Principal,
    config: EvaluationConfig,
    source_root_uri: str,
) -> tuple[dict[str, float], str | None]:
    """Mean hit rate and MRR at ``config.k`` over the golden set, and the version searched."""
    questions = load_retrieval_questions(config.golden)
    hits: list[float] = []
    reciprocal: list[float] = []
    version: str | None = None
    prefix = source_root_uri.rstrip("/") + "/"
    for question in questions:
        # Chunks, not documents: ask for more so k distinct documents usually come back.
        request = SearchRequest(
            query=question.question, k=min(100, config.k * 4), mode=config.mode, rerank=False
        )
        result = service.search(principal, request)
        version = version or result.index_version
        # Chunks carry file URIs (percent-encoded); golden files name plain relative paths, or
        # globs, so the judgements are the retrieved documents that match one.
        ranked: list[str] = []
        qrels: dict[str, int] = {}
        for scored in result.results:
            uri = scored.chunk.source_uri
            if uri.startswith(prefix):
                relative = unquote(uri.removeprefix(prefix))
                ranked.append(relative)
                if matches_relative_path(question, relative):
                    qrels[relative] = 1
            else:
                ranked.append(uri)
        hits.append(1.0 if recall_at_k(ranked, qrels, config.k) > 0 else 0.0)
        reciprocal.append(mrr_at_k(ranked, qrels, config.k))
    return {"hit_rate": mean(hits), "mrr": mean(reciprocal)}, version


def evaluate(
    settings: Settings,
    source: SourceConfig,
    service: SearchService | None = None,
    embedder: Embedder | None = None,
) -> EvaluationOutcome:
    """Run the source's configured evaluation on its published index; raise
    :class:`MetricFloorError` (listing each failing metric) when one is below its floor."""
    config = source.evaluation
    if config is None:
        raise EvaluationError(f"source {source.name!r} has no evaluation configured")
    principal, version = _principal(settings, source.index)
    owned = service is None
    serving = service or ServingIndex(settings, source.index, embedder=embedder)
    try:
        root = source.path.resolve().as_uri() if source.path is not None else source.uri
        metrics, seen = score_golden(serving, principal, config, root)
    finally:
        if owned and isinstance(serving, ServingIndex):
            serving.close()
    breaches = tuple(
        FloorBreach(metric=name, value=metrics[name], floor=floor)
        for name, floor in sorted(config.floors.items())
        if metrics[name] < floor
    )
    outcome = EvaluationOutcome(
        source=source.name,
        index=source.index,
        index_version=seen or version,
        questions=len(load_retrieval_questions(config.golden)),
        k=config.k,
        metrics=metrics,
        floors=dict(config.floors),
        breaches=breaches,
        finished_at=datetime.now(UTC),
    )
    log_event(
        logger,
        logging.INFO if outcome.passed else logging.ERROR,
        "evaluation.gate",
        source=source.name,
        index=source.index,
        version=outcome.index_version,
        passed=outcome.passed,
        **{name.replace("@", "_at_"): round(value, 4) for name, value in metrics.items()},
    )
    if breaches:
        raise MetricFloorError(outcome)
    return outcome
