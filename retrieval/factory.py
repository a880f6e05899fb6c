"""Builds the configured models from Settings. Constructors are cheap; models load on first use."""

from __future__ import annotations

import os
from pathlib import Path

from citewell.core.settings import Settings
from citewell.retrieval.embedding import SentenceTransformerEmbedder
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache

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
