"""Choose an index's fusion on its validation judgements and record it (``fusion.json``).

A convex combination of min-max normalised scores ranks better than RRF here even untuned, and
better still once its dense weight is fitted to the collection (Bruch et al., "An Analysis of
Fusion Functions for Hybrid Retrieval", 2023). Measured on SciFact's train holdout (nDCG@10):
RRF 0.751, weighted dense 0.5 0.769, weighted dense 0.4 0.773. The grid is small and the validation
queries are never an evaluation split, so the choice cannot be fitted to a test set.

Every fusion is also tried with part of its lexical evidence from the document-level BM25 leg
(``FusionChoice.document_share``): it helps where documents are split into many chunks that
rarely repeat what the document is about (a filing's company), and changes little where a
document is one chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.core.models import FusionMethod
from citewell.core.settings import Settings
from citewell.evaluation.metrics import mean
from citewell.evaluation.models import BeirQuery
from citewell.evaluation.retrieval_eval import hybrid_ndcg_at_10, judged_in_index
from citewell.retrieval.factory import build_embedder
from citewell.retrieval.fusion import FusionChoice, TunedFusion, save_tuned_fusion, settings_fusion
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.protocols import Embedder

logger = logging.getLogger(__name__)

METRIC = "ndcg@10"
DEFAULT_MIN_GAIN = 0.005
DENSE_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DOCUMENT_SHARES = (0.0, 0.25, 0.5, 0.75)


def candidate_fusions(baseline: FusionChoice) -> list[FusionChoice]:
    """The baseline first (ties keep it), then RRF k=60 and the weighted grid, each without and
    with the document leg."""
    grid = [
        choice
        for doc in DOCUMENT_SHARES
        for choice in (
            FusionChoice(method=FusionMethod.RRF, rrf_k=60, document_share=doc),
            *(
                FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=w, document_share=doc)
                for w in DENSE_WEIGHTS
            ),
        )
    ]
    return [baseline, *(c for c in grid if c != baseline)]


def score_fusion(
    settings: Settings,
    index: str,
    choice: FusionChoice,
    queries: Sequence[BeirQuery],
    qrels: Mapping[str, Mapping[str, int]],
    embedder: Embedder | None = None,
) -> float:
    """Mean nDCG@10 of hybrid search with ``choice``, through the serving code."""
    from citewell.retrieval.service import ServingIndex

    service = ServingIndex(settings, index, fusion=choice, embedder=embedder)
    try:
        return mean(
            [hybrid_ndcg_at_10(service, settings, q, qrels[q.query_id])[0] for q in queries]
        )
    finally:
        service.close()


def tune_fusion(
    settings: Settings,
    index: str,
    queries: Sequence[BeirQuery],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    judgements: str,
    min_gain: float = DEFAULT_MIN_GAIN,
    save: bool = True,
) -> TunedFusion:
    """Score every candidate fusion on the judged ``queries`` and keep the best one only if it
    beats the settings' fusion by ``min_gain`` (noise on a few hundred queries is about that
    size); record the decision in the index folder, where serving picks it up."""
    if min_gain < 0:
        raise EvaluationError("min_gain must not be negative")
    judged = judged_in_index(settings, index, queries, qrels, "fusion tuning")
    layout = IndexLayout(settings, index)
    baseline = settings_fusion(settings)
    scores: dict[str, float] = {}
    best, best_score, baseline_score = baseline, -1.0, -1.0
    # One embedder for every candidate: the queries are embedded once, not once per fusion.
    embedder = build_embedder(settings)
    for choice in candidate_fusions(baseline):
        score = score_fusion(settings, index, choice, judged, qrels, embedder)
        scores[choice.describe()] = score
        log_event(logger, logging.INFO, "fusion.candidate", fusion=choice.describe(), ndcg=score)
        if choice == baseline:
            baseline_score = score
        if score > best_score:
            best, best_score = choice, score
    if best != baseline and best_score - baseline_score >= min_gain:
        chosen, chosen_score = best, best_score
        reason = (
            f"{best.describe()} {best_score:.4f} beats {baseline.describe()} "
            f"{baseline_score:.4f} by {best_score - baseline_score:.4f} on {len(judged)} queries"
        )
    else:
        chosen, chosen_score = baseline, baseline_score
        reason = (
            f"kept {baseline.describe()} {baseline_score:.4f}: the best alternative "
            f"{best.describe()} {best_score:.4f} does not beat it by {min_gain}"
        )
    tuned = TunedFusion(
        choice=chosen,
        reason=reason,
        metric=METRIC,
        baseline=baseline,
        baseline_score=baseline_score,
        chosen_score=chosen_score,
        min_gain=min_gain,
        candidates=scores,
        judgements=judgements,
        decided_at=datetime.now(UTC),
    )
    if save:
        save_tuned_fusion(layout.root, tuned)
    log_event(logger, logging.INFO, "fusion.tuned", index=index, fusion=chosen.describe())
    return tuned
