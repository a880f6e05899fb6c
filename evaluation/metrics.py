"""Ranking metrics as pure functions over one query's ranked list and its judgements.

Conventions follow trec_eval/pytrec_eval (what BEIR reports) unless noted:

- ``qrels`` maps doc id → graded relevance; a grade ≤ 0 means "not relevant".
- A document that appears twice in a ranking counts once, at its first position.
- A query with no relevant documents scores 0.0 on every metric (callers should skip such
  queries, as BEIR does, rather than average those zeros in).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from citewell.core.errors import EvaluationError

Gain = Literal["exponential", "linear"]


def rank_run(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by descending score; ties broken by descending doc id, as trec_eval does, so our
    numbers match BEIR's for runs with tied scores."""
    ordered = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return [doc for doc, _ in ordered]


def _top_k(ranked: Sequence[str], k: int) -> list[str]:
    if k < 1:
        raise EvaluationError(f"k must be at least 1, got {k}")
    return list(dict.fromkeys(ranked))[:k]


def _relevant(qrels: Mapping[str, int]) -> set[str]:
    return {doc for doc, grade in qrels.items() if grade > 0}


def _gain(grade: int, gain: Gain) -> float:
    if grade <= 0:
        return 0.0
    return float(2**grade - 1) if gain == "exponential" else float(grade)


def dcg(grades: Iterable[int], gain: Gain = "exponential") -> float:
    """Discounted cumulative gain of grades in rank order (rank 1 is discounted by log2(2))."""
    return sum(_gain(grade, gain) / math.log2(rank + 1) for rank, grade in enumerate(grades, 1))


def ndcg_at_k(
    ranked: Sequence[str], qrels: Mapping[str, int], k: int, gain: Gain = "exponential"
) -> float:
    """nDCG@k with graded relevance. ``gain="exponential"`` uses 2^rel - 1 (Burges et al.);
    ``"linear"`` uses rel itself (trec_eval's ``ndcg_cut``). Both agree on binary qrels."""
    top = _top_k(ranked, k)
    ideal = sorted((grade for grade in qrels.values() if grade > 0), reverse=True)[:k]
    ideal_dcg = dcg(ideal, gain)
    if ideal_dcg == 0.0:
        return 0.0
    return dcg((qrels.get(doc, 0) for doc in top), gain) / ideal_dcg


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Fraction of the relevant documents found in the top k."""
    relevant = _relevant(qrels)
    top = _top_k(ranked, k)
    if not relevant:
        return 0.0
    return len(relevant.intersection(top)) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top k (0.0 if none)."""
    relevant = _relevant(qrels)
    for position, doc in enumerate(_top_k(ranked, k), start=1):
        if doc in relevant:
            return 1.0 / position
    return 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default method)."""
    if not values:
        raise EvaluationError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise EvaluationError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for no values (a mode that evaluated no query)."""
    return sum(values) / len(values) if values else 0.0
