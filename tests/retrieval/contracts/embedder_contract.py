"""Contract every Embedder must meet. Subclass and provide an ``embedder`` fixture."""

from __future__ import annotations

import numpy as np
import pytest

from citewell.retrieval.protocols import Embedder

TEXTS = [
    "Aspirin reduces the risk of heart attack.",
    "The mitochondria is the powerhouse of the cell.",
    "Quarterly revenue grew by twelve percent.",
    "A much longer passage about proteins, which fold into complex three-dimensional shapes "
    "that determine their function in the cell and in disease.",
]


class EmbedderContract:
    # Batched forwards vs batched backwards: the same batch, so nearly the same arithmetic.
    order_atol = 1e-5

    @pytest.fixture
    def embedder(self) -> Embedder:
        raise NotImplementedError

    @pytest.fixture
    def single_min_cosine(self) -> float:
        """How close a text embedded alone must be to the same text embedded in a batch; dynamic
        int8 quantises activations per batch, so its subclass loosens this (padding and
        neighbours change the activation scale)."""
        return 0.9999

    def test_is_embedder(self, embedder: Embedder) -> None:
        assert isinstance(embedder, Embedder)
        assert embedder.cache_key

    def test_shape_dtype_and_norm(self, embedder: Embedder) -> None:
        vectors = embedder.embed_documents(TEXTS)
        assert vectors.shape == (len(TEXTS), embedder.dimension)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

    def test_order_preserved(self, embedder: Embedder, single_min_cosine: float) -> None:
        forward = embedder.embed_documents(TEXTS)
        backward = embedder.embed_documents(TEXTS[::-1])
        np.testing.assert_allclose(forward, backward[::-1], atol=self.order_atol)
        single = np.stack([embedder.embed_documents([t])[0] for t in TEXTS])
        assert np.min(np.sum(single * forward, axis=1)) > single_min_cosine

    def test_empty_input(self, embedder: Embedder) -> None:
        assert embedder.embed_documents([]).shape == (0, embedder.dimension)

    def test_deterministic(self, embedder: Embedder) -> None:
        np.testing.assert_array_equal(
            embedder.embed_documents(TEXTS), embedder.embed_documents(TEXTS)
        )

    def test_query_and_documents_share_a_space(self, embedder: Embedder) -> None:
        query = embedder.embed_query("what is the powerhouse of the cell")
        assert query.shape == (embedder.dimension,)
        assert query.dtype == np.float32
        assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-4
        scores = embedder.embed_documents(TEXTS) @ query
        assert int(np.argmax(scores)) == 1
