"""Builds the configured models from Settings. Constructors are cheap; models load on first use."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from citewell.core.logging import log_event
from citewell.core.settings import Settings
from citewell.retrieval.embedding import SentenceTransformerEmbedder
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
from citewell.retrieval.protocols import Reranker

if TYPE_CHECKING:
    from citewell.retrieval.index import IndexLayout

logger = logging.getLogger(__name__)

BUNDLED_EMBEDDING_MODEL = "bundled:all-MiniLM-L6-v2"


def embedding_model_id(settings: Settings) -> str:
    """The model's identity, independent of the inference backend (vectors of one model from
    different backends live in one space; a different model needs a rebuild)."""
    return settings.embedding_model or BUNDLED_EMBEDDING_MODEL


def model_export_dir(settings: Settings) -> Path:
    return settings.model_cache_dir or settings.cache_dir / "models"


def model_threads(settings: Settings) -> int:
    return settings.model_threads or max(1, len(os.sched_getaffinity(0)))


def build_model_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The configured embedding model alone, without the embedding cache."""
    return SentenceTransformerEmbedder(
        model=settings.embedding_model,
        backend=settings.embedding_backend,
        max_seq_length=settings.embedding_max_seq_length,
        batch_size=settings.embedding_batch_size,
        threads=model_threads(settings),
        export_dir=model_export_dir(settings),
    )


def build_embedder(settings: Settings) -> CachingEmbedder:
    """The configured embedder behind the persistent embedding cache."""
    inner = build_model_embedder(settings)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return CachingEmbedder(inner, EmbeddingCache(settings.cache_dir / "embeddings.sqlite"))


def resolve_index_reranker(settings: Settings, rerankers_dir: Path) -> tuple[Reranker | None, str]:
    """The reranker the settings name for an index, before its gate: the configured model, else
    the one trained for the index (``rerankers_dir/current``), built with the reranker's own
    backend, max length and threads. With the reason, shown to callers when there is none."""
    from citewell.retrieval.rerank import resolve_reranker

    return resolve_reranker(
        settings.reranker_model,
        rerankers_dir / "current",
        backend=settings.reranker_backend,
        max_length=settings.reranker_max_length,
        threads=model_threads(settings),
        export_dir=model_export_dir(settings),
    )


def gate_reranker(
    reranker: Reranker | None, note: str, rerankers_dir: Path
) -> tuple[Reranker | None, str]:
    """Keep ``reranker`` only if its evaluation gate (``rerankers_dir/gate.json``) did not turn
    it off: a reranker that failed its gate is never used, by serving or by evaluation."""
    from citewell.retrieval.reranker_decision import load_gate

    if reranker is None:
        return None, note
    gate = load_gate(rerankers_dir)
    if gate is not None and gate.model == reranker.name and not gate.enabled:
        return None, f"{GATED_OFF_PREFIX}: {gate.reason}"
    return reranker, note


GATED_OFF_PREFIX = "reranker disabled by its evaluation gate"


@dataclass(frozen=True)
class RerankerChoice:
    """The reranker chosen for an index (None: results say ``reranked: false`` and ``note``
    says why), with what the choice looked at, so the next choice can keep the loaded model."""

    reranker: Reranker | None
    note: str
    # The configured model and the trained folder's identity, and what they resolved to
    # before the gate.
    source: tuple[str | None, tuple[int, int] | None] | None = None  # None: nothing resolved
    resolved: Reranker | None = None
    resolved_note: str = ""


def choose_index_reranker(
    settings: Settings, layout: IndexLayout, previous: RerankerChoice | None = None
) -> RerankerChoice:
    """The one place a reranker is chosen for an index: the configured model, else the one
    trained for it (``rerankers/current``), then its gate. ``previous`` (the choice made at the
    last version switch) keeps its loaded model when the same one would be resolved: reloading
    it would stall the first reranked search after every refresh; publishing a trained model
    renames a new folder into place, so its identity changes."""
    source = (settings.reranker_model, _folder_identity(layout.rerankers_dir / "current"))
    if previous is not None and previous.source == source:
        resolved, resolved_note = previous.resolved, previous.resolved_note
    else:
        resolved, resolved_note = resolve_index_reranker(settings, layout.rerankers_dir)
    reranker, note = gate_reranker(resolved, resolved_note, layout.rerankers_dir)
    if reranker is None:
        # Every result says so (reranked: false and why); the log warns only when a configured
        # model could not be used, else it is the normal offline default.
        configured = settings.reranker_model is not None and not note.startswith(GATED_OFF_PREFIX)
        level = logging.WARNING if configured else logging.INFO
        log_event(logger, level, "rerank.unavailable", index=layout.name, reason=note)
    return RerankerChoice(reranker, note, source, resolved, resolved_note)


def _folder_identity(folder: Path) -> tuple[int, int] | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns
