"""Rank fusion of the dense and BM25 legs."""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60) -> dict[str, float]:
    """RRF (Cormack et al., 2009): score(d) = sum over legs of 1 / (k + rank), rank from 1."""
    if k < 1:
        raise ValueError("RRF k must be at least 1")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


def weighted_fusion(
    dense: Sequence[tuple[str, float]],
    lexical: Sequence[tuple[str, float]],
    dense_weight: float = 0.5,
) -> dict[str, float]:
    """Convex combination of min-max normalised leg scores; a missing leg contributes 0."""
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError("dense_weight must be within [0, 1]")
    scores: dict[str, float] = {}
    for weight, leg in ((dense_weight, dense), (1.0 - dense_weight, lexical)):
        if not leg:
            continue
        values = [score for _, score in leg]
        low, high = min(values), max(values)
        span = high - low
        for item, score in leg:
            normalised = (score - low) / span if span > 0 else 1.0
            scores[item] = scores.get(item, 0.0) + weight * normalised
    return scores
