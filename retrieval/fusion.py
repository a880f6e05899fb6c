"""Rank fusion of the dense and BM25 legs, and the fusion recorded per index by tuning."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from core.errors import ConfigurationError
from core.models import Frozen, FusionMethod
from core.settings import Settings


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


# --- the per-index fusion choice --------------------------------------------------------------
# `citewell eval tune-fusion` compares RRF with weighted fusion over a grid of dense weights on
# an index's validation judgements and records the winner here; serving reads it. Where no
# judgements exist, the settings' fusion applies.

FUSION_FILE = "fusion.json"


class FusionChoice(Frozen):
    method: FusionMethod
    rrf_k: int = 60
    dense_weight: float = 0.5

    def describe(self) -> str:
        if self.method == FusionMethod.RRF:
            return f"rrf k={self.rrf_k}"
        return f"weighted dense={self.dense_weight:g}"

    def fuse(
        self, dense: Sequence[tuple[str, float]], lexical: Sequence[tuple[str, float]]
    ) -> dict[str, float]:
        if self.method == FusionMethod.RRF:
            return reciprocal_rank_fusion(
                [[item for item, _ in dense], [item for item, _ in lexical]], k=self.rrf_k
            )
        return weighted_fusion(dense, lexical, self.dense_weight)


class TunedFusion(Frozen):
    """A recorded tuning decision: the chosen fusion and what every candidate scored."""

    choice: FusionChoice
    reason: str
    metric: str  # e.g. "ndcg@10"
    baseline: FusionChoice  # what serving used before (the settings' fusion)
    baseline_score: float
    chosen_score: float
    min_gain: float
    candidates: dict[str, float]  # FusionChoice.describe() -> score
    judgements: str
    decided_at: datetime


def settings_fusion(settings: Settings) -> FusionChoice:
    return FusionChoice(
        method=settings.fusion, rrf_k=settings.rrf_k, dense_weight=settings.dense_weight
    )


def load_tuned_fusion(index_root: Path) -> TunedFusion | None:
    """The recorded choice, or None. A corrupt file is an error, not a silent fallback: the
    operator asked for tuned fusion and must learn that it is not in force."""
    path = index_root / FUSION_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    try:
        return TunedFusion.model_validate_json(raw)
    except ValueError as exc:
        raise ConfigurationError(f"invalid fusion record {path}: {exc}") from exc


def save_tuned_fusion(index_root: Path, tuned: TunedFusion) -> None:
    index_root.mkdir(parents=True, exist_ok=True)
    tmp = index_root / f".{FUSION_FILE}.{os.getpid()}"
    tmp.write_text(tuned.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, index_root / FUSION_FILE)


def describe_fusion(settings: Settings, index_root: Path) -> str:
    """What serving applies to this index, for reports."""
    try:
        tuned = load_tuned_fusion(index_root) if settings.use_tuned_fusion else None
    except ConfigurationError as exc:
        return f"{settings_fusion(settings).describe()} ({exc}; serving ignores it)"
    if tuned is None:
        return settings_fusion(settings).describe()
    return f"{tuned.choice.describe()} (tuned on {tuned.judgements})"
