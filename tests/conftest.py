"""Shared fixtures: settings in a temporary data dir and one embedder per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach a model hub; models load from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("citewell-cache")


@pytest.fixture(scope="session")
def embedder(session_cache_dir: Path) -> Iterator[Any]:
    """The real bundled MiniLM embedder behind an embedding cache, loaded once per session."""
    from citewell.retrieval.embedding import SentenceTransformerEmbedder
    from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache

    inner = SentenceTransformerEmbedder(threads=2, export_dir=session_cache_dir / "models")
    yield CachingEmbedder(inner, EmbeddingCache(session_cache_dir / "embeddings.sqlite"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    from citewell.core.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data"}
        values.update(overrides)
        return Settings(**values)

    return make
