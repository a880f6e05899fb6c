"""Rank fusion of the dense and BM25 legs (plus an optional document-level BM25 leg and, for
requests that prefer recent documents, a recency leg), and the fusion recorded per index by
tuning."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from citewell.core.errors import CitewellError, ConfigurationError
from citewell.core.logging import log_event
from citewell.core.models import Frozen, FusionMethod
from citewell.core.settings import Settings
from citewell.retrieval.durable import write_atomic

logger = logging.getLogger(__name__)


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


def document_leg(
    candidates: Sequence[str],
    documents: Sequence[tuple[str, float]],
    document_of: Mapping[str, str],
) -> list[tuple[str, int, float]]:
    """Per candidate chunk whose document is in ``documents`` (best first): (chunk id, the
    document's rank from 1, the document's min-max normalised score)."""
    if not documents:
        return []
    values = [score for _, score in documents]
    low, high = min(values), max(values)
    span = high - low
    position = {
        doc_id: (rank, (score - low) / span if span > 0 else 1.0)
        for rank, (doc_id, score) in enumerate(documents, start=1)
    }
    leg: list[tuple[str, int, float]] = []
    for chunk_id in candidates:
        found = position.get(document_of.get(chunk_id, ""))
        if found is not None:
            leg.append((chunk_id, found[0], found[1]))
    return leg


def recency_leg(
    candidates: Sequence[str],
    document_of: Mapping[str, str],
    document_date: Mapping[str, datetime],
) -> list[tuple[str, int, float]]:
    """Per candidate chunk whose document states a date: (chunk id, the document's rank among
    the candidates' dated documents, newest first from 1, equal dates sharing a rank; the
    document's min-max normalised date, newest 1.0). Undated documents get no entry: no date is
    no evidence of age, so they are neither lifted nor pushed down against each other.

    Ranked among the candidates only, so the leg re-orders what the chunk legs retrieved under
    the caller's scope and can never bring in anything else."""
    dates = {
        doc_id: document_date[doc_id]
        for doc_id in (document_of.get(cid) for cid in candidates)
        if doc_id is not None and doc_id in document_date
    }
    if not dates:
        return []
    newest_first = sorted(set(dates.values()), reverse=True)
    rank = {value: position for position, value in enumerate(newest_first, start=1)}
    low, high = newest_first[-1].timestamp(), newest_first[0].timestamp()
    span = high - low
    leg: list[tuple[str, int, float]] = []
    for chunk_id in candidates:
        value = dates.get(document_of.get(chunk_id, ""))
        if value is not None:
            normalised = (value.timestamp() - low) / span if span > 0 else 1.0
            leg.append((chunk_id, rank[value], normalised))
    return leg


# --- the per-index fusion choice --------------------------------------------------------------
# `citewell eval tune-fusion` compares RRF with weighted fusion over a grid of dense weights on
# an index's validation judgements and records the winner here; serving reads it. Where no
# judgements exist, the settings' fusion applies.

FUSION_FILE = "fusion.json"


class FusionChoice(Frozen):
    method: FusionMethod
    rrf_k: int = 60
    dense_weight: float = 0.5
    # Share of the lexical evidence taken from the document-level BM25 leg
    # (``BM25Index.document_search``) instead of the chunk's own BM25: each candidate chunk
    # scores ``(1 - share) * chunk + share * its document`` on the lexical side (RRF: per-rank
    # terms; weighted: normalised scores). A share, not an extra weight, so the lexical side
    # keeps its weight: where a document is one chunk both terms agree and nothing changes.
    # It only re-orders candidates the chunk legs found.
    document_share: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _from_document_weight(cls, data: Any) -> Any:
        """Records written before ``document_share`` carried an extra ``document_weight`` added
        on top of both legs. Weighted fusion converts exactly (the same ranking, rescaled);
        RRF, whose lexical side cannot grow, keeps the same document-to-lexical proportion."""
        if not isinstance(data, dict) or "document_weight" not in data:
            return data
        data = dict(data)
        extra = float(data.pop("document_weight") or 0.0)
        if extra > 0 and "document_share" not in data:
            if data.get("method") == FusionMethod.WEIGHTED.value:
                dense = float(data.get("dense_weight", 0.5))
                data["dense_weight"] = dense / (1.0 + extra)
                data["document_share"] = extra / (1.0 - dense + extra)
            else:
                data["document_share"] = extra / (1.0 + extra)
        return data

    def describe(self) -> str:
        base = (
            f"rrf k={self.rrf_k}"
            if self.method == FusionMethod.RRF
            else f"weighted dense={self.dense_weight:g}"
        )
        return f"{base} doc={self.document_share:g}" if self.document_share else base

    def fuse(
        self,
        dense: Sequence[tuple[str, float]],
        lexical: Sequence[tuple[str, float]],
        documents: Sequence[tuple[str, float]] = (),
        document_of: Mapping[str, str] | None = None,
    ) -> dict[str, float]:
        """Fused chunk scores. ``documents`` are (doc id, score) best first; ``document_of``
        maps candidate chunk ids to their documents (both unused while the share is 0)."""
        share = self.document_share if documents and document_of else 0.0
        if self.method == FusionMethod.RRF:
            weights = (1.0, 1.0)
            dense_part = reciprocal_rank_fusion([[item for item, _ in dense]], k=self.rrf_k)
            lexical_part = reciprocal_rank_fusion([[item for item, _ in lexical]], k=self.rrf_k)
        else:
            weights = (self.dense_weight, 1.0 - self.dense_weight)
            dense_part = weighted_fusion(dense, [], dense_weight=1.0)
            lexical_part = weighted_fusion([], lexical, dense_weight=0.0)
        scores = {item: weights[0] * value for item, value in dense_part.items()}
        for item, value in lexical_part.items():
            scores[item] = scores.get(item, 0.0) + weights[1] * (1.0 - share) * value
        if share and document_of:
            for chunk_id, rank, normalised in document_leg(list(scores), documents, document_of):
                value = 1.0 / (self.rrf_k + rank) if self.method == FusionMethod.RRF else normalised
                scores[chunk_id] += weights[1] * share * value
        return scores

    def single(self, leg: Sequence[tuple[str, float]]) -> dict[str, float]:
        """One ranked leg on this fusion's scale (RRF: 1 / (k + rank); weighted: min-max
        normalised), so another leg can be added to it as in :meth:`fuse`."""
        if self.method == FusionMethod.RRF:
            return reciprocal_rank_fusion([[item for item, _ in leg]], k=self.rrf_k)
        return weighted_fusion(leg, [], dense_weight=1.0)

    def add_recency(
        self,
        scores: Mapping[str, float],
        document_of: Mapping[str, str],
        document_date: Mapping[str, datetime],
        weight: float,
    ) -> dict[str, float]:
        """``scores`` plus the recency leg (:func:`recency_leg`) over their keys, added like the
        document leg: RRF weight / (k + rank), weighted fusion weight * normalised date."""
        boosted = dict(scores)
        if weight <= 0:
            return boosted
        for chunk_id, rank, normalised in recency_leg(list(scores), document_of, document_date):
            boosted[chunk_id] += weight * (
                1.0 / (self.rrf_k + rank) if self.method == FusionMethod.RRF else normalised
            )
        return boosted


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
        method=settings.fusion,
        rrf_k=settings.rrf_k,
        dense_weight=settings.dense_weight,
        document_share=settings.fusion_document_share,
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


class FusionInForce:
    """Which fusion an index's searches use: an explicit override, else the index's tuned record
    (re-read when the file changes, so `citewell eval tune-fusion` applies without a restart),
    else the settings. A broken record is logged and ignored: fusion is a quality choice, and
    serving with the configured fusion beats failing every search."""

    def __init__(self, settings: Settings, index_root: Path, override: FusionChoice | None) -> None:
        self._settings = settings
        self._record = index_root / FUSION_FILE
        self._index = index_root.name
        self._override = override
        self._choice = settings_fusion(settings)
        self._stamp: int | None = None  # the record's mtime when it was last read

    def current(self) -> FusionChoice:
        if self._override is not None:
            return self._override
        if not self._settings.use_tuned_fusion:
            return self._choice
        try:
            stamp: int | None = self._record.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._choice, self._stamp = self._read_record(), stamp
        return self._choice

    def _read_record(self) -> FusionChoice:
        try:
            tuned = load_tuned_fusion(self._record.parent)
        except CitewellError as exc:
            fields = {"index": self._index, "error": str(exc)}
            log_event(logger, logging.ERROR, "fusion.record_invalid", **fields)
            tuned = None
        return tuned.choice if tuned is not None else settings_fusion(self._settings)


def save_tuned_fusion(index_root: Path, tuned: TunedFusion) -> None:
    write_atomic(index_root / FUSION_FILE, tuned.model_dump_json(indent=2).encode("utf-8"))


def describe_fusion(settings: Settings, index_root: Path) -> str:
    """What serving applies to this index, for reports."""
    try:
        tuned = load_tuned_fusion(index_root) if settings.use_tuned_fusion else None
    except ConfigurationError as exc:
        return f"{settings_fusion(settings).describe()} ({exc}; serving ignores it)"
    if tuned is None:
        return settings_fusion(settings).describe()
    return f"{tuned.choice.describe()} (tuned on {tuned.judgements})"
