"""The reranker gate: enable a reranker for an index only where it beats hybrid search on the
index's validation judgements, and record the decision with its numbers
(``retrieval.reranker_decision``).

"Reranking must never make results worse than not reranking": anything short of hybrid plus
``min_gain`` nDCG@10 disables the reranker, and serving then answers ``reranked: false`` with
the gate's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.core.settings import Settings
from citewell.evaluation.beir import HoldoutPart, holdout_part, load_beir, split_holdout
from citewell.evaluation.metrics import mean
from citewell.evaluation.models import BeirQuery
from citewell.evaluation.retrieval_eval import hybrid_ndcg_at_10, judged_in_index
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.protocols import Reranker
from citewell.retrieval.reranker_decision import GateDecision, save_gate

logger = logging.getLogger(__name__)

DEFAULT_MIN_GAIN = 0.005
METRIC = "ndcg@10"


def holdout_judgements(
    dataset_dir: Path, fraction: float = 0.2, seed: int = 13, part: HoldoutPart = "all"
) -> tuple[tuple[BeirQuery, ...], dict[str, Mapping[str, int]]]:
    """The validation holdout carved out of the train split (the same one training uses), or
    one of its halves (``holdout_part``: the reranker gate decides on ``gate``)."""
    dataset = load_beir(dataset_dir, "train")
    _, holdout = split_holdout(dataset.qrels, fraction, seed)
    keep = set(holdout_part(holdout, part, seed))
    queries = tuple(q for q in dataset.queries if q.query_id in keep)
    return queries, {q.query_id: dataset.qrels[q.query_id] for q in queries}


def decide_gate(
    settings: Settings,
    index: str,
    reranker: Reranker,
    queries: Sequence[BeirQuery],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    min_gain: float = DEFAULT_MIN_GAIN,
    judgements: str = "validation",
    save: bool = True,
) -> GateDecision:
    """Compare hybrid with hybrid + ``reranker`` (nDCG@10 through the serving index) and record
    the decision under the index's rerankers folder, keyed by ``reranker.name``."""
    from citewell.retrieval.service import ServingIndex

    if min_gain < 0:
        raise EvaluationError("min_gain must not be negative")
    judged = judged_in_index(settings, index, queries, qrels, "the gate")
    service = ServingIndex(settings, index, reranker=reranker)
    plain: list[float] = []
    reranked: list[float] = []
    try:
        for query in judged:
            for rerank, values in ((False, plain), (True, reranked)):
                ndcg, result = hybrid_ndcg_at_10(
                    service, settings, query, qrels[query.query_id], rerank=rerank
                )
                if rerank and not result.reranked:
                    raise EvaluationError(
                        f"the reranker did not run: {result.rerank_note or 'unknown reason'}"
                    )
                values.append(ndcg)
    finally:
        service.close()
    baseline, score = mean(plain), mean(reranked)
    enabled = score >= baseline + min_gain
    if enabled:
        reason = f"{METRIC} {score:.4f} beats hybrid {baseline:.4f} by at least {min_gain}"
    else:
        reason = (
            f"{METRIC} {score:.4f} does not beat hybrid {baseline:.4f} by {min_gain} "
            f"on {len(judged)} validation queries"
        )
    decision = GateDecision(
        model=reranker.name,
        enabled=enabled,
        reason=reason,
        metric=METRIC,
        baseline=baseline,
        reranked=score,
        min_gain=min_gain,
        judgements=judgements,
        decided_at=datetime.now(UTC),
    )
    if save:
        save_gate(IndexLayout(settings, index).rerankers_dir, decision)
    log_event(
        logger,
        logging.INFO,
        "reranker.gate",
        index=index,
        model=reranker.name,
        enabled=enabled,
        baseline=round(baseline, 4),
        reranked=round(score, 4),
        queries=len(judged),
    )
    return decision
