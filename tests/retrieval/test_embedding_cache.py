from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from citewell.retrieval.embedding import SentenceTransformerEmbedder
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
from citewell.retrieval.protocols import Embedder
from tests.retrieval.contracts.embedder_contract import EmbedderContract


class HashEmbedder:
    """Cheap deterministic embedder for cache plumbing: bag of hashed words, normalised.
    ``seed`` changes every vector, like a different backend would; ``calls`` counts texts."""

    def __init__(self, seed: str = "a") -> None:
        self.seed = seed
        self.calls = 0

    @property
    def cache_key(self) -> str:
        return f"hash:{self.seed}"

    @property
    def dimension(self) -> int:
        return 64

    def warm_up(self) -> None:
        return None

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = hashlib.sha256(f"{self.seed}:{word.strip('.,?')}".encode()).digest()
                out[i, h[0] % 64] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


class TestCachingEmbedderContract(EmbedderContract):
    @pytest.fixture
    def embedder(self, tmp_path: Path) -> Embedder:
        return CachingEmbedder(HashEmbedder(), EmbeddingCache(tmp_path / "cache.sqlite"))


def test_second_pass_computes_nothing(tmp_path):
    inner = HashEmbedder()
    caching = CachingEmbedder(inner, EmbeddingCache(tmp_path / "c.sqlite"))
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    first = caching.embed_documents(texts)
    assert (caching.computed, caching.cached, inner.calls) == (3, 1, 3)
    caching.reset_counts()
    second = caching.embed_documents(texts)
    assert (caching.computed, caching.cached, inner.calls) == (0, 4, 3)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, inner.embed_documents(texts))


def test_cache_persists_across_processes_opening_the_file(tmp_path):
    path = tmp_path / "c.sqlite"
    CachingEmbedder(HashEmbedder(), EmbeddingCache(path)).embed_documents(["one", "two"])
    reopened = CachingEmbedder(HashEmbedder(), EmbeddingCache(path))
    reopened.embed_documents(["two", "one"])
    assert reopened.computed == 0 and reopened.cached == 2


def test_other_backend_never_served(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    a, b = HashEmbedder("torch"), HashEmbedder("onnx-int8")
    CachingEmbedder(a, cache).embed_documents(["same text"])
    other = CachingEmbedder(b, cache)
    vector = other.embed_documents(["same text"])
    assert other.computed == 1 and other.cached == 0
    np.testing.assert_array_equal(vector, b.embed_documents(["same text"]))
    assert cache.count("hash:torch") == 1 and cache.count("hash:onnx-int8") == 1


def test_query_cache_is_bounded_and_keyed_by_exact_text(tmp_path):
    inner = HashEmbedder()
    caching = CachingEmbedder(inner, EmbeddingCache(tmp_path / "c.sqlite"), query_cache_size=2)
    q = caching.embed_query("heart attack")
    q[:] = 0  # callers mutating a returned vector must not poison the cache
    assert inner.calls == 1
    assert np.linalg.norm(caching.embed_query("heart attack")) > 0.99
    assert inner.calls == 1
    caching.embed_query("Heart attack")  # different text, different entry
    caching.embed_query("third")  # evicts the least recently used ("heart attack")
    assert inner.calls == 3
    caching.embed_query("heart attack")
    assert inner.calls == 4


@pytest.mark.slow
def test_switching_real_backends_recomputes(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    texts = ["Aspirin reduces the risk of heart attack.", "Proteins fold."]
    torch_side = CachingEmbedder(SentenceTransformerEmbedder(backend="torch", threads=2), cache)
    reference = torch_side.embed_documents(texts)
    int8_inner = SentenceTransformerEmbedder(
        backend="onnx-int8", threads=2, export_dir=tmp_path / "models"
    )
    int8_side = CachingEmbedder(int8_inner, cache)
    vectors = int8_side.embed_documents(texts)
    assert int8_side.computed == 2 and int8_side.cached == 0
    assert not np.array_equal(vectors, reference)  # int8 vectors differ, so were not reused
    np.testing.assert_array_equal(vectors, int8_inner.embed_documents(texts))
