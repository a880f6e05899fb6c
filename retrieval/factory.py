"""Builds the configured models from Settings. Constructors are cheap; models load on first use."""

from __future__ import annotations

import os
from pathlib import Path

from citewell.core.settings import Settings
from citewell.retrieval.embedding import SentenceTransformerEmbedder
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
from citewell.retrieval.protocols import Reranker

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


def build_index_reranker(settings: Settings, rerankers_dir: Path) -> tuple[Reranker | None, str]:
    """The one place a reranker is chosen for an index: resolved from the settings, then gated."""
    return gate_reranker(*resolve_index_reranker(settings, rerankers_dir), rerankers_dir)
