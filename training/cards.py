"""What every model card records about a training run, whichever model was trained."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self

from citewell.core.models import Frozen
from citewell.training.examples import TrainingData


class ValidationPoint(Frozen):
    epoch: float
    ndcg_at_10: float


class TrainingCard(Frozen):
    """The fields both model cards (card.json, MODEL_CARD.md) share."""

    index: str  # the index whose corpus and retrievers produced the training data
    dataset: str
    base_model: str
    data: dict[str, int]  # training examples per source
    train_queries: int
    validation_queries: int
    hybrid_ndcg_at_10: float  # validation: the hybrid candidates in their served order
    best_ndcg_at_10: float  # validation: rescored by the best checkpoint
    history: tuple[ValidationPoint, ...]
    steps: int
    train_seconds: float
    trained_at: datetime
    git_commit: str | None

    @classmethod
    def from_run(
        cls,
        *,
        index: str,
        dataset: str,
        base_model: str,
        data: TrainingData,
        history: Sequence[ValidationPoint],
        before: float,
        steps: int,
        seconds: float,
        trained_at: datetime,
        git_commit: str | None,
        **fields: Any,
    ) -> Self:
        """The card of a run on ``data`` whose model scored ``before`` on validation before
        training (the best score when no epoch was validated); ``fields``: the card's own."""
        shared = {
            "index": index,
            "dataset": dataset,
            "base_model": base_model,
            "data": data.counts,
            "train_queries": data.train_queries,
            "validation_queries": data.validation_queries,
            "best_ndcg_at_10": max((h.ndcg_at_10 for h in history), default=before),
            "history": tuple(history),
            "steps": steps,
            "train_seconds": round(seconds, 1),
            "trained_at": trained_at,
            "git_commit": git_commit,
        }
        return cls.model_validate(shared | fields)
